"""A RaftNode in a child process, driven over stdin/stdout with JSON lines, for cluster tests.

Run as ``python raft_child.py --data-dir D [--self ADDR [--bind REAL]] [--partners A B ...]``
(without ``--self``: a read-only replica of the partners).
The child prints ``{"event": "started", "pid": ...}``, then answers each request line
``{"id": n, "op": ..., ...}`` with ``{"re": n, ...}`` (requests run concurrently, so answers
may come out of order) and reports ``{"event": "at", "point": ...}`` when a crash point is hit.

Imported by the tests for ``RaftProc`` (the test side of that protocol) and ``FAST``.
The state machine, ``Claims``, is the scheduler's fencing rule in miniature: the first claim of a
slot wins; ``write`` commands append ids (with optional padding, to make snapshots big).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj

from dkron_lab.errors import DkronError
from dkron_lab.state.raft import RaftNode, RaftSettings
from dkron_lab.state.raft import journal as journal_module
from dkron_lab.state.raft._core import _Core
from dkron_lab.state.raft.thread import _Pending
from dkron_lab.testing import free_port
from tests.harness import Child, Network, Processes

KEY = "raft-test-cluster-key"  # the raft port never runs without one

FAST = {  # timings for loopback test clusters
    "heartbeat_period": 0.05,
    "election_timeout_min": 0.3,
    "election_timeout_max": 0.6,
    "connection_timeout": 1.0,
    "connection_retry": 0.2,
    "leader_fallback_timeout": 1.0,
}


class Claims:
    """First claim of a slot wins; ``write`` appends an id. ``local`` is never snapshotted: what
    this process itself applied, in order (evidence of entries a snapshot later overwrote)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.owners: dict[str, str] = {}
        self.ids: list[int] = []
        self.pads: list[str] = []
        self.local: list[str] = []

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        self.local.append(command_key(command))
        if "slot" in command:
            owner = self.owners.setdefault(command["slot"], command["node"])
            return {"won": owner == command["node"], "owner": owner}
        self.ids.append(command["id"])
        if command.get("pad"):
            self.pads.append(command["pad"])
        return {"count": len(self.ids)}

    def snapshot(self) -> dict[str, Any]:
        return {"owners": dict(self.owners), "ids": list(self.ids), "pads": list(self.pads)}

    def restore(self, data: dict[str, Any]) -> None:
        self.owners, self.ids, self.pads = dict(data["owners"]), data["ids"], data["pads"]

    def read(self) -> dict[str, Any]:
        with self.lock:
            return {"owners": dict(self.owners), "ids": list(self.ids), "local": list(self.local)}


def command_key(command: dict[str, Any]) -> str:
    brief = {k: v for k, v in command.items() if k != "pad"}
    return json.dumps(brief, sort_keys=True)


# -- the test side --------------------------------------------------------------------------------


