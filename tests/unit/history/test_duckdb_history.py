"""DuckDBHistory against real DuckDB files in tmp_path; only time is faked."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dkron_lab.errors import BadRequest, DkronError
from dkron_lab.history.duckdb import SORT_FIELDS, DuckDBHistory
from dkron_lab.model.execution import Execution, execution_id

T0 = datetime(2024, 12, 20, 2, 0, 0, 123456, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def run(job: str, i: int, *, node: str = "node-1", **fields: object) -> Execution:
    """The i-th execution of ``job``: started i seconds after T0, one second long."""
    started = fields.pop("started_at", T0 + timedelta(seconds=i))
    assert isinstance(started, datetime)
    values: dict[str, object] = {
        "id": execution_id((started - EPOCH) // ONE_US * 1000, node),
        "job_name": job,
        "node_name": node,
        "group": 1_734_658_800_001_234_567 + i,
        "started_at": started,
        "finished_at": started + timedelta(seconds=1),
        "success": i % 2 == 0,
        "output": f"output {i}",
        **fields,
    }
    return Execution(**values)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def history(tmp_path: Path) -> Iterator[DuckDBHistory]:
    with DuckDBHistory(tmp_path / "history.duckdb") as h:
        yield h


def ids(executions: list[Execution]) -> list[str]:
    return [e.id for e in executions]


# --- round trip, reads -------------------------------------------------------------------


def test_round_trip_keeps_every_field_as_aware_utc(history: DuckDBHistory) -> None:
    original = run("nightly", 0, attempt=3, success=True, scheduled_at=T0 - timedelta(hours=1))
    history.append(original)
    history.flush()

    got = history.get_execution("nightly", original.id)

    assert got == original
    assert got is not None and got.scheduled_at is not None
    for value in (got.started_at, got.finished_at, got.scheduled_at):
        assert value.tzinfo is UTC
    assert got.started_at.microsecond == 123456


def test_get_execution_is_scoped_to_the_job(history: DuckDBHistory) -> None:
    e = run("a", 0)
    history.append(e)
    history.flush()
    assert history.get_execution("b", e.id) is None
    assert history.get_execution("a", "no-such-id") is None


def test_count_per_job_and_in_total(history: DuckDBHistory) -> None:
    for i in range(3):
        history.append(run("a", i))
    history.append(run("b", 0, node="node-2"))
    history.flush()
    assert (history.count("a"), history.count("b"), history.count("c"), history.count()) == (
        3,
        1,
        0,
        4,
    )


def test_append_refuses_a_running_execution(history: DuckDBHistory) -> None:
    with pytest.raises(ValueError, match="still running"):
        history.append(run("a", 0, finished_at=None))


def test_writes_and_reads_refuse_a_closed_history(tmp_path: Path) -> None:
    h = DuckDBHistory(tmp_path / "h.duckdb")
    with pytest.raises(RuntimeError, match="open"):
        h.append(run("a", 0))
    h.open()
    h.close()
    h.close()  # idempotent
    with pytest.raises(RuntimeError, match="open"):
        h.delete_job("a")
    with pytest.raises(RuntimeError, match="open"):
        h.count()


# --- list_executions ---------------------------------------------------------------------


@pytest.fixture
def varied(history: DuckDBHistory) -> list[Execution]:
    """Executions whose sort keys disagree with each other, with ties and NULLs."""
    runs = [
        run(
            "job",
            i,
            finished_at=T0 + timedelta(hours=1, seconds=-i),  # the reverse of start order
            attempt=1 + i % 3,  # ties, broken by start time
            scheduled_at=None if i % 4 == 0 else T0 + timedelta(minutes=10 - i),
        )
        for i in range(12)
    ]
    for e in runs:
        history.append(e)
    history.append(run("other", 0))
    history.flush()
    return runs


def expected_order(runs: list[Execution], sort: str, desc: bool) -> list[str]:
    column = SORT_FIELDS[sort]

    def key(e: Execution) -> tuple[object, ...]:
        return (getattr(e, column), e.started_at, e.id)

    present = sorted((e for e in runs if getattr(e, column) is not None), key=key, reverse=desc)
    missing = sorted((e for e in runs if getattr(e, column) is None), key=key, reverse=desc)
    return ids(present + missing)  # NULLs last in both directions


@pytest.mark.parametrize("sort", sorted(SORT_FIELDS))
@pytest.mark.parametrize("order", ["ASC", "desc", ""])
def test_list_sorts_by_each_field(
    history: DuckDBHistory, varied: list[Execution], sort: str, order: str
) -> None:
    executions, truncated, total = history.list_executions("job", sort=sort, order=order)

    assert ids(executions) == expected_order(varied, sort, desc=order != "ASC")
    assert truncated == [False] * 12
    assert total == 12


def test_list_default_is_newest_first(history: DuckDBHistory, varied: list[Execution]) -> None:
    executions, _, _ = history.list_executions("job")
    assert ids(executions) == ids(varied[::-1])


@pytest.mark.parametrize(
    ("start", "end"), [(0, 5), (5, 10), (10, 15), (3, 3), (0, None), (7, None)]
)
def test_list_pages_are_slices_of_the_whole(
    history: DuckDBHistory, varied: list[Execution], start: int, end: int | None
) -> None:
    whole, _, _ = history.list_executions("job", sort="finished_at", order="ASC")

    page, flags, total = history.list_executions(
        "job", sort="finished_at", order="ASC", start=start, end=end
    )

    assert page == whole[start:end]
    assert len(flags) == len(page)
    assert total == 12


def test_list_unknown_job_is_empty(history: DuckDBHistory) -> None:
    assert history.list_executions("nope") == ([], [], 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sort": "name"}, "'finished_at', 'attempt', 'scheduled_at'"),
        ({"sort": "output"}, "_sort='output'"),
        ({"order": "up"}, "ASC or DESC"),
        ({"start": -1}, "_start=-1"),
        ({"start": 5, "end": 2}, "_end >= _start"),
        ({"output_size_limit": -3}, "output_size_limit=-3"),
    ],
)
def test_list_rejects_bad_parameters(
    history: DuckDBHistory, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        history.list_executions("job", **kwargs)  # type: ignore[arg-type]


def test_output_size_limit_keeps_the_tail_and_flags_cuts(history: DuckDBHistory) -> None:
    outputs = ["", "abc", "abcdef", "naïve ☃ e\u0301 😀 end"]
    for i, output in enumerate(outputs):
        history.append(run("job", i, output=output))
    history.flush()

    for limit in (0, 3, 6, 100):
        executions, truncated, _ = history.list_executions(
            "job", order="ASC", output_size_limit=limit
        )
        assert [e.output for e in executions] == [o[len(o) - limit :] for o in outputs]
        assert truncated == [len(o) > limit for o in outputs]

    full = history.get_execution("job", run("job", 3).id)
    assert full is not None and full.output == outputs[3]


# --- writes: order, idempotency, delete ----------------------------------------------------


def test_delete_job_matches_the_exact_name_only(history: DuckDBHistory) -> None:
    for job in ("a", "ab", "a_", "a%", "b"):
        history.append(run(job, 0))
        history.append(run(job, 1))
    history.flush()

    history.delete_job("a")
    history.delete_job("a_")
    history.flush()

    assert {job: history.count(job) for job in ("a", "ab", "a_", "a%", "b")} == {
        "a": 0,
        "ab": 2,
        "a_": 0,
        "a%": 2,
        "b": 2,
    }


def test_writes_apply_in_the_order_called_within_one_batch(tmp_path: Path) -> None:
    # A long flush_interval keeps all writes in one batch, i.e. one transaction.
    with DuckDBHistory(tmp_path / "h.duckdb", flush_interval=30) as h:
        first, second = run("a", 0), run("a", 1)
        h.append(first)
        h.append(run("b", 0))
        h.delete_job("a")
        h.append(second)
        h.append(first)  # re-inserted after its deletion, in the same transaction
        h.flush()

        assert sorted(ids(h.list_executions("a")[0])) == sorted([first.id, second.id])
        assert h.count("b") == 1


def test_appending_the_same_execution_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    runs = [run("a", i) for i in range(50)]
    with DuckDBHistory(path, batch_rows=7) as h:
        for e in runs + runs[::-1]:  # duplicates inside and across batches
            h.append(e)
        h.flush()
        for e in runs[:10]:
            h.append(e)
        h.flush()
        assert h.count() == 50

    with DuckDBHistory(path) as h:  # raft re-applies the log after a restart
        for e in runs:
            h.append(e)
        h.flush()
        assert h.count() == 50
        assert h.list_executions("a", order="ASC")[0] == runs


def test_reopening_after_a_clean_close_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "data" / "history.duckdb"
    runs = [run("a", i) for i in range(100)]
    with DuckDBHistory(path) as h:
        for e in runs:
            h.append(e)  # no flush: close() must commit the queue

    with DuckDBHistory(path) as h:
        assert h.list_executions("a", order="ASC")[0] == runs
        assert h.query("SELECT version FROM schema_version") == [(1,), (2,), (3,), (4,), (5,)]


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    with DuckDBHistory(path):
        pass
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (99, now())")
    con.close()

    with pytest.raises(DkronError, match="schema version 99.*upgrade dkron-lab"):
        DuckDBHistory(path).open()


# --- flush, batching, bad rows -----------------------------------------------------------


def test_flush_commits_without_waiting_for_the_batch_interval(tmp_path: Path) -> None:
    with DuckDBHistory(tmp_path / "h.duckdb", flush_interval=60, batch_rows=10_000) as h:
        for i in range(500):
            h.append(run("a", i))
        began = time.monotonic()
        h.flush()
        assert time.monotonic() - began < 30  # it did not sit out the 60 s interval
        assert h.count("a") == 500
        h.flush()  # nothing queued: returns at once


def test_flush_from_many_threads(tmp_path: Path) -> None:
    with DuckDBHistory(tmp_path / "h.duckdb", batch_rows=64) as h:
        seen: list[int] = []

        def produce(node: str) -> None:
            for i in range(300):
                h.append(run("a", i, node=node))
            h.flush()
            seen.append(h.count(None))

        threads = [threading.Thread(target=produce, args=(f"n{k}",)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert h.count() == 1200
        assert all(n >= 300 for n in seen)  # each saw at least its own rows after its flush


def test_unencodable_output_is_sanitised_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dkron_lab.history")
    outputs = ["ok", "nul\x00byte", "lone \ud800 surrogate", "pair \ud83d\ude00", "bytes \udcff"]
    with DuckDBHistory(tmp_path / "h.duckdb", flush_interval=30) as h:
        for i, output in enumerate(outputs):
            h.append(run("a", i, output=output))
        h.flush()
        got = [e.output for e in h.list_executions("a", order="ASC")[0]]

    assert got == ["ok", "nul\x00byte", "lone \ufffd surrogate", "pair 😀", "bytes \ufffd"]
    assert not caplog.records  # sanitised up front: the batch never failed


def test_a_bad_row_does_not_lose_the_rest_of_its_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dkron_lab.history")
    bad = run("a", 5, group=2**70)  # does not fit BIGINT
    good = [run("a", i) for i in range(10) if i != 5]
    with DuckDBHistory(tmp_path / "h.duckdb", flush_interval=30) as h:
        for e in good[:5] + [bad] + good[5:]:
            h.append(e)
        h.flush()
        assert h.list_executions("a", order="ASC")[0] == good

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(warnings) == 1 and "batch of 10 writes failed" in warnings[0]
    assert len(errors) == 2
    assert bad.id in errors[0] and "out of range" in errors[0]
    assert "1 of 10 writes in a batch were lost" in errors[1]


# --- retention ---------------------------------------------------------------------------


def test_retention_prunes_at_most_once_a_minute_of_the_clock(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    keep = timedelta(hours=1)
    old = run("a", 0, started_at=T0 - timedelta(hours=3))
    recent = run("a", 1, started_at=T0 - timedelta(minutes=30))
    with DuckDBHistory(tmp_path / "h.duckdb", retention=keep, clock=clock) as h:
        h.append(old)
        h.append(recent)
        h.flush()
        assert h.count() == 2  # opening swept at T0; the next sweep is due at T0 + 1 min

        clock.now = T0 + timedelta(seconds=59)
        h.append(run("a", 2))
        h.flush()
        assert h.count() == 3

        clock.now = T0 + timedelta(seconds=60)
        h.append(run("a", 3))
        h.flush()
        assert h.get_execution("a", old.id) is None
        assert h.count() == 3  # `recent` finished within the hour

        h.append(old)  # an old execution arriving late stays until the next sweep
        h.flush()
        assert h.count() == 4


def test_opening_sweeps_by_retention(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    with DuckDBHistory(path) as h:
        for i in range(10):
            h.append(run("a", i))
    clock = FakeClock(T0 + timedelta(days=1, seconds=5))

    with DuckDBHistory(path, retention=timedelta(days=1), clock=clock) as h:
        # finished_at of run i is T0 + (i + 1) s: runs 0..3 are over a day old
        assert h.count() == 6


# --- concurrency and durability ----------------------------------------------------------


def test_reads_run_while_the_writer_writes(tmp_path: Path) -> None:
    total = 20_000
    errors: list[BaseException] = []
    with DuckDBHistory(tmp_path / "h.duckdb", flush_interval=0.001, batch_rows=500) as h:
        done = threading.Event()

        def write() -> None:
            try:
                for i in range(total):
                    h.append(run(f"job{i % 7}", i))
            finally:
                done.set()

        writer = threading.Thread(target=write)
        writer.start()
        reads, last_total = 0, 0
        try:
            while not done.is_set() or reads < 5:
                page, flags, job_total = h.list_executions("job3", start=0, end=50)
                assert len(page) == len(flags) == min(50, job_total)
                assert job_total >= last_total  # never goes backwards
                assert ids(page) == sorted(ids(page), reverse=True)
                last_total, reads = job_total, reads + 1
        except BaseException as exc:
            errors.append(exc)
        writer.join()
        h.flush()

        assert not errors
        assert h.count() == total
        assert h.count("job3") == len(range(3, total, 7))


CHILD = """
import sys
from datetime import timedelta
from dkron_lab.history.duckdb import DuckDBHistory
from tests.unit.history.test_duckdb_history import run

