"""RaftNode end to end: real nodes on free loopback ports, real data dirs, real kill -9.

This module is also the child program the tests spawn (``python test_raft_node.py writer|serve``),
so the child and the test share the ``Recorder`` state machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from pysyncobj.node import TCPNode

from dkron_lab.errors import ClusterError, NotLeaderError
from dkron_lab.state.raft import JOURNAL_FILE, SNAPSHOT_FILE, RaftNode, RaftSettings
from dkron_lab.state.raft import journal as journal_module
from dkron_lab.state.raft.journal import RaftJournal, write_snapshot
from dkron_lab.testing import free_port

KEY = "raft-test-cluster-key"  # the raft port never runs without one

FAST = {  # timings for loopback test clusters
    "heartbeat_period": 0.05,
    "election_timeout_min": 0.3,
    "election_timeout_max": 0.6,
    "connection_timeout": 1.0,
    "connection_retry": 0.2,
    "leader_fallback_timeout": 1.0,
}


class Recorder:
    """Test state machine: the ids of the commands it applied, in order, and a running sum."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ids: list[int] = []

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(command.get("id"), int):
            return {"error": "command needs an integer id"}
        self.ids.append(command["id"])
        return {"id": command["id"], "count": len(self.ids)}

    def snapshot(self) -> dict[str, Any]:
        return {"ids": list(self.ids)}

    def restore(self, data: dict[str, Any]) -> None:
        self.ids = list(data["ids"])

    def read(self) -> list[int]:
        with self.lock:
            return list(self.ids)


def loopback() -> str:
    return f"127.0.0.1:{free_port()}"


# -- child processes ----------------------------------------------------------------------------


class Child:
    """A child process running this module; killed by pid at teardown."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def expect(self, prefix: str) -> str:
        line = self.stdout.readline()
        assert line.startswith(prefix), f"expected {prefix!r} from the child, got {line!r}"
        return line

    def request(self, **message: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return json.loads(self.stdout.readline())

    def kill(self) -> str:
        """kill -9 (idempotent); returns what the child printed that the test had not read."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.stdout.closed:
            return ""
        rest = self.stdout.read()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        return rest


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> Child:
        started.append(Child(*args, env=env))
        return started[-1]

    yield spawn
    for child in started:
        child.kill()


async def restored_ids(data_dir: Path, address: str) -> list[int]:
    """Start a node on ``data_dir`` in this process and return the state it recovered."""
    machine = Recorder()
    node = RaftNode(RaftSettings(password=KEY, data_dir=data_dir, self_address=address), machine)
    node.start()
    try:
        await node.wait_ready(10)
        return machine.read()
    finally:
        node.stop()


# -- one node -----------------------------------------------------------------------------------


async def test_one_node_commits_in_order_and_survives_restart(tmp_path: Path) -> None:
    address, machine, leadership = loopback(), Recorder(), []
    node = RaftNode(
        RaftSettings(
            password=KEY, data_dir=tmp_path, self_address=address, compaction_min_entries=50
        ),
        machine,
        on_leadership=lambda leader, term: leadership.append((leader, term)),
    )
    node.start()
    try:
        await node.wait_ready(5)
        assert node.is_leader and node.leader == address and node.ready
        results = [await node.submit({"id": i}) for i in range(100)]  # compacts twice
        results += await asyncio.gather(*(node.submit({"id": i}) for i in range(100, 300)))
        assert results == [{"id": i, "count": i + 1} for i in range(300)]
        assert await node.submit({"no": "id"}) == {"error": "command needs an integer id"}
        status = node.status()
        assert status["state"] == "leader" and status["applied_index"] == node.applied_index
        assert status["log_size"] < 300  # compacted
    finally:
        node.stop()
    node.stop()  # idempotent
    assert [leader for leader, _ in leadership] == [True]
    assert machine.ids == list(range(300))
    assert (tmp_path / SNAPSHOT_FILE).exists()

    assert await restored_ids(tmp_path, address) == list(range(300))


