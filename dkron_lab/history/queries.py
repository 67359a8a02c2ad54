"""The SQL the history runs on its own behalf (never user SQL): pure text and parameters.

Owns the batch ``INSERT`` of executions, the page queries of ``list_executions`` with their
checks of ``_sort``, ``_order``, ``_start``, ``_end`` and ``output_size_limit``, and the export
pages that another server resumes from a cursor. May call :mod:`dkron_lab.history.rows` (the
column order), the model and ``dkron_lab.errors``; it runs nothing and imports no DuckDB.

Why the INSERT looks the way it does (measured with ``benchmarks/bench_history.py``): one
``INSERT ... SELECT unnest(?::T[])`` with a typed list per column converts a batch some twenty
times faster than ``executemany``. There is no primary key; a duplicate is found by an
anti-join restricted to rows whose ``started_at`` lies in the batch's span, so DuckDB's zone maps
skip every other row group. An execution therefore counts as stored when its job name, ``id``
and ``started_at`` all match.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    "SORT_FIELDS",
    "list_query",
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