h = DuckDBHistory(sys.argv[1], flush_interval=10)
h.open()
for i in range(int(sys.argv[2])):
    h.append(run("job", i))
h.flush()
e = h.list_executions("job", end=1)[0][0]
print("flushed", e.started_at.isoformat(), h.query("SELECT current_setting('TimeZone')")[0][0],
      flush=True)
sys.stdin.read()  # never returns: the parent kills us
"""


def test_flushed_writes_survive_kill_9_and_times_ignore_the_machine_zone(tmp_path: Path) -> None:
    path, n = tmp_path / "h.duckdb", 3000
    env = {**os.environ, "TZ": "Pacific/Auckland"}
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(path), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parents[3],
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline().split()
        finally:
            child.kill()  # SIGKILL, by pid
            child.wait(timeout=30)
    assert child.returncode == -9

    last = run("job", n - 1).started_at.isoformat()
    assert line == ["flushed", last, "UTC"]
    with DuckDBHistory(path) as h:
        assert h.count("job") == n
        assert h.list_executions("job", order="ASC", end=n)[0] == [run("job", i) for i in range(n)]


def test_skipped_spans_are_recorded_once_and_deleted_with_their_job(tmp_path: Path) -> None:
    first = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    span = {
        "reason": "superseded",
        "first": first,
        "last": first + timedelta(minutes=9),
        "count": 10,
        "recorded_at": first + timedelta(minutes=10),
    }
    with DuckDBHistory(tmp_path / "h.duckdb") as history:
        history.record_skipped("a", **span)
        history.record_skipped("a", **span)  # re-applied after a restart
        history.record_skipped("ab", **span)
        history.flush()
        assert history.list_skipped("a") == [span]
        history.delete_job("a")
        history.flush()
        assert history.list_skipped("a") == [] and len(history.list_skipped("ab")) == 1
