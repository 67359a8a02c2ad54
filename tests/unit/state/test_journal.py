"""The raft journal, its meta file and the snapshot codec, on real files; its fsync modes and
what it and the raft node do when the disk refuses a write (an injected failing writer).

Crash atomicity of compaction is tested with a real subprocess killed with SIGKILL while it is
paused (by the test-only crash hook) at the critical moment.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dkron_lab.errors import DkronError, InsufficientStorage, ValidationError
from dkron_lab.state.raft import RaftNode, RaftSettings
from dkron_lab.state.raft import journal as journal_module
from dkron_lab.state.raft import thread as raft_thread
from dkron_lab.state.raft.journal import (
    MAGIC,
    RaftJournal,
    fsync_mode,
    read_snapshot,
    write_snapshot,
)
from dkron_lab.testing import free_port


def _command(i: int) -> bytes:
    return b'\x00{"id":%d}' % i


def _fill(journal: RaftJournal, first: int, last: int, term: int = 1) -> None:
    for i in range(first, last + 1):
        journal.add(_command(i), i, term)


def _indexes(journal: RaftJournal) -> list[int]:
    return [entry[1] for entry in journal[:]]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "raft.journal"


def test_append_read_and_reopen(path: Path) -> None:
    journal = RaftJournal(path)
    _fill(journal, 1, 50, term=2)
    journal.add("text command", 51, 3)
    assert len(journal) == 51
    assert journal[0] == (_command(1), 1, 2)
    assert journal[-1] == (b"text command", 51, 3)
    assert journal.entry_term(51) == 3 and journal.entry_term(52) is None
    journal.close()

    reopened = RaftJournal(path)
    assert reopened[:] == [(_command(i), i, 2) for i in range(1, 51)] + [(b"text command", 51, 3)]
    assert reopened.dropped_bytes == 0
    reopened.close()


def test_torn_tail_is_dropped_and_appending_continues(path: Path) -> None:
    journal = RaftJournal(path)
    _fill(journal, 1, 10)
    journal.close()
    size = path.stat().st_size
    os.truncate(path, size - 3)  # the last record lost its last bytes

    reopened = RaftJournal(path)
    assert _indexes(reopened) == list(range(1, 10))
    assert reopened.dropped_bytes == 24 + len(_command(10)) - 3  # header + payload - 3
    reopened.add(_command(10), 10, 1)
    reopened.close()
    assert _indexes(RaftJournal(path)) == list(range(1, 11))


def test_corrupt_record_fails_its_crc(path: Path) -> None:
    journal = RaftJournal(path)
    _fill(journal, 1, 5)
    journal.close()
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # flip a payload byte of record 5
    path.write_bytes(bytes(data))

    reopened = RaftJournal(path)
    assert _indexes(reopened) == [1, 2, 3, 4]
    reopened.close()


def test_truncate_and_clear_are_persisted(path: Path) -> None:
    journal = RaftJournal(path)
    _fill(journal, 1, 20)
    journal.deleteEntriesFrom(15)  # by position: keeps indexes 1..15
    journal.close()
    reopened = RaftJournal(path)
    assert _indexes(reopened) == list(range(1, 16))
    reopened.clear()
    reopened.add(_command(7), 7, 4)
    reopened.close()
    assert RaftJournal(path)[:] == [(_command(7), 7, 4)]


def test_compaction_keeps_the_tail_and_later_appends(path: Path) -> None:
    journal = RaftJournal(path)
    _fill(journal, 1, 100)
    journal.deleteEntriesTo(40)  # by position: drops indexes 1..40
    assert _indexes(journal) == list(range(41, 101))
    _fill(journal, 101, 110)
    journal.deleteEntriesFrom(65)  # positions still line up after the rewrite
    journal.close()
    reopened = RaftJournal(path)
    assert _indexes(reopened) == list(range(41, 106))
    assert path.read_bytes().startswith(MAGIC)
    reopened.close()


def test_meta_round_trip_and_commit_index_clamp(path: Path) -> None:
    journal = RaftJournal(path, fsync=True)
    _fill(journal, 1, 10)
    journal.setCurrentTerm(3, "127.0.0.1:7001")
    journal.setRaftCommitIndex(8)
    journal.onOneSecondTimer()
    journal.setRaftCommitIndex(9)  # stored by close(), not by the timer
    journal.close()

    reopened = RaftJournal(path)
    assert reopened.getCurrentTerm() == 3
    assert reopened.getVotedForNodeId() == "127.0.0.1:7001"
    assert reopened.getRaftCommitIndex() == 9
    reopened.deleteEntriesFrom(5)  # the log now ends at index 5
    assert reopened.getRaftCommitIndex() == 5
    reopened.close()


def test_not_a_journal_is_refused(path: Path) -> None:
    path.write_bytes(b"PYSYNCOBJ\0\0\0 something else")
    with pytest.raises(DkronError, match="not a dkron-lab raft journal"):
        RaftJournal(path)


def test_b2b_trim_to_snapshot_keeps_entries_after_it(path: Path) -> None:
    journal = RaftJournal(path)
    _fill(journal, 1, 10_000)
    prev, last = journal[4998], journal[4999]  # indexes 4999 and 5000: the snapshot's

    assert not journal.trim_to_snapshot((prev[0], prev[1], 2), last)  # other term: no match
    assert len(journal) == 10_000
    assert journal.trim_to_snapshot(prev, last)
    assert _indexes(journal) == list(range(4999, 10_001))
    journal.close()
    assert _indexes(RaftJournal(path)) == list(range(4999, 10_001))


def test_snapshot_round_trip(tmp_path: Path) -> None:
    from pysyncobj.node import TCPNode

    file = tmp_path / "raft.snapshot"
    last, prev = (b"\x00{}", 12, 3), (b"\x01", 11, 3)
    cluster = {TCPNode("127.0.0.1:7001"), TCPNode("127.0.0.1:7002"), None}
    write_snapshot(str(file), {"jobs": {"a": [1, "x"]}}, (last, prev, cluster), fsync=True)

    state, (got_last, got_prev, got_cluster) = read_snapshot(str(file))
    assert state == {"jobs": {"a": [1, "x"]}}
    assert (got_last, got_prev) == (last, prev)
    assert got_cluster == cluster


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dkron_lab.state.raft import journal as jmod

    path, point = Path(sys.argv[1]), sys.argv[2]

    def hook(at):
        if at == point:
            print("AT", at, flush=True)
            time.sleep(600)

    j = jmod.RaftJournal(path)
    for i in range(1, 10_001):
        j.add(b"\\x00" + b"x" * 100, i, 1)
    jmod._crash_point = hook
    j.deleteEntriesTo(5000)
    print("DONE", flush=True)
    """
)