class RaftProc:
    """The test's handle on one child node: requests, events, signals (through ``Child``)."""

    def __init__(self, procs: Processes, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.child: Child = procs.start([sys.executable, __file__, *args], stderr=log)
        self.log = log
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        try:
            started = self._next(30)
        except (TimeoutError, EOFError) as exc:
            raise AssertionError(f"node {name} did not start: {exc}\n{self.log_tail()}") from None
        assert started.get("event") == "started", started

    @property
    def pid(self) -> int:
        return self.child.pid

    def send(self, op: str, **fields: Any) -> int:
        request_id = next(self._ids)
        self.child.send(json.dumps({"id": request_id, "op": op, **fields}))
        return request_id

    def wait(self, request_id: int, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self._answers:
            self._next(max(deadline - time.monotonic(), 0.001))
        return self._answers.pop(request_id)

    def answered(self, request_id: int) -> bool:
        """Whether the answer to ``request_id`` has arrived (without waiting)."""
        with contextlib.suppress(TimeoutError):
            while request_id not in self._answers:
                self._next(0)
        return request_id in self._answers

    def call(self, op: str, *, within: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send a request and wait ``within`` seconds for its answer."""
        return self.wait(self.send(op, **fields), within)

    def wait_event(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        try:
            while not any(e["event"] == event for e in self.events):
                self._next(max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            message = f"node {self.name}: no {event!r} event in {timeout:g} s ({self.events})"
            raise AssertionError(f"{message}\n{self.log_tail()}") from None
        return next(e for e in self.events if e["event"] == event)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the node's stderr, for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def status(self) -> dict[str, Any]:
        return self.call("status")["result"]

    def state(self) -> dict[str, Any]:
        return self.call("state")["result"]

    def _next(self, timeout: float) -> dict[str, Any]:
        message = json.loads(self.child.readline(timeout))
        if "re" in message:
            self._answers[message["re"]] = message
        else:
            self.events.append(message)
        return message


class RaftCluster:
    """Child nodes on loopback, optionally each behind a ``Network`` proxy (for partitions).

    ``names`` get addresses up front, so a node can be added later; ``start`` runs one with
    the given partners (default: the first ``voters`` names).
    """

    def __init__(
        self,
        procs: Processes,
        root: Path,
        names: list[str],
        *,
        voters: int = 3,
        network: Network | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.procs, self.root, self.network = procs, root, network
        self.settings = settings or {}
        self.real = {name: f"127.0.0.1:{free_port()}" for name in names}
        self.address = {
            name: network.add(name, real) if network is not None else real
            for name, real in self.real.items()
        }
        self.initial = names[:voters]
        self.nodes: dict[str, RaftProc] = {}

    def start(
        self,
        name: str,
        *,
        partners: list[str] | None = None,
        extra: tuple[str, ...] = (),
        replica: bool = False,
    ) -> RaftProc:
        """Start ``name`` as a voter, or (``replica``) as a read-only replica of the voters."""
        others = [self.address[n] for n in (partners or self.initial) if n != name]
        me = () if replica else ("--self", self.address[name], "--bind", self.real[name])
        args = [
            *("--data-dir", str(self.root / name), *me),
            *("--settings", json.dumps(self.settings)),
            *("--partners", *others),
            *extra,
        ]
        node = RaftProc(self.procs, name, args, self.root / f"{name}.log")
        self.nodes[name] = node
        if self.network is not None:
            self.network.attach(name, node.pid)
        return node

    def kill(self, name: str) -> None:
        self.nodes.pop(name).child.kill()

    def leader(self, among: list[str] | None = None, timeout: float = 10.0) -> RaftProc:
        """Wait until one of ``among`` (default: every live node) leads, is ready, and every
        other one of them follows it; return it."""
        names = among or list(self.nodes)
        deadline = time.monotonic() + timeout
        while True:
            statuses = {name: self.nodes[name].status() for name in names}
            leaders = [n for n, s in statuses.items() if s["state"] == "leader" and s["ready"]]
            agreed = {s["leader"] for s in statuses.values()}
            if len(leaders) == 1 and agreed == {self.address[leaders[0]]}:
                return self.nodes[leaders[0]]
            assert time.monotonic() < deadline, f"no single leader among {names}: {statuses}"
            time.sleep(0.02)

    def converged(self, names: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the nodes hold the same owners and ids; return that state."""
        names = names or list(self.nodes)
        deadline = time.monotonic() + timeout
        while True:
            states = [self.nodes[name].state() for name in names]
            views = {json.dumps([s["owners"], s["ids"]], sort_keys=True) for s in states}
            if len(views) == 1:
                return states[0]
            assert time.monotonic() < deadline, f"states did not converge: {states}"
            time.sleep(0.02)

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.root.glob("*.log")))


# -- the child program ----------------------------------------------------------------------------

_say_lock = threading.Lock()
CALLBACKS: dict[str, int] = {}  # command key -> pysyncobj's error code, once it called back


def _say(message: dict[str, Any]) -> None:
    with _say_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def _record_callbacks() -> None:
    """Remember which commands pysyncobj ever called back (B6: some never are)."""
    original = RaftNode._on_result

    def on_result(self: RaftNode, pending: _Pending, result: Any, error: int) -> None:
        CALLBACKS[command_key(json.loads(pending.payload[1:]))] = error
        original(self, pending, result, error)

    RaftNode._on_result = on_result  # type: ignore[method-assign]


def _unpatch_b5() -> None:
    """pysyncobj's own handling of snapshot-mode AppendEntries (the B5 bug)."""

    def raw(self: _Core, node: Any, message: dict[str, Any]) -> None:
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    _Core._snapshot_mode_append = raw  # type: ignore[method-assign]


def _unpatch_b1() -> None:
    """pysyncobj's handling of AppendEntries a follower holds already: it truncates them."""

    def raw(self: _Core, node: Any, message: dict[str, Any]) -> None:
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    _Core._regular_append = raw  # type: ignore[method-assign]


def _install_crash_hook(spec: str | None) -> None:
    """``point@n``: the n-th time the journal reaches ``point``, report it and hang there."""
    if not spec:
        return
    point, nth = spec.rsplit("@", 1)
    seen = itertools.count(1)

    def hook(at: str) -> None:
        if at == point and next(seen) == int(nth):
            _say({"event": "at", "point": at})
            time.sleep(600)

    journal_module._crash_point = hook


_READS: dict[str, Callable[[RaftNode, Claims], Any]] = {
    "status": lambda node, _: node.status(),
    "peers": lambda node, _: node.peers(),
    "state": lambda _, machine: machine.read(),
}


async def _answer(node: RaftNode, machine: Claims, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    try:
        if op in _READS:
            return {"result": _READS[op](node, machine)}
        if op == "submit":
            return await _submit(node, request)
        if op == "writes":
            return {"result": await _writes(node, request)}
        if op == "add_peer":
            await node.add_peer(request["address"], timeout=request.get("timeout", 5.0))
            return {"result": None}
        if op == "remove_peer":
            await node.remove_peer(request["address"], timeout=request.get("timeout", 5.0))
            return {"result": None}
        if op == "drop_leader_connection":
            return {"result": await node._on_raft_thread(_drop_leader_connection, 5.0)}
        if op == "transfer":
            to, timeout = request.get("to"), request.get("timeout", 3.0)
            return {"result": await node.transfer_leadership(to, timeout=timeout)}
    except DkronError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "leader": _hint(exc)}
    return {"error": "BadRequest", "message": f"unknown op {op}"}


def _drop_leader_connection(core: _Core, settle: Any) -> None:
    """Close this node's connection to its leader, as a reset link would (the leader lives)."""
    leader = core._getLeader()
    connection = core._SyncObj__transport._connections.get(leader)
    if connection is not None:
        connection.disconnect()
    settle(None if leader is None else str(leader.id))


def _hint(exc: DkronError) -> str | None:
    return getattr(exc, "leader", None)


async def _submit(node: RaftNode, request: dict[str, Any]) -> dict[str, Any]:
    command = request["command"]
    started = time.monotonic()
    try:
        result = await node.submit(
            command, fenced=request.get("fenced", False), timeout=request.get("timeout", 5.0)
        )
        answer: dict[str, Any] = {"result": result}
    except DkronError as exc:
        answer = {"error": type(exc).__name__, "message": str(exc), "leader": _hint(exc)}
    answer["seconds"] = time.monotonic() - started
    answer["callback"] = CALLBACKS.get(command_key(command))
    return answer


async def _writes(node: RaftNode, request: dict[str, Any]) -> dict[str, Any]:
    """Pipelined writes of ids ``start..start+count-1``, each with ``pad`` bytes of random
    (incompressible) text, until one fails; which were acknowledged."""
    window = asyncio.Semaphore(request.get("window", 16))
    acked: list[int] = []
    failed: list[int] = []
    size = request.get("pad", 0)

    async def one(i: int) -> None:
        pad = base64.b64encode(os.urandom(size * 3 // 4)).decode()
        try:
            await node.submit({"id": i, "pad": pad}, timeout=request.get("timeout", 2.0))
            acked.append(i)
        except DkronError:
            failed.append(i)
        finally:
            window.release()

    tasks = []
    for i in range(request["start"], request["start"] + request["count"]):
        await window.acquire()
        if failed:
            break
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return {"acked": sorted(acked), "failed": sorted(failed)}


async def _serve(args: argparse.Namespace) -> None:
    machine = Claims()
    settings = RaftSettings(
        data_dir=Path(args.data_dir),
        self_address=args.self_address,
        bind_address=args.bind,
        partners=tuple(args.partners),
        password=args.password,
        **{**FAST, **json.loads(args.settings)},
    )
    node = RaftNode(settings, machine)
    node.start()
    _say({"event": "started", "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(request: dict[str, Any]) -> None:
        _say({"re": request["id"], **await _answer(node, machine, request)})

    while line := await loop.run_in_executor(None, sys.stdin.readline):
        task = asyncio.create_task(handle(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    node.stop()


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--self", dest="self_address", help="none: a read-only replica")
    parser.add_argument("--bind")
    parser.add_argument("--partners", nargs="*", default=[])
    parser.add_argument("--password", default=KEY)
    parser.add_argument("--settings", default="{}", help="RaftSettings overrides as JSON")
    parser.add_argument("--crash-at", help="point@n: hang at the n-th crash point")
    parser.add_argument("--unpatched", choices=["b1", "b5", "prevote"], action="append", default=[])
    args = parser.parse_args()
    _record_callbacks()
    if "b1" in args.unpatched:
        _unpatch_b1()
    if "b5" in args.unpatched:
        _unpatch_b5()
    if "prevote" in args.unpatched:
        _Core.guarded_elections = False  # pysyncobj's elections: no PreVote, no stickiness
    _install_crash_hook(args.crash_at)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    _main()
