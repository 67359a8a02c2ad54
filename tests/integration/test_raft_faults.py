"""Each pysyncobj 0.3.17 bug of ``reference/pysyncobj-spike.md`` §8, reproduced against our
adapter; where the repro can run unpatched it does, and must show the spike's symptom.

Nodes are real processes on loopback (``raft_child.py``); partitions go through the TCP
proxies of ``tests.harness.Network`` (silent: nothing is closed, bytes wait).
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import psutil
import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.utility import TcpUtility
from raft_child import FAST, KEY, Claims, RaftCluster, command_key

from dkron_lab.errors import NoQuorumError
from dkron_lab.state.raft import JOURNAL_FILE, RaftNode, RaftSettings
from dkron_lab.state.raft._core import _sync_obj_conf
from dkron_lab.state.raft.journal import RaftJournal
from dkron_lab.testing import free_port
from tests.harness import Network, Processes

SLOT = "job-a@2026-01-01T12:00:00Z"


CLAIM_DEADLINE = 10.0


def _wait_until(condition: Any, timeout: float, message: str) -> float:
    """Poll ``condition`` every 10 ms; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, message
        time.sleep(0.01)
    return time.monotonic() - started


# -- B5 + fencing + B6: a deposed leader is never told it won ----------------------------------


@pytest.mark.parametrize(
    ("variant", "extra", "fenced"),
    [
        ("adapter", (), True),  # B5 clamp + fencing rule
        ("fencing-only", ("--unpatched", "b5"), True),  # the fencing rule alone
        ("pysyncobj", ("--unpatched", "b5"), False),  # what pysyncobj reports
    ],
)
def test_b5_deposed_leader_is_never_told_it_won_a_claim_it_lost(
    tmp_path: Path,
    procs: Processes,
    network: Network,
    variant: str,
    extra: tuple[str, ...],
    fenced: bool,
) -> None:
    """Spike §3 ``exp3b_stale_success``: partition the leader; it appends a claim (and a write)
    in its old term; the majority elects a new leader, which claims the same slot and compacts
    its log; heal once both sides dropped the old connections (else the held AppendEntries
    stream simply resumes, as TCP would, and nothing goes wrong). Unpatched, snapshot-mode
    AppendEntries commit the old leader's stale entries: it applies its claim and pysyncobj
    reports SUCCESS + won, although every node ends with the slot owned by the new leader.
    B6: with the fix those callbacks never come; our deadline answers ReplicationTimeout."""
    names = ["n1", "n2", "n3"]
    settings = {"compaction_min_entries": 40}
    cluster = RaftCluster(procs, tmp_path, names, network=network, settings=settings)
    for name in names:
        cluster.start(name, extra=extra)
    old = cluster.leader()
    assert old.call("writes", start=0, count=5)["result"]["acked"] == list(range(5))

    network.isolate(old.name)
    cut = time.monotonic()
    claim = {"slot": SLOT, "node": old.name}
    # The deadline must outlast the compaction and the heal even on a loaded 2-core machine.
    old_claim = old.send("submit", command=claim, fenced=fenced, timeout=CLAIM_DEADLINE)
    old_write = old.send("submit", command={"id": 999}, timeout=CLAIM_DEADLINE)

    majority = [name for name in names if name != old.name]
    new = cluster.leader(among=majority)
    won = new.call("submit", command={"slot": SLOT, "node": new.name}, fenced=True)
    assert won["result"] == {"won": True, "owner": new.name}
    bulk = new.call("writes", start=100, count=60, pad=20_000, timeout=5.0)
    assert len(bulk["result"]["acked"]) == 60
    # After 60 acknowledged writes, a log of at most 40 entries is a compacted one: pysyncobj
    # compacts only a log *longer* than compaction_min_entries, so a compaction that left a long
    # tail (a loaded machine applies in bigger batches) can end at exactly 40 and stay there.
    _wait_until(lambda: new.status()["log_size"] <= 40, 60, "the new leader never compacted")
    time.sleep(max(0.0, cut + 2 * FAST["connection_timeout"] - time.monotonic()))
    network.heal()

    answer = old.wait(old_claim, timeout=CLAIM_DEADLINE + 5)
    final = cluster.converged(timeout=10)
    assert final["owners"] == {SLOT: new.name} and 999 not in final["ids"]
    if variant == "pysyncobj":
        assert answer.get("result") == {"won": True, "owner": old.name}, answer  # the bug
        assert command_key(claim) in old.state()["local"]  # applied, later overwritten
    elif variant == "fencing-only":
        assert answer["error"] == "NotLeaderError" and answer["callback"] == 0, answer
    else:
        assert answer["error"] == "ReplicationTimeout" and answer["callback"] is None, answer
        # the deadline answered, not pysyncobj (B6)
        assert CLAIM_DEADLINE - 0.1 < answer["seconds"] < CLAIM_DEADLINE + 1.5
        assert command_key(claim) not in old.state()["local"]
        stale = old.wait(old_write, timeout=5)
        assert stale["error"] == "ReplicationTimeout" and stale["callback"] is None


