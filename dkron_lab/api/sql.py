"""The pure parts of ``POST /v1/sql`` (the resource is ``handlers.Sql``): read-only SQL over
the execution history, answered as Arrow IPC or JSON.

The handler only translates: it parses the body once (``sql_request``), takes the rows of the
``jobs`` and ``members`` views from the node (they live in the Raft state, not in DuckDB), and
hands the query to ``DuckDBHistory.run_sql``, the sandbox. The query and the encoding of its
result run in a small thread pool of their own (``POOL``), never on the IOLoop, and never in
the default executor that the node's own history reads share.

Wire contract (the client codes against it; ``docs/sql.md`` is the user's version):

* Body ``{"query": "<one SELECT>", "max_rows": int (default 100000, at most 1000000),
  "timeout": seconds (default 30, at most 300)}``.
* ``Accept`` containing ``application/vnd.apache.arrow.stream``: an Arrow IPC stream, with
  ``X-Dkron-Truncated: true|false`` and ``X-Dkron-Rows: <n>``.
* Otherwise JSON ``{"columns": [{"name", "type"}], "rows": [[...]], "truncated", "row_count"}``,
  times as ISO 8601 strings.
* Errors: 400 with type ``QueryRefused``, ``InvalidQuery``, ``QueryTimeout`` or
  ``QueryTooLarge`` (over ``--sql-memory-limit``, ``--sql-temp-limit`` or
  ``--sql-max-bytes``: the body is never built past that cap); 503 ``Unavailable`` when
  ``--sql-max-queries`` queries kept running for the whole of the query's timeout.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import textwrap
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dkron_lab import codec
from dkron_lab.errors import BadRequest
from dkron_lab.history.duckdb import result_too_large
from dkron_lab.model import secrets
from dkron_lab.views import JobView

if TYPE_CHECKING:
    import pyarrow as pa

    from dkron_lab.history.duckdb import DuckDBHistory, SqlResult

__all__ = [
    "ARROW_STREAM",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_TIMEOUT",
    "MAX_ROWS",
    "MAX_TIMEOUT",
    "POOL",
    "answer",
    "SqlRequest",
    "encode_arrow",
    "encode_json",
    "job_row",
    "member_row",
    "sql_request",
]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
DEFAULT_MAX_ROWS = 100_000
MAX_ROWS = 1_000_000
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 300.0
_KEYS = ("query", "max_rows", "timeout")
# Threads for queries and their encoding. How many queries run at once is the history's
# --sql-max-queries (DuckDB already spreads one query over every core); the other threads wait
# there, each up to its query's timeout.
POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dkron-sql")
_JSON_CHUNK_ROWS = 2_048  # rows turned into Python values at a time, then into bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlRequest:
    """A ``POST /v1/sql`` body, checked."""

    query: str
    max_rows: int = DEFAULT_MAX_ROWS
    timeout: float = DEFAULT_TIMEOUT


def sql_request(body: Any) -> SqlRequest:
    """The body as a ``SqlRequest``; ``BadRequest`` says what is wrong and what to send."""
    example = '{"query": "SELECT count(*) FROM executions", "max_rows": 1000, "timeout": 30}'
    if not isinstance(body, dict):
        raise BadRequest(f"send a JSON object such as {example}")
    unknown = sorted(set(body) - set(_KEYS))
    if unknown:
        raise BadRequest(f"unknown key(s) {', '.join(unknown)}: use only {', '.join(_KEYS)}")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise BadRequest(f'"query" is required and must be a string of SQL, e.g. {example}')
    return SqlRequest(
        query=query,
        max_rows=_max_rows(body.get("max_rows")),
        timeout=_timeout(body.get("timeout")),
    )


def _max_rows(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_ROWS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROWS:
        raise BadRequest(
            f'"max_rows" must be a whole number from 0 to {MAX_ROWS}, not {value!r} '
            f"(default {DEFAULT_MAX_ROWS}; aggregate in SQL rather than fetch more)"
        )
    return value


def _timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not 0 < number <= MAX_TIMEOUT:
        raise BadRequest(
            f'"timeout" must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, '
            f"not {value!r} (default {DEFAULT_TIMEOUT:g})"
        )
    return float(number)


# -- the views that come from the Raft state -----------------------------------------------------


def job_row(view: JobView) -> dict[str, Any]:
    """One row of the ``jobs`` view (columns in ``docs/sql.md``), secrets masked."""
    job, stats = view.job, view.stats
    return {
        "name": job.name,
        "displayname": job.displayname,
        "schedule": job.schedule,
        "timezone": job.timezone,
        "executor": job.executor,
        "executor_config": secrets.masked_config(job),
        "disabled": job.disabled,
        "concurrency": job.concurrency,
        "retries": job.retries,
        "parent_job": job.parent_job,
        "dependent_jobs": list(view.dependent_jobs),
        "owner": job.owner,
        "owner_email": job.owner_email,
        "tags": dict(job.tags),
        "metadata": dict(job.metadata),
        "catchup": job.catchup,
        "starts_at": job.starts_at,
        "expires_at": job.expires_at,
        "status": stats.status or "untriggered",
        "success_count": stats.success_count,
        "error_count": stats.error_count,
        "last_success": stats.last_success,
        "last_error": stats.last_error,
        "next": view.next_fire,
        "health": view.health[0],
        "health_reason": view.health[2],
        "max_lateness": job.max_lateness,
        "max_duration": job.max_duration,
        "calendar": job.calendar,
    }


def member_row(member: Mapping[str, Any], leader: str | None) -> dict[str, Any]:
    """One row of the ``members`` view from Dkron's Member JSON (``Node.members()``)."""
    tags = dict(member.get("Tags") or {})
    return {
        "name": member.get("Name"),
        "addr": member.get("Addr"),
        "port": member.get("Port"),
        "status": member.get("statusText"),
        "server": tags.get("server") == "true",
        "leader": leader is not None and member.get("Name") == leader,
        "tags": tags,
    }


