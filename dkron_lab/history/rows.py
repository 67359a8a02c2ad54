"""Executions as rows and records, in both directions: pure functions, no DuckDB.

Owns the column order of the ``executions`` table as the history writes and reads it
(:data:`COLUMNS`), the conversion of an :class:`~dkron_lab.model.execution.Execution` to a row
tuple and back, and to and from the JSON-able records that servers exchange when one copies
another's history. May call only the model and ``dkron_lab.errors``: everything here can be
tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dkron_lab.errors import BadRequest
from dkron_lab.model.execution import Execution

__all__ = [
    "COLUMNS",
    "EXECUTION_CURSOR",
    "EXECUTION_KEYS",
    "SKIPPED_KEYS",
    "TRUNCATED",
    "clean",
    "execution_from_record",
    "execution_from_row",
    "execution_row",
    "parse_time",
    "record",
    "unique",
]

# (column, DuckDB type) of the executions table, in the order of a row tuple. ``output`` stays
# last: a listed row is these columns, then whether the output was cut (``TRUNCATED``).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "VARCHAR"),
    ("job_name", "VARCHAR"),
    ("node_name", "VARCHAR"),
    ('"group"', "BIGINT"),
    ("attempt", "INTEGER"),
    ("started_at", "TIMESTAMPTZ"),
    ("finished_at", "TIMESTAMPTZ"),
    ("scheduled_at", "TIMESTAMPTZ"),
    ("success", "BOOLEAN"),
    ("cpu_user_seconds", "DOUBLE"),
    ("cpu_system_seconds", "DOUBLE"),
    ("max_rss_bytes", "BIGINT"),
    ("backfill", "VARCHAR"),
    ("output", "VARCHAR"),
)
TRUNCATED = len(COLUMNS)
"""Where a listed row says whether its output was cut (``queries.list_query``)."""
EXECUTION_KEYS = tuple(name.strip('"') for name, _ in COLUMNS)
"""The keys of an exported execution record, in column order."""
EXECUTION_CURSOR = ("finished_at", "job_name", "id", "started_at")
"""The keys of an execution record that make the export cursor (unique per stored row)."""
SKIPPED_KEYS = ("job_name", "reason", "first", "last", "count", "recorded_at")
"""The keys of an exported skipped-fires record; the first four make its cursor."""


def clean(text: str) -> str:
    """``text`` made encodable as UTF-8: lone surrogates (e.g. from ``surrogateescape``) become
    U+FFFD, valid surrogate pairs are joined. NUL bytes are kept: DuckDB stores them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def execution_row(e: Execution) -> tuple[Any, ...]:
    """``e`` as a row of :data:`COLUMNS`, its strings made storable by :func:`clean`."""
    return (
        clean(e.id),
        clean(e.job_name),
        clean(e.node_name),
        e.group,
        e.attempt,
        e.started_at,
        e.finished_at,
        e.scheduled_at,
        e.success,
        e.cpu_user_seconds,
        e.cpu_system_seconds,
        e.max_rss_bytes,
        e.backfill or None,
        clean(e.output),
    )


def execution_from_row(row: Sequence[Any]) -> Execution:
    """The execution of a row of :data:`COLUMNS` (columns after those are ignored)."""
    return Execution(
        id=row[0],
        job_name=row[1],
        node_name=row[2],
        group=row[3],
        attempt=row[4],
        started_at=row[5].astimezone(UTC),
        finished_at=row[6].astimezone(UTC),
        scheduled_at=row[7].astimezone(UTC) if row[7] is not None else None,
        success=row[8],
        cpu_user_seconds=row[9],
        cpu_system_seconds=row[10],
        max_rss_bytes=row[11],
        backfill=row[12] or "",
        output=row[13],
    )


def unique(executions: Iterable[Execution]) -> list[Execution]:
    """The first execution of each (job, id), in order: the writer's anti-join against the
    table cannot see duplicates inside its own batch."""
    first: dict[tuple[str, str], Execution] = {}
    for execution in executions:
        first.setdefault((execution.job_name, execution.id), execution)
    return list(first.values())


def record(keys: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as JSON-able values under ``keys``: aware times become ISO 8601 strings in UTC."""
    return {
        key: value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
        for key, value in zip(keys, row, strict=True)
    }


def parse_time(text: Any) -> datetime:
    """An ISO 8601 time with an offset, in UTC; raises BadRequest for a naive one."""
    value = datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        raise BadRequest(f"time {text!r} has no zone: send ISO 8601 with an offset")
    return value.astimezone(UTC)


def execution_from_record(r: Mapping[str, Any]) -> Execution:
    """The execution of an exported record (see :func:`record`); raises BadRequest when ``r``
    is not one."""
    try:
        return Execution(
            id=str(r["id"]),
            job_name=str(r["job_name"]),
            node_name=str(r["node_name"]),
            group=int(r["group"]),
            attempt=int(r["attempt"]),
            started_at=parse_time(r["started_at"]),
            finished_at=parse_time(r["finished_at"]),
            scheduled_at=parse_time(r["scheduled_at"]) if r.get("scheduled_at") else None,
            success=bool(r["success"]),
            output=str(r["output"]),
            # Not in the records of servers older than schema version 4.
            cpu_user_seconds=_optional(r.get("cpu_user_seconds"), float),
            cpu_system_seconds=_optional(r.get("cpu_system_seconds"), float),
            max_rss_bytes=_optional(r.get("max_rss_bytes"), int),
            backfill=str(r.get("backfill") or ""),  # schema version 5
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"not an exported execution record ({exc!r}): {dict(r)!r:.200}") from None


def _optional(value: Any, kind: type[float] | type[int]) -> Any:
    return None if value is None else kind(value)