@pytest.mark.parametrize(
    ("point", "survivors"),
    [("compact:tmp-written", range(1, 10_001)), ("compact:replaced", range(5001, 10_001))],
)
def test_kill_during_compaction_leaves_old_or_new_journal(
    tmp_path: Path, path: Path, point: str, survivors: range
) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), point], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["AT", point]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    tmp_file = path.with_name(path.name + ".tmp")
    assert tmp_file.exists() == (point == "compact:tmp-written")

    journal = RaftJournal(path)
    assert _indexes(journal) == list(survivors)
    assert not tmp_file.exists()  # the half-done compaction was discarded
    journal.close()


# -- fsync modes ---------------------------------------------------------------------------------


class _Fsyncs:
    """Counts ``os.fsync`` calls (they still happen)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = os.fsync

        def counting(fd: int) -> None:
            self.calls += 1
            real(fd)

        monkeypatch.setattr(os, "fsync", counting)


@pytest.mark.parametrize(("mode", "per_sync"), [("batch", 1), ("always", 10), ("never", 0)])
def test_fsync_modes_count_syncs_per_group_of_records(
    path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, per_sync: int
) -> None:
    journal = RaftJournal(path, fsync=mode)
    fsyncs = _Fsyncs(monkeypatch)
    _fill(journal, 1, 10)
    assert fsyncs.calls == 0  # appending is in memory; sync() writes the group
    journal.sync()
    assert fsyncs.calls == per_sync
    journal.sync()  # nothing new: no more syncs
    assert fsyncs.calls == per_sync
    journal.setCurrentTerm(2, None)  # meta: the temporary file and the directory
    assert fsyncs.calls == per_sync + (0 if mode == "never" else 2)
    journal.close()
    assert _indexes(RaftJournal(path)) == list(range(1, 11))


def test_fsync_mode_names_and_booleans() -> None:
    assert fsync_mode(True) == "batch" and fsync_mode(False) == "never"
    assert fsync_mode("always") == "always"
    with pytest.raises(ValidationError, match="always, batch, never"):
        fsync_mode("sometimes")


def test_snapshot_is_fsynced_unless_never(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = _Fsyncs(monkeypatch)
    entry = (b"\x00{}", 1, 1)
    write_snapshot(str(tmp_path / "a"), {}, (entry, entry, set()), fsync=True)
    assert fsyncs.calls == 1
    write_snapshot(str(tmp_path / "b"), {}, (entry, entry, set()), fsync=False)
    assert fsyncs.calls == 1


# -- a full disk ---------------------------------------------------------------------------------


class _Disk:
    """``os.write`` on a disk that can fill up: with ``room`` set, a write stores at most that
    many more bytes and then fails with ENOSPC (a torn record, as a real full disk leaves)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.room: int | None = None
        self.fsync_error = False
        real_write, real_fsync = os.write, os.fsync

        def write(fd: int, data: bytes | memoryview) -> int:
            if self.room is None:
                return real_write(fd, data)
            if self.room <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written = real_write(fd, bytes(data)[: self.room])
            self.room -= written
            return written

        def fsync(fd: int) -> None:
            if self.fsync_error:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("mode", ["batch", "always", "never"])