# -- B1: nodes that lagged catch up without truncating what they applied ------------------------


def test_b1_lagging_follower_and_replica_catch_up_without_truncating_applied_entries(
    tmp_path: Path, procs: Processes, network: Network
) -> None:
    """Issue 15: a follower and a read-only replica are cut off (past ``connection_timeout``)
    while the leader streams writes, then the link heals. Each reconnects far behind; the
    leader's AppendEntries sent before their first reset reply came back are all answered with
    the same reset, and each of those stale resets rewinds ``nextIndex`` and re-sends entries
    the node has applied meanwhile. With pysyncobj's truncation (``--unpatched b1``) this run
    logged "truncating already-applied log entries" in 7 of 10 trials (a race, hence no
    unpatched variant here; ``test_raft_overrides.py::test_b1_a_stale_reset_*`` replays it step
    by step). Ours never, and every node ends with every acknowledged write."""
    names = ["n1", "n2", "n3", "r1"]
    cluster = RaftCluster(procs, tmp_path, names, network=network)
    for name in names[:3]:
        cluster.start(name)
    cluster.start("r1", replica=True)
    follower = next(name for name in names[:3] if name != cluster.leader().name)
    acked: list[int] = []
    sent = 0

    def stream(seconds: float, among: list[str]) -> None:
        """Keep pipelined writes flowing to the leader for ``seconds``, in batches. (On a
        starved machine the leader may change meanwhile: then a batch stops at its first
        failure, and the next one goes to the new leader.)"""
        nonlocal sent
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            leader = cluster.leader(among=among)
            batch = leader.call("writes", start=sent, count=200, timeout=3.0)["result"]
            sent += 200
            acked.extend(batch["acked"])

    stream(0.3, names)
    network.partition([follower], ["r1"])
    majority = [name for name in names[:3] if name != follower]
    stream(FAST["connection_timeout"] + 0.5, majority)  # both sides drop the connections
    network.heal()
    stream(2.5, names)  # they reconnect far behind while the leader keeps sending
    ids = cluster.converged(timeout=30)["ids"]
    assert len(acked) > 200 and not set(acked) - set(ids), "acknowledged writes lost"
    assert len(set(ids)) == len(ids), "applied twice"
    assert "truncating already-applied" not in cluster.logs()


# -- B8: a partitioned leader steps down; the minority never commits ---------------------------

DEFAULT_FALLBACK = RaftSettings.__dataclass_fields__["leader_fallback_timeout"].default


@pytest.mark.parametrize(
    ("variant", "fallback"), [("adapter", DEFAULT_FALLBACK), ("pysyncobj", 30.0)]
)
def test_b8_partitioned_leader_steps_down_and_rejoins_without_divergence(
    tmp_path: Path, procs: Processes, network: Network, variant: str, fallback: float
) -> None:
    """Spike §3: with pysyncobj's ``leaderFallbackTimeout`` of 30 s a partitioned leader calls
    itself leader for 30 s; ours (CheckQuorum: one maximum election timeout, 1.4 s by default)
    steps down after about that long. Either way the minority commits nothing, and after the
    heal every node holds the same state."""
    names = ["n1", "n2", "n3"]
    settings = {"leader_fallback_timeout": fallback}
    cluster = RaftCluster(procs, tmp_path, names, network=network, settings=settings)
    for name in names:
        cluster.start(name)
    old = cluster.leader()
    assert old.call("writes", start=0, count=5)["result"]["acked"] == list(range(5))

    network.isolate(old.name)
    cut = time.monotonic()
    claim = old.send("submit", command={"slot": SLOT, "node": old.name}, fenced=True, timeout=2.5)
    write = old.send("submit", command={"id": 99}, timeout=2.5)
    observe = 3.0  # seconds: past our fallback, far below pysyncobj's
    while old.status()["state"] == "leader" and time.monotonic() - cut < observe:
        time.sleep(0.02)
    stepped_down = time.monotonic() - cut
    new = cluster.leader(among=[name for name in names if name != old.name])
    assert new.call("writes", start=10, count=5)["result"]["acked"] == list(range(10, 15))

    if variant == "adapter":
        print(f"B8: the partitioned leader stepped down after {stepped_down:.2f} s")
        assert fallback - 0.15 < stepped_down < fallback + 1.0  # polled; CPU may be busy
    else:
        assert stepped_down >= observe and old.status()["state"] == "leader"  # two leaders
    for request in (claim, write):  # the minority side never commits, hence never fires
        assert "result" not in old.wait(request, timeout=5)
    assert old.state()["ids"] == list(range(5))

    network.heal()
    final = cluster.converged(timeout=10)
    assert final["ids"] == [*range(5), *range(10, 15)] and final["owners"] == {}
    assert all("slot" not in key for key in old.state()["local"])


