"""Copying history between two real DuckDB files: export pages, import them idempotently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dkron_lab.errors import BadRequest
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.model.execution import Execution, execution_id

T0 = datetime(2024, 12, 20, 2, 0, 0, 123456, tzinfo=UTC)


def run(job: str, i: int, *, finished: datetime | None = None) -> Execution:
    started = T0 + timedelta(seconds=i)
    return Execution(
        id=execution_id(int(started.timestamp()) * 10**9 + i, "n1"),
        job_name=job,
        node_name="n1",
        group=1_734_658_800_001_234_567 + i,
        attempt=1 + i % 2,
        started_at=started,
        finished_at=finished or started + timedelta(seconds=1),
        scheduled_at=started if i % 3 else None,
        success=i % 2 == 0,
        output=f"output {i} \u00e9\n",
    )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[DuckDBHistory, DuckDBHistory]]:
    with (
        DuckDBHistory(tmp_path / "a.duckdb") as source,
        DuckDBHistory(tmp_path / "b.duckdb") as target,
    ):
        yield source, target


def everything(history: DuckDBHistory) -> list[tuple[Any, ...]]:
    return history.query("SELECT * FROM executions ORDER BY job_name, id")


def copy_all(source: DuckDBHistory, target: DuckDBHistory, limit: int) -> int:
    """Pull every page through JSON, as the internal API does; returns the number of pages."""
    after, pages = None, 0
    while True:
        rows, after = source.export_executions(after, limit)
        rows, after = json.loads(json.dumps([rows, after]))
        target.import_executions(rows)
        pages += 1
        if after is None:
            return pages


def test_pages_copy_every_execution_exactly(pair: tuple[DuckDBHistory, DuckDBHistory]) -> None:
    source, target = pair
    # Equal finished_at across jobs and ids: the cursor must still split them without loss.
    same_end = T0 + timedelta(hours=1)
    for i in range(23):
        source.append(run("a" if i % 2 else "b", i, finished=same_end if i < 10 else None))
    source.flush()
    target.append(run("a", 1, finished=same_end))  # already there: must not double
    target.flush()
    assert copy_all(source, target, limit=4) == 6  # 23 rows: 5 full pages, then the rest
    target.flush()
    assert everything(target) == everything(source)
    assert len(everything(target)) == 23


def test_a_second_copy_changes_nothing(pair: tuple[DuckDBHistory, DuckDBHistory]) -> None:
    source, target = pair
    for i in range(7):
        source.append(run("job", i))
    source.flush()
    copy_all(source, target, limit=3)
    copy_all(source, target, limit=100)
    target.flush()
    assert everything(target) == everything(source)


def test_an_empty_history_exports_one_empty_last_page(
    pair: tuple[DuckDBHistory, DuckDBHistory],
) -> None:
    source, _ = pair
    assert source.export_executions(None, 10) == ([], None)
    assert source.export_skipped(None, 10) == ([], None)


def test_skipped_spans_are_copied_once(pair: tuple[DuckDBHistory, DuckDBHistory]) -> None:
    source, target = pair
    for i in range(5):
        source.record_skipped(
            f"job{i % 2}",
            reason="window",
            first=T0 + timedelta(minutes=i),
            last=T0 + timedelta(minutes=i + 1),
            count=i + 2,
            recorded_at=T0 + timedelta(hours=1),
        )
    source.flush()
    after = None
    for _ in range(2):  # twice: the second copy must add nothing
        while True:
            rows, after = source.export_skipped(after, 2)
            target.import_skipped(json.loads(json.dumps(rows)))
            if after is None:
                break
    target.flush()
    spans = "SELECT * FROM skipped_fires ORDER BY job_name, first_at"
    assert target.query(spans) == source.query(spans)
    assert len(target.query(spans)) == 5


def test_bad_pages_are_refused_with_a_reason(pair: tuple[DuckDBHistory, DuckDBHistory]) -> None:
    source, target = pair
    with pytest.raises(BadRequest, match="page size"):
        source.export_executions(None, 0)
    with pytest.raises(BadRequest, match="cursor"):
        source.export_executions(["x"], 10)
    with pytest.raises(BadRequest, match="not an exported execution"):
        target.import_executions([{"id": "1-n"}])