async def test_submit_rejects_what_is_not_plain_json(tmp_path: Path) -> None:
    node = RaftNode(
        RaftSettings(password=KEY, data_dir=tmp_path, self_address=loopback()), Recorder()
    )
    node.start()
    try:
        await node.wait_ready(5)
        with pytest.raises(ValueError, match="plain JSON"):
            await node.submit({"id": 1, "when": object()})
        with pytest.raises(ValueError, match="must be a dict"):
            await node.submit([1, 2])  # type: ignore[arg-type]
    finally:
        node.stop()
    with pytest.raises(ClusterError, match="not running"):
        await node.submit({"id": 1})


async def test_b2b_snapshot_newer_than_journal_start_keeps_later_entries(tmp_path: Path) -> None:
    """The state right after a snapshot rename, before compaction: pysyncobj would clear the
    journal and lose entries 5001..6000."""
    journal = RaftJournal(tmp_path / JOURNAL_FILE)
    journal.add(b"\x01", 1, 0)
    for i in range(2, 6001):
        journal.add(b'\x00{"id":%d}' % i, i, 1)
    journal.setCurrentTerm(1, None)
    journal.setRaftCommitIndex(6000)
    journal.close()
    address = loopback()
    write_snapshot(  # at entry 5000 (with 4999 before it); the cluster is just this node
        str(tmp_path / SNAPSHOT_FILE),
        {"ids": list(range(2, 5001))},
        (journal[4999], journal[4998], {TCPNode(address)}),
        fsync=False,
    )
    assert await restored_ids(tmp_path, address) == list(range(2, 6001))


async def test_port_in_use_and_broken_snapshot_are_reported(tmp_path: Path) -> None:
    address = loopback()
    first = RaftNode(
        RaftSettings(password=KEY, data_dir=tmp_path / "a", self_address=address), Recorder()
    )
    first.start()
    try:
        second = RaftNode(
            RaftSettings(password=KEY, data_dir=tmp_path / "b", self_address=address), Recorder()
        )
        with pytest.raises(ClusterError, match=f"cannot bind the raft port {address}"):
            second.start()
    finally:
        first.stop()

    (tmp_path / "a" / SNAPSHOT_FILE).write_text('{"type": "something else"}')
    broken = RaftNode(
        RaftSettings(password=KEY, data_dir=tmp_path / "a", self_address=address), Recorder()
    )
    broken.start()
    try:
        with pytest.raises(ClusterError, match="cannot load the raft snapshot"):
            await broken.wait_ready(5)
        with pytest.raises(ClusterError, match="cannot load the raft snapshot"):
            await broken.submit({"id": 1})
    finally:
        broken.stop()


# -- kill -9 ------------------------------------------------------------------------------------


def _run_writer_until(
    children: Callable[..., Child],
    data_dir: Path,
    address: str,
    stop_at: Callable[[str], bool],
    *extra: str,
    env: dict[str, str] | None = None,
) -> list[int]:
    """Run a writer child until ``stop_at(line)``, kill -9 it, return every id it acknowledged."""
    child = children("writer", str(data_dir), address, *extra, env=env)
    child.expect("READY")
    lines: list[str] = []
    for line in child.stdout:
        lines.append(line)
        if stop_at(line):
            break
    else:
        pytest.fail(f"the writer ended before the kill point; last lines: {lines[-3:]}")
    lines += child.kill().splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("ACK ")]


def _assert_exactly_once_in_order(acked: list[int], restored: list[int]) -> None:
    assert acked, "the child acknowledged nothing before it was killed"
    assert len(set(restored)) == len(restored), "a command was applied twice"
    assert restored == sorted(restored), "commands were applied out of submission order"
    missing = set(acked) - set(restored)
    assert not missing, f"{len(missing)} acknowledged commands lost, e.g. {sorted(missing)[:5]}"


