"""The pure parts behind what the web UI reads: ``GET /v1/executions``'s parameters, the SQL of
the listing and of the run statistics (run on a real DuckDB history), and output read by byte
offset (``model.output``, and the runner's tail that drops its start)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dkron_lab.api.handlers import EXECUTION_PAGE, all_executions_query
from dkron_lab.errors import BadRequest
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.history.queries import ExecutionFilter
from dkron_lab.model.execution import Execution
from dkron_lab.model.output import OutputChunk, read_chunk
from dkron_lab.model.secrets import OutputScrubber
from dkron_lab.runner import _Live

T0 = datetime(2026, 3, 27, 10, tzinfo=UTC)


def arguments(**given: str) -> dict[str, list[bytes]]:
    return {key: [value.encode()] for key, value in given.items()}


# -- parameters -----------------------------------------------------------------------------------


def test_parameters_become_a_filter_and_a_bounded_page() -> None:
    found, query, status = all_executions_query(
        arguments(job="a", node="n1", status="failed", since="2026-03-27T10:00:00+01:00")
    )
    assert found == ExecutionFilter(
        job="a", node="n1", success=False, since=datetime.fromisoformat("2026-03-27T09:00:00Z")
    )
    assert status == "failed" and (query.start, query.end) == (0, EXECUTION_PAGE)
    _, running, status = all_executions_query(arguments(status="running", _start="5"))
    assert status == "running" and (running.start, running.end) == (5, 5 + EXECUTION_PAGE)
    assert all_executions_query(arguments(status="success"))[0].success is True


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"status": "ok"}, "status must be one of success, failed, running"),
        ({"since": "2026-03-27"}, "since must be an RFC3339 time with an offset"),
        ({"since": "2026-03-27T10:00:00Z", "until": "2026-03-27T10:00:00Z"}, "must be after"),
        ({"_start": "10", "_end": "2000"}, "ask for _start=10&_end=1010"),
        ({"_order": "up"}, "_order must be ASC or DESC"),
        ({"output_size_limit": "-1"}, "output_size_limit must be 0 or more"),
    ],
)
def test_bad_parameters_say_what_to_send(given: dict[str, str], says: str) -> None:
    with pytest.raises(BadRequest) as raised:
        all_executions_query(arguments(**given))
    assert says in raised.value.message


# -- the history's SQL ------------------------------------------------------------------------


def run(job: str, minute: int, seconds: float, *, ok: bool = True, node: str = "n1") -> Execution:
    started = T0 + timedelta(minutes=minute)
    return Execution(
        id=f"{minute}-{node}",
        job_name=job,
        node_name=node,
        group=minute,
        started_at=started,
        finished_at=started + timedelta(seconds=seconds),
        success=ok,
        output=f"{job} at {minute}",
    )


@pytest.fixture
def history(tmp_path: Path) -> Iterator[DuckDBHistory]:
    with DuckDBHistory(tmp_path / "history.duckdb") as store:
        for execution in (
            run("a", 0, 1.0),
            run("b", 1, 4.0, ok=False, node="n2"),
            run("a", 2, 3.0, ok=False),
            run("a", 3, 2.0),
        ):
            store.append(execution)
        store.flush()
        yield store


def test_listing_filters_and_pages_every_jobs_executions(history: DuckDBHistory) -> None:
    def ids(found: ExecutionFilter, **page: int) -> tuple[list[str], int]:
        rows, _, total = history.list_all_executions(found, **page)
        return [e.id for e in rows], total

    assert ids(ExecutionFilter()) == (["3-n1", "2-n1", "1-n2", "0-n1"], 4)
    assert ids(ExecutionFilter(job="a", success=False)) == (["2-n1"], 1)
    assert ids(ExecutionFilter(node="n2")) == (["1-n2"], 1)
    window = ExecutionFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert ids(window) == (["2-n1", "1-n2"], 2)
    assert ids(ExecutionFilter(), offset=1, limit=2) == (["2-n1", "1-n2"], 4)
    assert ids(ExecutionFilter(), offset=0, limit=0) == ([], 4)
    rows, cut, _ = history.list_all_executions(
        ExecutionFilter(job="b"), order="ASC", output_size_limit=4
    )
    assert [e.output for e in rows] == ["at 1"] and cut == [True]


def test_run_stats_are_the_last_runs_newest_first_and_the_median(history: DuckDBHistory) -> None:
    stats = history.run_stats(["a", "b", "none"], last=2)
    assert set(stats) == {"a", "b"}
    assert [(r.success, r.duration) for r in stats["a"].last] == [(True, 2.0), (False, 3.0)]
    assert stats["a"].last[0].started_at == T0 + timedelta(minutes=3)
    assert stats["a"].median_duration == 2.0  # of 1, 3, 2
    assert stats["b"].median_duration == 4.0
    assert history.run_stats([]) == {}
    assert history.run_stats(["a"], last=1, window=1)["a"].median_duration == 2.0


# -- output by offset --------------------------------------------------------------------------


def test_a_read_never_splits_a_character() -> None:
    text = "héllo €x".encode()  # é is 2 bytes, € is 3
    assert read_chunk(text, base=0, offset=0, limit=4, ended=False).data == "hél"
    assert read_chunk(text, base=0, offset=2, limit=64, ended=False) == OutputChunk(
        offset=3, next=11, done=False, data="llo €x"
    )
    unfinished = read_chunk(text[:-2], base=0, offset=0, limit=64, ended=False)
    assert (unfinished.data, unfinished.next) == ("héllo ", 7)  # the € has not all arrived


def test_a_read_from_bytes_no_longer_kept_starts_where_they_start() -> None:
    found = read_chunk(b"world", base=6, offset=0, limit=64, ended=True)
    assert found == OutputChunk(offset=6, next=11, done=True, data="world")
    past = read_chunk(b"world", base=6, offset=50, limit=64, ended=True)
    assert past == OutputChunk(offset=11, next=11, done=True, data="")
    assert OutputChunk.from_json(found.to_json()) == found


def test_the_live_tail_counts_what_it_dropped_and_masks_secrets() -> None:
    execution = Execution(id="1-n", job_name="j", node_name="n", group=1, started_at=T0)
    live = _Live(execution, 8, OutputScrubber(frozenset({"hunter2"})))
    live.emit(b"pw=hunt")
    assert live.read(0, 64, ended=False).data == "pw="  # a secret's start is held back
    live.emit(b"er2 and more")
    assert live.dropped == 7 and bytes(live.tail) == b"and more"
    assert live.read(0, 64, ended=False) == OutputChunk(
        offset=7, next=15, done=False, data="and more"
    )
    live.close("exit status 1")
    assert live.read(15, 64, ended=True).data.endswith("status 1")
