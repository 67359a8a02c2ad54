"""Who is in the cluster, seen from this node: its own registration (and goodbye), the
heartbeats it sends every server each second, the leases of runs on nodes that stopped
answering (on the leader), and Dkron's member JSON.

The pure parts (``NodeInfo``, ``Liveness``, ``lost_runs``) are in ``membership.py``. May call:
``Shared.submit`` (registrations), ``Peers.post`` (heartbeats), the runner (what runs here),
``Runs`` (when a run was sent) and ``Outcomes`` (lost runs).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import timedelta
from typing import Any

from dkron_lab import codec
from dkron_lab._version import __version__
from dkron_lab.config import split_host_port
from dkron_lab.dispatch import Peers
from dkron_lab.errors import DkronError
from dkron_lab.lifecycle import hurried
from dkron_lab.membership import HEARTBEAT_INTERVAL, HEARTBEAT_TTL, Liveness, NodeInfo, lost_runs
from dkron_lab.outcomes import Outcomes
from dkron_lab.runner import Runner
from dkron_lab.runs import Runs
from dkron_lab.services import Shared
from dkron_lab.state.commands import Register

__all__ = ["Roster"]

log = logging.getLogger(__name__)

_STATUS_TEXT = {1: "alive", 3: "left", 4: "failed"}  # Serf's member status numbers
_INTERVAL = timedelta(seconds=HEARTBEAT_INTERVAL)


async def _pause(shared: Shared) -> None:
    """One heartbeat interval on the node's clock (a fake one in the unit tests)."""
    await shared.clock.sleep_until(shared.clock.now() + _INTERVAL, exact=False)