# -- B2: a whole-cluster kill -9 inside log compaction ------------------------------------------


def test_b2_whole_cluster_kill9_inside_compaction_loses_no_acknowledged_write(
    tmp_path: Path, procs: Processes
) -> None:
    """Spike §6: all nodes compact at about the same index, so one crash can hit every node
    mid-compaction; pysyncobj's journal lost 324 acknowledged writes in 1 of 4 such trials.
    Here each node hangs at a different crash point of its first compaction, all three are
    killed with SIGKILL there, restarted, and must agree on every acknowledged write. (The
    first compaction, because only there the leader, which reaches it first, is sure to have
    sent the followers enough entries to reach theirs.)"""
    points = {"n1": "compact:tmp-written", "n2": "compact:replaced", "n3": "snapshot:written"}
    names = list(points)
    cluster = RaftCluster(procs, tmp_path, names, settings={"compaction_min_entries": 100})
    for name in names:
        cluster.start(name, extra=("--crash-at", f"{points[name]}@1"))
    leader = cluster.leader()
    written = leader.call("writes", start=0, count=400, timeout=1.0)["result"]
    acked = written["acked"]
    assert len(acked) > 50, f"too few acknowledged writes to have compacted: {written}"
    for name in names:
        assert cluster.nodes[name].wait_event("at", timeout=10)["point"] == points[name]
    for name in names:
        cluster.kill(name)

    for name in names:
        cluster.start(name)
    cluster.leader()
    final = cluster.converged()
    ids = final["ids"]
    assert len(set(ids)) == len(ids) and ids == sorted(ids), "applied twice or out of order"
    assert not set(acked) - set(ids), f"acknowledged writes lost: {sorted(set(acked) - set(ids))}"
    assert "truncating already-applied" not in cluster.logs()  # no silent divergence either


_FILE_JOURNAL_CHILD = textwrap.dedent(
    """
    import sys, time
    from pysyncobj.journal import FileJournal
    from dkron_lab.state.raft import journal as jmod
    from dkron_lab.state.raft.journal import RaftJournal

    kind, path = sys.argv[1], sys.argv[2]
    journal = FileJournal(path) if kind == "pysyncobj" else RaftJournal(path)
    for i in range(1, 10_001):
        journal.add(b"\\x00{\\"id\\":%d}" % i, i, 1)
    journal.flush()

    def hang(*_):
        print("AT", flush=True)
        time.sleep(600)

    if kind == "pysyncobj":  # hang after re-adding 999 of the 5000 kept entries
        add, readds = journal.add, [0]
        def counting_add(*entry):
            readds[0] += 1
            if readds[0] == 1000:
                hang()
            add(*entry)
        journal.add = counting_add
    else:
        jmod._crash_point = lambda point: point == "compact:tmp-written" and hang()
    journal.deleteEntriesTo(5000)
    """
)


@pytest.mark.parametrize(("kind", "kept"), [("pysyncobj", 999), ("dkron-lab", 10_000)])
def test_b2_kill9_during_journal_compaction(tmp_path: Path, kind: str, kept: int) -> None:
    """Spike ``unit/b2_journal_rewrite.py``: pysyncobj's FileJournal compacts by clearing the
    file and re-adding the kept entries; killed in the middle, 999 of 10 000 entries are left.
    Ours writes the kept tail to a new file and renames it: the old journal stays whole."""
    script, path = tmp_path / "child.py", tmp_path / "raft.journal"
    script.write_text(_FILE_JOURNAL_CHILD)
    with Processes() as procs:
        child = procs.start([sys.executable, str(script), kind, str(path)])
        assert child.readline(timeout=30) == "AT"
        child.kill()
    if kind == "pysyncobj":
        from pysyncobj.journal import FileJournal

        journal = FileJournal(str(path))
        assert len(journal) == kept and journal[0][1] == 5001  # acknowledged entries gone
        journal._destroy()
    else:
        ours = RaftJournal(path)
        assert len(ours) == kept and ours[0][1] == 1
        ours.close()


