"""The Raft voters: list them, add and remove them (on the leader, wherever the request came
in), admit the servers that knock at this server's Raft port (automatic join), and wait at
start until this node has a leader, saying why it waits.

May call: ``RaftNode`` (membership changes), ``Peers.post`` (to reach the leader) and
``Roster.leader``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from dkron_lab.clock import interval_seconds
from dkron_lab.dispatch import Peers
from dkron_lab.errors import ClusterError, ConflictError, DkronError
from dkron_lab.roster import Roster
from dkron_lab.runs import http_of
from dkron_lab.services import Shared
from dkron_lab.state.raft import RaftNode

__all__ = ["Peering"]

log = logging.getLogger(__name__)


class Peering:
    def __init__(
        self,
        shared: Shared,
        *,
        raft: RaftNode,
        peers: Peers,
        roster: Roster,
        ready: Callable[[], bool],
    ) -> None:
        self._shared = shared
        self._raft = raft
        self._peers = peers
        self._roster = roster
        self._ready = ready
        self._seconds = interval_seconds(shared.clock)  # the rate limits below
        self._admitted: dict[str, float] = {}  # server -> when its automatic join was tried
        self._removed: dict[str, float] = {}  # server -> when it was removed here

    async def wait_for_cluster(self) -> None:
        """Wait until a leader is known and this node has caught up, saying why it waits.

        With ``--retry-join`` it waits ``--retry-max`` times ``--retry-interval`` (for ever
        when ``--retry-max`` is 0, as Dkron does); otherwise 5 minutes. The cluster links
        themselves are retried all along.
        """
        config = self._shared.config
        if not config.retry_join:
            patience: float | None = 300.0
        elif config.retry_max:
            patience = config.retry_max * config.retry_interval.total_seconds()
        else:
            patience = None
        waited = 0.0
        while True:
            try:
                await self._raft.wait_ready(timeout=10.0)
                return
            except ClusterError:
                waited += 10.0
                if patience is not None and waited >= patience:
                    raise
            servers = ", ".join(config.join + config.retry_join) or "the servers"
            if config.server:
                log.warning(
                    "no leader yet after %.0f s: waiting for a quorum of %s; a server new to "
                    "a running cluster asks to be added (its --join must name every server, "
                    "with the cluster's key), or add it by hand: dkron-lab raft add-peer "
                    "--peer-addr %s", waited, servers, config.bind_addr,
                )  # fmt: skip
            else:
                log.warning(
                    "no leader yet after %.0f s: waiting to reach a server at %s (with the "
                    "cluster's key, if it has one)", waited, servers,
                )  # fmt: skip

    def voters(self) -> list[dict[str, Any]]:
        """The Raft voters as this server sees them, each with the node name registered there."""
        nodes = self._shared.state.all_nodes()
        names = {n["raft"]: n["name"] for n in nodes if n.get("raft")}
        return [{"name": names.get(p["address"], ""), **p} for p in self._raft.peers()]

    async def add(self, address: str, *, knocked: bool = False) -> None:
        """Make the server whose cluster address is ``address`` a voter (start it first, with
        the current servers in its --join). Sent to the leader wherever it is received.
        ``knocked``: the server asked by itself (automatic join), which the leader refuses for
        a server it removed in the last minute."""
        await self._on_leader("add", address, knocked=knocked)

    async def remove(self, peer: str) -> None:
        """Take the voter ``peer`` (a node name or a host:port) out of the Raft group.

        Sent to the leader wherever it is received; stop the removed server afterwards.
        """
        known = self._shared.state.node(peer)
        address = str(known["raft"]) if known and known.get("raft") else peer
        voters = [p["address"] for p in self._raft.peers()]
        if voters == [address]:
            raise ConflictError(
                f"{peer} is the only voter of this cluster: removing it would leave no cluster "
                "to remove it from. Add another server first (dkron-lab raft add-peer), or stop "
                "this one"
            )
        await self._on_leader("remove", address)

    async def _on_leader(self, change: str, address: str, *, knocked: bool = False) -> None:
        leader = self._roster.leader()
        if self._shared.is_leader() or leader is None:
            if change == "remove":
                self._removed[address] = self._seconds()
            elif knocked and self._seconds() - self._removed.get(address, -math.inf) < 60:
                raise ConflictError(f"{address} was removed less than a minute ago: stop it")
            await (self._raft.add_peer if change == "add" else self._raft.remove_peer)(address)
            return
        http = http_of(self._shared, leader["Name"])
        body = {"peer": address, "knocked": knocked}
        await self._peers.post(http, f"/internal/v1/raft/{change}", body, target=leader["Name"])

    def knocked(self, address: str) -> None:
        """From the Raft thread: a server knocked at this server's Raft port."""
        self._shared.call_soon(self._admit, address)

    def _admit(self, address: str) -> None:
        """A server started with ``--join`` knocked at this server's raft port: have the
        leader make it a voter, as Dkron's leader adds the servers that join (at most one try
        per 10 s per address; the leader refuses one it removed in the last minute)."""
        now = self._seconds()
        if not self._ready() or now - self._admitted.get(address, -math.inf) < 10:
            return
        self._admitted[address] = now
        self._shared.spawn(self._add_knocking(address))

    async def _add_knocking(self, address: str) -> None:
        try:
            await self.add(address, knocked=True)
            log.info("server %s joined: it is now a voter", address)
        except DkronError as exc:
            log.info("server %s asked to join and was not added: %s", address, exc)
