"""The SQL the history runs on its own behalf (never user SQL): pure text and parameters.

Owns the batch ``INSERT`` of executions, the page queries of ``list_executions`` with their
checks of ``_sort``, ``_order``, ``_start``, ``_end`` and ``output_size_limit``, and the export
pages that another server resumes from a cursor, the listing of executions across jobs
(``ExecutionFilter``, ``list_all_query``) and the per-job run statistics of the jobs list
(``RunStats``, ``RUN_STATS``). May call :mod:`dkron_lab.history.rows` (the
column order), the model and ``dkron_lab.errors``; it runs nothing and imports no DuckDB.

Why the INSERT looks the way it does (measured with ``benchmarks/bench_history.py``): one
``INSERT ... SELECT unnest(?::T[])`` with a typed list per column converts a batch some twenty
times faster than ``executemany``. There is no primary key; a duplicate is found by an
anti-join restricted to rows whose ``started_at`` lies in the batch's span, so DuckDB's zone maps
skip every other row group. An execution therefore counts as stored when its job name, ``id``
and ``started_at`` all match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from dkron_lab.errors import BadRequest
from dkron_lab.history.rows import COLUMNS
from dkron_lab.model.execution import OUTPUT_CUT

__all__ = [
    "COUNT",
    "COUNT_JOB",
    "EXPORT_EXECUTIONS",
    "EXPORT_SKIPPED",
    "GET_EXECUTION",
    "INSERT_EXECUTIONS",
    "LIST_SKIPPED",
    "RUN_STATS",
    "SORT_FIELDS",
    "ExecutionFilter",
    "RecentRun",
    "RunStats",
    "count_all_query",
    "list_all_query",
    "list_query",
    "run_stats",
]

# `_sort` values of GET /v1/jobs/:job/executions and the column each one sorts by. "" and "id"
# are Dkron's key order, i.e. start time.
SORT_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "": "started_at",
        "id": "started_at",
        "started_at": "started_at",
        "finished_at": "finished_at",
        "attempt": "attempt",
        "scheduled_at": "scheduled_at",
    }
)

_NAMES = ", ".join(name for name, _ in COLUMNS)
_NAMES_BUT_OUTPUT = ", ".join(name for name, _ in COLUMNS if name != "output")

INSERT_EXECUTIONS = f"""
INSERT INTO executions ({_NAMES})
SELECT * FROM (SELECT {", ".join(f"unnest(?::{t}[]) AS {n}" for n, t in COLUMNS)}) AS batch
WHERE NOT EXISTS (
    SELECT 1 FROM executions AS e
    WHERE e.started_at BETWEEN ? AND ?
      AND e.id = batch.id AND e.job_name = batch.job_name AND e.started_at = batch.started_at)