class Roster:
    def __init__(
        self,
        shared: Shared,
        *,
        liveness: Liveness,
        peers: Peers,
        runner: Runner,
        runs: Runs,
        outcomes: Outcomes,
        leader_address: Any,
    ) -> None:
        """``leader_address()``: the Raft address of the leader this node knows, if any."""
        self._shared = shared
        self.liveness = liveness
        self._peers = peers
        self._runner = runner
        self._runs = runs
        self._outcomes = outcomes
        self._leader_address = leader_address
        self._beating: set[str] = set()  # servers a heartbeat is on its way to

    # -- this node -----------------------------------------------------------------------------

    @property
    def tags(self) -> dict[str, str]:
        config = self._shared.config
        _, port = config.bind_host_port
        reserved = {
            "role": "dkron",
            "dc": config.datacenter,
            "region": config.region,
            "version": __version__,
            "rpc_addr": config.bind_addr,
            "port": str(port),
        }
        if config.server:
            reserved |= {"server": "true", "expect": str(config.bootstrap_expect)}
        return {**reserved, **config.tags}  # a user tag such as role=web wins

    def node_info(self) -> NodeInfo:
        config = self._shared.config
        http_host, http_port = config.http_host_port
        bind_host, _ = config.bind_host_port
        advertise = config.advertise_addr.rpartition(":")[0] or config.advertise_addr
        if http_host in ("", "0.0.0.0", "::"):
            http_host = advertise or bind_host or "127.0.0.1"
        return NodeInfo(
            name=self._shared.name,
            role="server" if config.server else "agent",
            http=f"{http_host}:{http_port}",
            raft=config.bind_addr if config.server else "",
            tags=self.tags,
            region=config.region,
        )

    async def start(self, stack: AsyncExitStack) -> None:
        """Register this node, beat every second and (on the leader) expire leases; at a
        graceful stop, say goodbye."""
        await self.register()
        self._shared.spawn(self.heartbeats())
        self._shared.spawn(self.leases())
        stack.push_async_exit(self._leave)

    async def _leave(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        if not hurried(exc_type):
            await self.say_goodbye()
        return False

    async def register(self) -> None:
        info = self.node_info().to_dict()
        if self._shared.state.node(self._shared.name) != info:
            await self._shared.submit(Register(node=info))
        self.liveness.beat(self._shared.name, [])

    async def say_goodbye(self) -> None:
        """Mark this node as left, so it shows as such and gets no runs (best effort)."""
        info = replace(self.node_info(), left=True).to_dict()
        try:
            await asyncio.wait_for(self._shared.submit(Register(node=info)), 3.0)
        except (DkronError, TimeoutError) as exc:
            log.info("could not record this node as left: %s", exc)

    # -- heartbeats and leases -----------------------------------------------------------------

    async def heartbeats(self) -> None:
        """Tell every server, each second, that this node lives and what it runs."""
        name = self._shared.name
        while True:
            busy = [codec.execution_to_json(e) for e in self._runner.busy()]
            self.liveness.beat(name, busy)
            servers = [
                (n["name"], n["http"])
                for n in self._shared.state.all_nodes()
                if n["role"] == "server" and n["name"] != name
            ]
            payload = {"node": name, "busy": busy}
            for server, http in servers:
                # Each server on its own: one that hangs must not delay the beats to the others.
                if http not in self._beating:
                    self._beating.add(http)
                    self._shared.spawn(self._beat(server, http, payload))
            await _pause(self._shared)

    async def _beat(self, name: str, http: str, payload: dict[str, Any]) -> None:
        try:
            await self._peers.post(
                http, "/internal/v1/heartbeat", payload, target=name, timeout=HEARTBEAT_TTL
            )
        except DkronError as exc:
            log.debug("heartbeat to %s failed: %s", http, exc)
        finally:
            self._beating.discard(http)

    async def leases(self) -> None:
        """On the leader: runs on nodes that stopped answering are recorded failed."""
        while True:
            await _pause(self._shared)
            if self._shared.is_leader():
                self.expire_leases(self._shared.clock.now().timestamp())

    def expire_leases(self, now: float) -> None:
        groups = self._shared.state.open_groups()
        self._runs.forget_sent(groups)
        here = {execution.group for execution in self._runner.busy()}
        name = self._shared.name
        lost = lost_runs(
            groups,
            now,
            sent=self._runs.sent_at,
            alive=lambda node: node == name or self.liveness.is_alive(node),
            running=lambda node: here if node == name else self.liveness.running_groups(node),
        )
        for run in lost:
            group = groups[run.group]
            scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
            self._outcomes.lost(group["job"], run.group, run.node, scheduled_at, run.why)

    # -- Dkron's member JSON -------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """Dkron's Member JSON for every registered node, alive or failed."""
        return [self._member(n) for n in sorted(self._nodes(), key=lambda n: n.name)]

    def count_by_status(self) -> Counter[str]:
        """How many members are alive, failed and left (by their ``statusText``)."""
        return Counter(member["statusText"] for member in self.members())

    def leader(self) -> dict[str, Any] | None:
        address = self._leader_address()
        for node in self._nodes():
            if node.raft and node.raft == address:
                return self._member(node)
        return None

    def other_servers(self) -> list[NodeInfo]:
        """The servers besides this one that have not left, the leader first (it has applied
        the most): where a history copy is asked for."""
        leader = self.leader()
        first = leader["Name"] if leader else ""
        servers = [
            n
            for n in self._nodes()
            if n.role == "server" and n.name != self._shared.name and not n.left
        ]
        return sorted(servers, key=lambda n: (n.name != first, n.name))

    def _nodes(self) -> list[NodeInfo]:
        return [NodeInfo.from_dict(n) for n in self._shared.state.all_nodes()]

    def _member(self, node: NodeInfo) -> dict[str, Any]:
        host, port = split_host_port(node.raft or node.http, default_port=8946)
        alive = node.name == self._shared.name or self.liveness.is_alive(node.name)
        status = 3 if node.left else 1 if alive else 4
        return {
            "Name": node.name,
            "Addr": host,
            "Port": port,
            "Tags": dict(node.tags),
            "Status": status,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
            # Dkron makes a new uuid per answer (react-admin needs an id); one per name is as
            # good for it and lets clients (the dashboard) tell members apart across refreshes.
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dkron-lab:member:{node.name}")),
            "statusText": _STATUS_TEXT[status],
        }