# -- B10: the raft port without and with the cluster key ----------------------------------------


class _Touch:
    """Unpickling this creates a file: the smallest proof of code execution."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _send_frame(address: str, payload: bytes, marker: Path) -> bool:
    """Send one raw pysyncobj frame (length + zlib(pickle)) as a new connection's first
    message; True once ``marker`` exists, False once the node hung up without creating it."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=0.05) as conn:
        conn.sendall(struct.pack("i", len(payload)) + payload)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if marker.exists():
                return True
            try:
                if conn.recv(1024) == b"":
                    return marker.exists()
            except TimeoutError:
                pass
    raise AssertionError("the node neither ran the pickle nor hung up")


async def test_b10_pickle_frame_is_never_loaded(tmp_path: Path) -> None:
    """Spike §5: without a password any TCP client gets a pickle loaded (remote code execution,
    loopback included); the settings refuse to run without one, and with the key the frame
    fails authentication before anything is unpickled."""
    marker, address = tmp_path / "pwned", f"127.0.0.1:{free_port()}"
    node = RaftNode(
        RaftSettings(data_dir=tmp_path / "n", self_address=address, password=KEY), Claims()
    )
    node.start()
    try:
        await node.wait_ready(5)
        assert _send_frame(address, zlib.compress(pickle.dumps(_Touch(marker))), marker) is False
        assert await node.submit({"id": 1}) == {"count": 1}  # and it keeps serving
    finally:
        node.stop()


async def test_b10_wrong_key_gets_no_state_and_injects_nothing(tmp_path: Path) -> None:
    """Spike §5: a node with the wrong key receives no entry and its writes never reach the
    cluster; membership commands on the raft port are refused even with the right key (they
    would bypass the API's authentication)."""
    voter_address, machine, intruder_machine = f"127.0.0.1:{free_port()}", Claims(), Claims()
    voter = RaftNode(
        RaftSettings(data_dir=tmp_path / "v", self_address=voter_address, password="k1"), machine
    )
    intruder = RaftNode(
        RaftSettings(
            data_dir=tmp_path / "x", self_address=None, partners=(voter_address,), password="k2"
        ),
        intruder_machine,
    )
    voter.start()
    intruder.start()
    try:
        await voter.wait_ready(5)
        await voter.submit({"id": 1})
        with pytest.raises(NoQuorumError):
            await intruder.submit({"id": 666})
        with pytest.raises(NoQuorumError):
            await intruder.wait_ready(0.5)
        assert machine.read()["ids"] == [1] and intruder_machine.read()["ids"] == []
        utility = TcpUtility(password="k1", timeout=5)
        assert utility.executeCommand(voter_address, ["status"])["self"].id == voter_address
        for command in (["add", "127.0.0.1:1"], ["remove", voter_address], ["transfer"]):
            answer = utility.executeCommand(voter_address, command)
            assert answer.startswith("FAIL"), answer
        assert [peer["address"] for peer in voter.peers()] == [voter_address]
    finally:
        intruder.stop()
        voter.stop()


# -- B9, B7: settings that cannot be got wrong ---------------------------------------------------


def _listening(pid: int, port: int) -> list[str]:
    return [
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]


def test_b9_pysyncobj_binds_every_interface_ours_only_self(tmp_path: Path) -> None:
    port = free_port()
    raw = SyncObj(f"127.0.0.1:{port}", [], SyncObjConf(autoTick=False))
    try:
        assert _listening(os.getpid(), port) == ["0.0.0.0"]  # B9
    finally:
        raw.destroy()
        raw._poller.poll(0)  # let it close its server socket
    ours = RaftNode(
        RaftSettings(password=KEY, data_dir=tmp_path, self_address=f"127.0.0.1:{port}"), Claims()
    )
    ours.start()
    try:
        assert _listening(os.getpid(), port) == ["127.0.0.1"]
    finally:
        ours.stop()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"self_address": "127.0.0.1:7001"},
        {"self_address": None, "partners": ("127.0.0.1:7001",)},
        {"self_address": "127.0.0.1:7001", "compaction_min_entries": 2},
    ],
)
def test_b7_journal_never_without_snapshot(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    """B7: a journal without a dump file compacts the log away and can never rebuild its state.
    Every settings value gives pysyncobj both, in the data directory."""
    settings = RaftSettings(data_dir=tmp_path, password=KEY, **kwargs)
    journal = RaftJournal(tmp_path / JOURNAL_FILE)
    try:
        conf = _sync_obj_conf(settings, journal, None, None)
    finally:
        journal.close()
    assert conf.journalFile is journal
    assert conf.fullDumpFile == str(tmp_path / "raft.snapshot")