"""
"""Parameters: one list per column of ``COLUMNS``, then the batch's least and greatest
``started_at``."""

GET_EXECUTION = f"SELECT {_NAMES} FROM executions WHERE job_name = ? AND id = ? LIMIT 1"
RAN_INSTANTS = (
    "SELECT DISTINCT scheduled_at FROM executions "
    "WHERE job_name = ? AND scheduled_at BETWEEN ? AND ?"
)
COUNT = "SELECT count(*) FROM executions"
COUNT_JOB = "SELECT count(*) FROM executions WHERE job_name = ?"
LIST_SKIPPED = (
    "SELECT reason, first_at, last_at, count, recorded_at FROM skipped_fires "
    "WHERE job_name = ? ORDER BY last_at DESC"
)

# Export page order and cursor: unique per stored row, since (job_name, id, started_at) is.
EXPORT_EXECUTIONS = f"""
SELECT {_NAMES} FROM executions
WHERE ? IS NULL OR (finished_at, job_name, id, started_at) > (?::TIMESTAMPTZ, ?, ?, ?::TIMESTAMPTZ)
ORDER BY finished_at, job_name, id, started_at LIMIT ?
"""
EXPORT_SKIPPED = """
SELECT job_name, reason, first_at, last_at, count, recorded_at FROM skipped_fires
WHERE ? IS NULL OR (job_name, reason, first_at, last_at) > (?, ?, ?::TIMESTAMPTZ, ?::TIMESTAMPTZ)
ORDER BY job_name, reason, first_at, last_at LIMIT ?
"""


def list_query(
    job_name: str, sort: str, order: str, start: int, end: int | None, output_size_limit: int | None
) -> tuple[str, list[Any]]:
    """SQL and parameters for one page of ``list_executions``; raises BadRequest.

    A row is the columns of ``COLUMNS`` (output cut to its last ``output_size_limit``
    characters) and then whether the output is truncated."""
    column, direction = _order_by(sort, order)
    _check_page(start, end, output_size_limit)
    params: list[Any]
    cut = "starts_with(output, ?)"  # cut to --output-limit when it ran (execution.mark_cut)
    if output_size_limit is None:
        output, params = f"output, {cut}", [OUTPUT_CUT]
    else:
        output = f"right(output, ?), length(output) > ? OR {cut}"
        params = [output_size_limit, output_size_limit, OUTPUT_CUT]
    sql = (
        f"SELECT {_NAMES_BUT_OUTPUT}, {output} FROM executions WHERE job_name = ?"
        f" ORDER BY {column} {direction} NULLS LAST, started_at {direction}, id {direction}"
    )
    params.append(job_name)
    if end is not None:
        sql += " LIMIT ?"
        params.append(end - start)
    return f"{sql} OFFSET ?", [*params, start]


def _order_by(sort: str, order: str) -> tuple[str, str]:
    if sort not in SORT_FIELDS:
        allowed = ", ".join(repr(name) for name in SORT_FIELDS)
        raise BadRequest(f"cannot sort executions by _sort={sort!r}: use one of {allowed}")
    direction = order.upper() or "DESC"
    if direction not in ("ASC", "DESC"):
        raise BadRequest(f"_order={order!r} is not an order: use ASC or DESC")
    return SORT_FIELDS[sort], direction


def _check_page(start: int, end: int | None, output_size_limit: int | None) -> None:
    if start < 0:
        raise BadRequest(f"_start={start} is negative: use 0 or more")
    if end is not None and end < start:
        raise BadRequest(f"_end={end} is before _start={start}: use _end >= _start")
    if output_size_limit is not None and output_size_limit < 0:
        raise BadRequest(f"output_size_limit={output_size_limit} is negative: use 0 or more")


# -- executions across jobs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionFilter:
    """Which executions ``GET /v1/executions`` lists: every given field must match.

    ``success``: ``True`` for succeeded runs, ``False`` for failed ones, ``None`` for both;
    ``since``/``until``: ``since <= started_at < until`` (aware times)."""

    job: str | None = None
    node: str | None = None
    success: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def _where(found: ExecutionFilter) -> tuple[str, list[Any]]:
    tests = (
        ("job_name = ?", found.job),
        ("node_name = ?", found.node),
        ("success = ?", found.success),
        ("started_at >= ?", found.since),
        ("started_at < ?", found.until),
    )
    given = [(test, value) for test, value in tests if value is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(test for test, _ in given), [value for _, value in given]


def list_all_query(
    found: ExecutionFilter,
    sort: str,
    order: str,
    offset: int,
    limit: int,
    output_size_limit: int | None,
) -> tuple[str, list[Any]]:
    """SQL and parameters for ``limit`` rows from ``offset`` of the executions ``found``
    selects, in the row shape of ``list_query``; raises BadRequest."""
    column, direction = _order_by(sort, order)
    _check_page(offset, offset + limit, output_size_limit)
    cut = "starts_with(output, ?)"
    params: list[Any]
    if output_size_limit is None:
        output, params = f"output, {cut}", [OUTPUT_CUT]
    else:
        output = f"right(output, ?), length(output) > ? OR {cut}"
        params = [output_size_limit, output_size_limit, OUTPUT_CUT]
    where, values = _where(found)
    sql = (
        f"SELECT {_NAMES_BUT_OUTPUT}, {output} FROM executions{where}"
        f" ORDER BY {column} {direction} NULLS LAST, started_at {direction}, id {direction}"
        " LIMIT ? OFFSET ?"
    )
    return sql, [*params, *values, limit, offset]


def count_all_query(found: ExecutionFilter) -> tuple[str, list[Any]]:
    """SQL and parameters counting the executions ``found`` selects."""
    where, values = _where(found)
    return f"SELECT count(*) FROM executions{where}", values


# -- run statistics of the jobs list ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentRun:
    """One finished run as the jobs list sums it up; ``duration`` in seconds."""

    success: bool
    started_at: datetime
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStats:
    """A job's last runs, newest first, and the median duration (seconds) of its last
    ``window`` runs (``None`` when it never finished a run here)."""

    last: tuple[RecentRun, ...] = ()
    median_duration: float | None = None


RUN_STATS = """
WITH recent AS (
    SELECT job_name, success, started_at,
           date_diff('microsecond', started_at, finished_at) / 1e6 AS duration,
           row_number() OVER (PARTITION BY job_name ORDER BY started_at DESC, id DESC) AS n
    FROM executions
    WHERE job_name IN (SELECT unnest(?::VARCHAR[]))
    QUALIFY n <= ?
)
SELECT job_name,
       list({'success': success, 'started_at': started_at, 'duration': duration} ORDER BY n)
           FILTER (WHERE n <= ?),
       median(duration)
FROM recent GROUP BY job_name
"""
"""Parameters: the job names, the median's window, the number of last runs. One scan for a
whole page of jobs; each job's runs come newest first."""


def run_stats(rows: Sequence[Sequence[Any]]) -> dict[str, RunStats]:
    """``RUN_STATS`` rows as ``RunStats`` by job name."""
    return {
        str(name): RunStats(
            last=tuple(_recent(run) for run in runs or ()),
            median_duration=float(median) if median is not None else None,
        )
        for name, runs, median in rows
    }


def _recent(run: Mapping[str, Any]) -> RecentRun:
    return RecentRun(
        success=bool(run["success"]),
        started_at=run["started_at"].astimezone(UTC),
        duration=float(run["duration"]),
    )
