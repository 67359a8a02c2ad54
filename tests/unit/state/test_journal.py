"""The raft journal, its meta file and the snapshot codec, on real files.

Crash atomicity of compaction is tested with a real subprocess killed with SIGKILL while it is
paused (by the test-only crash hook) at the critical moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dkron_lab.errors import DkronError
from dkron_lab.state.journal import MAGIC, RaftJournal, read_snapshot, write_snapshot


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
    from dkron_lab.state import journal as jmod

    path, point = Path(sys.argv[1]), sys.argv[2]

    def hook(at):
        if at == point:
            print("AT", at, flush=True)
            time.sleep(600)

    j = jmod.RaftJournal(path)
    for i in range(1, 10_001):
        j.add(b"\\x00" + b"x" * 100, i, 1)
    jmod.set_crash_hook(hook)
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