def test_a_failed_write_keeps_records_pending_and_cuts_the_torn_bytes(
    path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    journal = RaftJournal(path, fsync=mode)
    disk = _Disk(monkeypatch)
    _fill(journal, 1, 5)
    journal.sync()
    good_size = path.stat().st_size
    _fill(journal, 6, 10)
    disk.room = 30  # a record and a bit: the next one is torn
    with pytest.raises(InsufficientStorage, match=r"raft\.journal \(No space left on device\)"):
        journal.sync()
    assert journal.fault is not None and str(path.parent) in journal.fault
    assert len(journal) == 10  # nothing dropped from memory

    disk.room = 0
    with pytest.raises(InsufficientStorage):
        journal.sync()  # still full: still pending
    disk.room = None  # space came back
    journal.sync()
    assert journal.fault is None
    assert path.stat().st_size > good_size
    journal.close()
    reopened = RaftJournal(path)
    assert _indexes(reopened) == list(range(1, 11))  # each once, none torn
    assert reopened.dropped_bytes == 0
    reopened.close()


def test_a_failed_fsync_writes_the_records_again(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = RaftJournal(path, fsync="batch")
    disk = _Disk(monkeypatch)
    _fill(journal, 1, 5)
    disk.fsync_error = True
    with pytest.raises(InsufficientStorage, match="Input/output error"):
        journal.sync()
    disk.fsync_error = False
    journal.sync()
    journal.close()
    assert _indexes(RaftJournal(path)) == [1, 2, 3, 4, 5]


def test_truncating_pending_records_needs_no_write(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = RaftJournal(path)
    disk = _Disk(monkeypatch)
    _fill(journal, 1, 5)
    journal.sync()
    _fill(journal, 6, 10)
    disk.room = 0
    journal.deleteEntriesFrom(7)  # only pending records go
    with pytest.raises(InsufficientStorage):
        journal.sync()
    journal.deleteEntriesFrom(3)  # written ones too: the file is cut (no space needed)
    disk.room = None
    _fill(journal, 4, 6, term=2)
    journal.close()
    assert RaftJournal(path)[:] == [(_command(i), i, 1) for i in (1, 2, 3)] + [
        (_command(i), i, 2) for i in (4, 5, 6)
    ]


def test_a_failed_meta_write_refuses_the_term_and_is_retried(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = RaftJournal(path)
    disk = _Disk(monkeypatch)
    disk.room = 0
    with pytest.raises(InsufficientStorage, match=r"raft\.journal\.meta"):
        journal.setCurrentTerm(5, "127.0.0.1:1")
    journal.setRaftCommitIndex(3)
    journal.onOneSecondTimer()  # a lagging commit index is no reason to fail the tick
    assert journal.fault is not None
    disk.room = None
    journal.sync()  # retries the meta file
    assert journal.fault is None
    journal.close()
    assert RaftJournal(path).getCurrentTerm() == 5


def test_a_failed_compaction_leaves_the_journal_as_it_was(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = RaftJournal(path)
    _fill(journal, 1, 100)
    journal.sync()
    disk = _Disk(monkeypatch)
    disk.room = 100
    with pytest.raises(InsufficientStorage, match="compact the raft journal"):
        journal.deleteEntriesTo(40)
    assert not path.with_name(path.name + ".tmp").exists()
    assert journal.fault is None  # what it holds is on disk; the snapshot is retried instead
    disk.room = None
    _fill(journal, 101, 101)
    journal.close()
    assert _indexes(RaftJournal(path)) == list(range(1, 102))


# -- the raft node on a full disk ----------------------------------------------------------------


class _Applied:
    """A state machine that records the ids it applied."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ids: list[int] = []

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        self.ids.append(int(command["id"]))
        return {"id": command["id"]}

    def snapshot(self) -> dict[str, Any]:
        return {"ids": list(self.ids)}

    def restore(self, data: dict[str, Any]) -> None:
        self.ids = list(data["ids"])


class _FailingWrites:
    """Injected into the journal module: its file writes fail with ENOSPC while ``full``
    (only for paths containing ``only``, when set; Linux: a descriptor's path from /proc)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, only: str | None = None) -> None:
        self.full = False
        real_all, real_file = journal_module._write_all, journal_module._write_file

        def write_all(fd: int, data: bytes) -> None:
            if self.full and (only is None or only in os.readlink(f"/proc/self/fd/{fd}")):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_all(fd, data)

        def write_file(file: Path, data: bytes, *, fsync: bool) -> None:
            if self.full and (only is None or only in str(file)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_file(file, data, fsync=fsync)

        monkeypatch.setattr(journal_module, "_write_all", write_all)
        monkeypatch.setattr(journal_module, "_write_file", write_file)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _node(tmp_path: Path, machine: _Applied, address: str, **settings: Any) -> RaftNode:
    return RaftNode(
        RaftSettings(data_dir=tmp_path, self_address=address, password="k", **settings), machine
    )


async def test_raft_node_refuses_writes_while_the_journal_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raft_thread, "STORAGE_RETRY", 0.05)
    disk = _FailingWrites(monkeypatch)
    machine = _Applied()
    address = f"127.0.0.1:{free_port()}"
    node = _node(tmp_path, machine, address)
    node.start()
    try:
        await node.wait_ready(10)
        await node.submit({"id": 1})
        disk.full = True
        with pytest.raises(InsufficientStorage, match="No space left on device"):
            await node.submit({"id": 2})  # appended, never written: not applied, not answered
        assert node.storage_fault is not None and str(tmp_path) in node.storage_fault
        with pytest.raises(InsufficientStorage, match="nothing was written"):
            await node.submit({"id": 3})
        await asyncio.sleep(0.2)  # retries fail meanwhile
        assert machine.ids == [1]

        disk.full = False  # space came back
        await _until(lambda: node.storage_fault is None)
        assert (await node.submit({"id": 4})) == {"id": 4}
        assert machine.ids == [1, 2, 4]  # 2 was kept and committed once it was written
    finally:
        node.stop()
    again = _Applied()
    node = _node(tmp_path, again, address)  # the snapshot knows the member by address
    node.start()
    try:
        await node.wait_ready(10)
        assert again.ids == [1, 2, 4]
    finally:
        node.stop()


@pytest.mark.parametrize("failing", ["raft.snapshot", "raft.journal.tmp"])
async def test_raft_node_refuses_writes_while_a_snapshot_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The snapshot itself, or the compaction of the journal after it, cannot be written."""
    monkeypatch.setattr(raft_thread, "STORAGE_RETRY", 0.05)
    disk = _FailingWrites(monkeypatch, only=failing)
    machine = _Applied()
    address = f"127.0.0.1:{free_port()}"
    node = _node(tmp_path, machine, address, compaction_min_entries=20)
    node.start()
    try:
        await node.wait_ready(10)
        disk.full = True
        acknowledged = []
        with pytest.raises(InsufficientStorage, match="snapshot|compact"):
            for i in range(200):
                await node.submit({"id": i})
                acknowledged.append(i)
                await asyncio.sleep(0.005)  # let the snapshot attempts happen
        assert node.storage_fault is not None
        disk.full = False
        await _until(lambda: node.storage_fault is None)
        await node.submit({"id": 1000})
        assert (tmp_path / "raft.snapshot").exists()
    finally:
        node.stop()
    again = _Applied()
    node = _node(tmp_path, again, address)  # the snapshot knows the member by address
    node.start()
    try:
        await node.wait_ready(10)
        assert again.ids[-1] == 1000 and set(acknowledged) <= set(again.ids)
    finally:
        node.stop()


async def test_a_follower_with_a_full_disk_never_acknowledges_and_catches_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three voters; one follower's disk refuses writes: the others go on committing, the
    follower refuses writes itself, does not disturb the leader, and catches up once healed."""
    monkeypatch.setattr(raft_thread, "STORAGE_RETRY", 0.05)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    machines = [_Applied() for _ in addresses]
    fast = {"heartbeat_period": 0.05, "election_timeout_min": 0.3, "election_timeout_max": 0.6}
    nodes = [
        RaftNode(
            RaftSettings(
                data_dir=tmp_path / str(i),
                self_address=address,
                partners=tuple(addresses),
                password="k",
                connection_timeout=1.0,
                **fast,
            ),
            machine,
        )
        for i, (address, machine) in enumerate(zip(addresses, machines, strict=True))
    ]
    for node in nodes:
        node.start()
    try:
        await asyncio.gather(*(node.wait_ready(20) for node in nodes))
        leader = next(n for n in nodes if n.is_leader)
        follower = next(n for n in nodes if n is not leader)
        term = leader.term
        full_dir = str(tmp_path / str(nodes.index(follower)))
        disk = _FailingWrites(monkeypatch, only=full_dir)
        disk.full = True
        for i in range(20):
            await leader.submit({"id": i})  # the other follower makes the majority
        await _until(lambda: follower.storage_fault is not None)
        with pytest.raises(InsufficientStorage):
            await follower.submit({"id": 99})
        await asyncio.sleep(1.0)  # full for longer than an election timeout: the scenario
        disk.full = False
        await _until(lambda: follower.storage_fault is None)
        await leader.submit({"id": 20})
        following = machines[nodes.index(follower)]
        await _until(lambda: following.ids[-1:] == [20])
        assert following.ids == machines[nodes.index(leader)].ids
        assert leader.is_leader and leader.term == term  # the stalled follower called no election
    finally:
        for node in nodes:
            node.stop()
