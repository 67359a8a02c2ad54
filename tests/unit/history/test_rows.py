"""Executions as rows and records (history/rows.py), without a database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dkron_lab.errors import BadRequest
from dkron_lab.history import rows
from dkron_lab.model.execution import Execution

T0 = datetime(2026, 12, 7, 9, 30, 0, 250_000, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))


def execution(i: int = 1, **fields: object) -> Execution:
    values: dict[str, object] = {
        "id": f"{i}-node-1",
        "job_name": "backup",
        "node_name": "node-1",
        "group": 1_000 + i,
        "attempt": 2,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=3),
        "scheduled_at": T0 - timedelta(milliseconds=40),
        "success": True,
        "output": f"run {i}",
        **fields,
    }
    return Execution(**values)  # type: ignore[arg-type]


def test_a_row_has_one_value_per_column_in_column_order() -> None:
    row = rows.execution_row(execution())
    assert len(row) == len(rows.COLUMNS) == len(rows.EXECUTION_KEYS)
    assert dict(zip(rows.EXECUTION_KEYS, row, strict=True)) == {
        "id": "1-node-1",
        "job_name": "backup",
        "node_name": "node-1",
        "group": 1_001,
        "attempt": 2,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=3),
        "scheduled_at": T0 - timedelta(milliseconds=40),
        "success": True,
        "cpu_user_seconds": None,
        "cpu_system_seconds": None,
        "max_rss_bytes": None,
        "backfill": None,
        "output": "run 1",
    }
    assert rows.EXECUTION_KEYS[3] == "group"  # quoted in SQL, plain as a key


def test_a_row_read_back_is_the_same_execution_in_utc() -> None:
    original = execution(scheduled_at=None)
    # DuckDB hands times back in the session zone; the history's are UTC whatever it was.
    row = list(rows.execution_row(original))
    row[5], row[6] = row[5].astimezone(PARIS), row[6].astimezone(PARIS)
    back = rows.execution_from_row([*row, "an extra column is ignored"])
    assert back == original
    assert back.started_at.tzinfo is UTC and back.finished_at is not None
    assert back.finished_at.tzinfo is UTC and back.scheduled_at is None


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("plain ascii", "plain ascii"),
        ("naïve café ✓", "naïve café ✓"),
        ("nul\x00byte", "nul\x00byte"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("pair \ud83d\ude00", "pair 😀"),
        ("bytes \udcff", "bytes \ufffd"),
    ],
)
def test_clean_makes_any_string_encodable_and_keeps_the_rest(text: str, stored: str) -> None:
    assert rows.clean(text) == stored
    stored.encode("utf-8")


def test_every_string_of_a_row_is_cleaned() -> None:
    row = rows.execution_row(
        execution(id="\ud800", job_name="j\udcff", node_name="n\ud800", output="o\ud800")
    )
    assert [row[i] for i in (0, 1, 2, -1)] == ["\ufffd", "j\ufffd", "n\ufffd", "o\ufffd"]


def test_unique_keeps_the_first_execution_of_each_job_and_id_in_order() -> None:
    first, second = execution(1, output="first"), execution(2)
    again = execution(1, output="again")
    other_job = execution(1, job_name="other")
    assert rows.unique([first, second, again, other_job]) == [first, second, other_job]
    assert rows.unique([]) == []


# --- records ---------------------------------------------------------------------------------


def test_a_record_is_json_with_times_as_iso_strings_in_utc() -> None:
    record = rows.record(("at", "n", "none"), (T0.astimezone(PARIS), 3, None))
    assert record == {"at": "2026-12-07T09:30:00.250000+00:00", "n": 3, "none": None}
    assert json.loads(json.dumps(record)) == record


def test_a_record_needs_one_key_per_value() -> None:
    with pytest.raises(ValueError):
        rows.record(("a", "b"), (1,))


@pytest.mark.parametrize("scheduled_at", [T0 - timedelta(seconds=1), None])
def test_an_exported_record_imports_as_the_same_execution(scheduled_at: datetime | None) -> None:
    original = execution(scheduled_at=scheduled_at)
    record = rows.record(rows.EXECUTION_KEYS, rows.execution_row(original))
    assert rows.execution_from_record(json.loads(json.dumps(record))) == original


def test_a_record_without_scheduled_at_is_a_run_that_was_not_scheduled() -> None:
    record = rows.record(rows.EXECUTION_KEYS, rows.execution_row(execution()))
    del record["scheduled_at"]
    assert rows.execution_from_record(record).scheduled_at is None


@pytest.mark.parametrize(
    "change",
    [
        {"group": "not a number"},
        {"started_at": "yesterday"},
        {"finished_at": None},
    ],
)
def test_a_record_that_is_not_an_execution_is_a_bad_request(change: dict[str, object]) -> None:
    record = rows.record(rows.EXECUTION_KEYS, rows.execution_row(execution())) | change
    with pytest.raises(BadRequest, match="not an exported execution record"):
        rows.execution_from_record(record)
    del record["id"]
    with pytest.raises(BadRequest, match="KeyError"):
        rows.execution_from_record(record)


def test_parse_time_wants_an_offset_and_answers_in_utc() -> None:
    assert rows.parse_time("2026-12-07T10:30:00.25+01:00") == T0
    assert rows.parse_time("2026-12-07T10:30:00.25+01:00").tzinfo is UTC
    with pytest.raises(BadRequest, match="has no zone"):
        rows.parse_time("2026-12-07T09:30:00")


def test_a_naive_time_in_a_record_is_a_bad_request_naming_it() -> None:
    record = rows.record(rows.EXECUTION_KEYS, rows.execution_row(execution()))
    record["started_at"] = "2026-12-07T09:30:00"
    with pytest.raises(BadRequest, match="has no zone"):
        rows.execution_from_record(record)