@pytest.mark.parametrize("kill_after", [150, 411, 1003])
async def test_kill9_while_submitting_loses_no_acknowledged_command(
    tmp_path: Path, children: Callable[..., Child], kill_after: int
) -> None:
    address = loopback()
    jitter = random.Random(kill_after).randrange(50)
    acked = _run_writer_until(
        children, tmp_path, address, lambda line: line == f"ACK {kill_after + jitter}\n"
    )
    _assert_exactly_once_in_order(acked, await restored_ids(tmp_path, address))


@pytest.mark.parametrize("point", ["snapshot:written", "compact:tmp-written", "compact:replaced"])
async def test_kill9_inside_compaction_loses_no_acknowledged_command(
    tmp_path: Path, children: Callable[..., Child], point: str
) -> None:
    address = loopback()
    env = {"DKRON_TEST_CRASH_AT": f"{point}@3"}  # pause at the third compaction, then kill
    acked = _run_writer_until(
        children, tmp_path, address, lambda line: line.startswith("AT "), env=env
    )
    _assert_exactly_once_in_order(acked, await restored_ids(tmp_path, address))
    assert len(acked) > 400  # three compactions at 200 entries: the kill hit a full journal


async def test_kill9_before_the_commit_index_was_stored(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    """The commit index reaches the meta file once a second; acknowledged entries past it are
    re-committed by the restarted single node (here the child never stores it at all)."""
    address = loopback()
    acked = _run_writer_until(
        children, tmp_path, address, lambda line: line == "ACK 299\n", "--no-meta-commit"
    )
    meta = json.loads((tmp_path / (JOURNAL_FILE + ".meta")).read_text())
    assert meta.get("commit_index", 1) < 10  # nothing acknowledged was recorded as committed
    _assert_exactly_once_in_order(acked, await restored_ids(tmp_path, address))


# -- password, read-only replicas ---------------------------------------------------------------


async def test_password_protects_the_cluster_and_replicas_follow(tmp_path: Path) -> None:
    voter_address = loopback()
    voter_machine, good_machine, bad_machine = Recorder(), Recorder(), Recorder()
    voter = RaftNode(
        RaftSettings(data_dir=tmp_path / "v", self_address=voter_address, password="k1"),
        voter_machine,
    )
    good = RaftNode(_replica(tmp_path / "good", voter_address, "k1"), good_machine)
    bad = RaftNode(_replica(tmp_path / "bad", voter_address, "wrong"), bad_machine)
    nodes = [voter, good, bad]
    try:
        for node in nodes:
            node.start()
        await voter.wait_ready(5)
        for i in range(5):
            await voter.submit({"id": i})
        await good.wait_ready(5)
        assert await good.submit({"id": 99}) == {"id": 99, "count": 6}  # forwarded to the voter
        assert voter_machine.read() == [0, 1, 2, 3, 4, 99]
        await _until(lambda: good_machine.read() == [0, 1, 2, 3, 4, 99])
        assert good.leader == voter_address and not good.is_leader
        # The wrong key got nothing while the right one got everything.
        assert bad_machine.read() == [] and bad.leader is None and not bad.ready
        with pytest.raises(NotLeaderError):
            await good.submit({"id": 100}, fenced=True)
    finally:
        for node in nodes:
            node.stop()


def _replica(data_dir: Path, voter: str, password: str) -> RaftSettings:
    return RaftSettings(data_dir=data_dir, self_address=None, partners=(voter,), password=password)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- three processes ----------------------------------------------------------------------------


def test_three_node_cluster_elects_and_replicates(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    addresses = [loopback() for _ in range(3)]
    nodes = [
        children("serve", str(tmp_path / str(i)), address, *addresses)
        for i, address in enumerate(addresses)
    ]
    for node in nodes:
        node.expect("STARTED")
    leader = _wait_for_one_leader(nodes)
    follower = next(node for node in nodes if node is not leader)

    assert leader.request(op="submit", command={"id": 1}, fenced=True) == {
        "result": {"id": 1, "count": 1}
    }
    assert follower.request(op="submit", command={"id": 2})["result"] == {"id": 2, "count": 2}
    refused = follower.request(op="submit", command={"id": 3}, fenced=True)
    assert (
        refused["error"] == "NotLeaderError"
        and refused["leader"] == leader.request(op="status")["self"]
    )
    _wait(lambda: all(node.request(op="ids") == [1, 2] for node in nodes))


def _wait_for_one_leader(nodes: list[Child]) -> Child:
    found: list[Child] = []

    def one_leader() -> bool:
        statuses = [node.request(op="status") for node in nodes]
        leaders = {status["leader"] for status in statuses}
        found[:] = [node for node, s in zip(nodes, statuses, strict=True) if s["state"] == "leader"]
        return len(found) == 1 and len(leaders) == 1 and all(s["ready"] for s in statuses)

    _wait(one_leader)
    return found[0]


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "cluster did not converge in time"
        time.sleep(0.02)


# -- the child program --------------------------------------------------------------------------


_say_lock = threading.Lock()


def _say(*words: object) -> None:
    """One whole line to stdout: the raft thread and the loop both print."""
    with _say_lock:
        sys.stdout.write(" ".join(map(str, words)) + "\n")
        sys.stdout.flush()


def _install_crash_hook(spec: str | None) -> None:
    """``point@n``: on the n-th time the journal reaches ``point``, say so and hang."""
    if not spec:
        return
    point, nth = spec.rsplit("@", 1)
    seen = [0]

    def hook(at: str) -> None:
        if at == point:
            seen[0] += 1
            if seen[0] == int(nth):
                _say("AT", at)
                time.sleep(600)

    journal_module._crash_point = hook


async def _writer(args: argparse.Namespace) -> None:
    if args.no_meta_commit:
        RaftJournal.onOneSecondTimer = lambda self: None  # type: ignore[method-assign]
    _install_crash_hook(os.environ.get("DKRON_TEST_CRASH_AT"))
    settings = RaftSettings(
        password=KEY,
        data_dir=Path(args.data_dir),
        self_address=args.address,
        compaction_min_entries=200,
    )
    node = RaftNode(settings, Recorder())
    node.start()
    await node.wait_ready(10)
    _say("READY")
    window = asyncio.Semaphore(16)

    async def submit(i: int) -> None:
        try:
            await node.submit({"id": i})
            _say("ACK", i)
        except ClusterError as exc:
            _say("ERR", i, exc)
        finally:
            window.release()

    tasks = set()
    for i in range(100_000):
        await window.acquire()
        task = asyncio.create_task(submit(i))  # tasks start, hence submit, in creation order
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _serve(args: argparse.Namespace) -> None:
    machine = Recorder()
    settings = RaftSettings(
        password=KEY,
        data_dir=Path(args.data_dir),
        self_address=args.address,
        partners=tuple(args.partners),
        **FAST,
    )
    node = RaftNode(settings, machine)
    node.start()
    _say("STARTED")
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        _say(json.dumps(await _answer(node, machine, json.loads(line))))
    node.stop()


async def _answer(node: RaftNode, machine: Recorder, request: dict[str, Any]) -> Any:
    if request["op"] == "status":
        return node.status()
    if request["op"] == "ids":
        return machine.read()
    try:
        return {
            "result": await node.submit(request["command"], fenced=request.get("fenced", False))
        }
    except ClusterError as exc:
        return {
            "error": type(exc).__name__,
            "message": str(exc),
            "leader": getattr(exc, "leader", None),
        }


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["writer", "serve"])
    parser.add_argument("data_dir")
    parser.add_argument("address")
    parser.add_argument("partners", nargs="*")
    parser.add_argument("--no-meta-commit", action="store_true")
    args = parser.parse_args()
    asyncio.run(_writer(args) if args.mode == "writer" else _serve(args))


if __name__ == "__main__":
    _main()