# -- encoding (off the IOLoop) -------------------------------------------------------------------


def encode_arrow(result: SqlResult, *, max_bytes: int | None = None) -> memoryview:
    """The result as one Arrow IPC stream (schema, then the record batches), in Arrow's own
    buffer: a result of a few hundred MB is not copied once more into ``bytes``. Over
    ``max_bytes`` is ``QueryTooLarge`` (the rows were already capped at that many bytes)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, result.table.schema) as writer:
        writer.write_table(result.table)
    body = memoryview(sink.getvalue())
    if max_bytes is not None and len(body) > max_bytes:
        raise result_too_large(max_bytes, rows=result.table.num_rows)
    return body


def encode_json(result: SqlResult, *, pretty: bool = False, max_bytes: int | None = None) -> bytes:
    """The result as the JSON form of the contract: rows as arrays, in column order;
    ``pretty`` indents by four spaces, as ``?pretty`` does everywhere.

    Rows are encoded a chunk at a time, so the Python values of only one chunk exist at once,
    and the encoding stops with ``QueryTooLarge`` as soon as the body passes ``max_bytes``."""
    dumps = _dumps(pretty)
    head = dumps({"columns": [{"name": name, "type": kind} for name, kind in result.columns]})
    body = bytearray(head[: -2 if pretty else -1].encode())  # the object left open
    body += b',\n    "rows": [' if pretty else b',"rows":['
    table = result.table
    for offset in range(0, table.num_rows if result.columns else 0, _JSON_CHUNK_ROWS):
        chunk = table.slice(offset, _JSON_CHUNK_ROWS)
        columns = [_json_column(chunk.column(i), chunk.schema.field(i).type) for i in
                   range(len(result.columns))]  # fmt: skip
        rows = dumps([list(row) for row in zip(*columns, strict=True)])[1:-1]
        if pretty:
            rows = textwrap.indent(rows.strip("\n"), "    ")
        body += (b",\n" if pretty else b",") if offset else b"\n" if pretty else b""
        body += rows.encode()
        if max_bytes is not None and len(body) > max_bytes:
            raise result_too_large(max_bytes, rows=offset + chunk.num_rows)
    if pretty and table.num_rows and result.columns:
        body += b"\n    "
    tail = {"truncated": result.truncated, "row_count": table.num_rows}
    body += (b"],\n" if pretty else b"],") + dumps(tail)[2 if pretty else 1 :].encode()
    if pretty:
        body += b"\n"
    if max_bytes is not None and len(body) > max_bytes:
        raise result_too_large(max_bytes, rows=table.num_rows)
    return bytes(body)


def _dumps(pretty: bool) -> Callable[[Any], str]:
    if pretty:
        return lambda value: json.dumps(value, ensure_ascii=False, allow_nan=False, indent=4)
    return lambda value: json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )


def _json_column(column: pa.ChunkedArray, kind: pa.DataType) -> list[Any]:
    import pyarrow as pa

    values: list[Any] = column.to_pylist(maps_as_pydicts="lossy")
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_boolean(kind):
        return values  # already JSON: skip the per-value call on the common columns
    return [_json_value(value) for value in values]


def _json_value(value: Any) -> Any:
    """A value from Arrow made JSON-able: ISO 8601 times, finite numbers (else null)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    convert = _CONVERTERS.get(type(value))
    if convert is None:
        convert = next((f for t, f in _CONVERTERS.items() if isinstance(value, t)), str)
    return convert(value)


def _datetime(value: dt.datetime) -> str:
    return value.isoformat() if value.tzinfo is None else str(codec.format_time(value))


def _decimal(value: Decimal) -> int | float | None:
    if not value.is_finite():
        return None
    return int(value) if value == value.to_integral_value() else float(value)


_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    float: lambda v: v if math.isfinite(v) else None,
    dt.datetime: _datetime,
    dt.date: lambda v: v.isoformat(),
    dt.time: lambda v: v.isoformat(),
    dt.timedelta: lambda v: v.total_seconds(),
    Decimal: _decimal,
    bytes: lambda v: base64.b64encode(v).decode("ascii"),
    uuid.UUID: str,
    dict: lambda v: {str(k): _json_value(item) for k, item in v.items()},
    list: lambda v: [_json_value(item) for item in v],
    tuple: lambda v: (  # pyarrow's MonthDayNano (an INTERVAL) is a tuple with names
        {"months": v.months, "days": v.days, "nanoseconds": v.nanoseconds}
        if hasattr(v, "nanoseconds")
        else [_json_value(item) for item in v]
    ),
}


def answer(
    history: DuckDBHistory,
    request: SqlRequest,
    jobs: Sequence[Mapping[str, Any]],
    members: Sequence[Mapping[str, Any]],
    *,
    arrow: bool,
    pretty: bool,
) -> tuple[SqlResult, bytes | memoryview]:
    """Run the query and encode its result: the blocking part of a request, for a thread."""
    result = history.run_sql(
        request.query,
        max_rows=request.max_rows,
        timeout=request.timeout,
        jobs=jobs,
        members=members,
    )
    max_bytes = history.sql_limits.max_bytes
    if arrow:
        return result, encode_arrow(result, max_bytes=max_bytes)
    return result, encode_json(result, pretty=pretty, max_bytes=max_bytes)
