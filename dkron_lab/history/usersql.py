"""One user query on one cursor: the statement check, the views, the read-only run, the errors.

Owns what happens to the text of ``POST /v1/sql`` once it has a cursor: it must be exactly one
``SELECT``; it sees ``executions`` (the table plus derived columns), ``jobs`` and ``members`` as
temporary objects of its own cursor, so nothing one query sees or makes reaches another; it
runs inside ``BEGIN TRANSACTION READ ONLY`` (a statement-type check alone lets
``WITH d AS (DELETE ... RETURNING *) SELECT`` and ``nextval`` write) under a :class:`Deadline`
that interrupts that cursor only; and it is read as Arrow, in small batches, up to
``max_rows + 1`` rows or ``max_bytes``. What DuckDB raises becomes the API error that says what
to change (:func:`query_error`). See ``docs/sql.md``.

May call the cursor it is given, :mod:`~dkron_lab.history.limits` and ``dkron_lab.errors``;
pyarrow is imported only when a query runs. The query slots, the spill watch and closing live
in :mod:`~dkron_lab.history.sandbox`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from dkron_lab.errors import DkronError, InvalidQuery, QueryRefused, QueryTimeout, Unavailable
from dkron_lab.history.limits import SqlLimits, is_out_of_memory, out_of_memory, result_too_large

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Deadline", "SqlResult", "jobs_schema", "members_schema", "run_query"]

_SQL_BATCH_ROWS = 2_048  # one DuckDB vector: as fast as a row group, and the byte cap bites early
# What user SQL calls `executions`: the table plus derived columns, as a temporary view of the
# query's own cursor (temporary objects shadow the table of the same name).
_EXECUTIONS_VIEW = """
CREATE OR REPLACE TEMP VIEW executions AS
SELECT id, job_name, node_name, "group", attempt, started_at, finished_at, scheduled_at,
       success, output, cpu_user_seconds, cpu_system_seconds, max_rss_bytes, backfill,
       (epoch_us(finished_at) - epoch_us(started_at)) / 1e6 AS duration_s,
       (epoch_us(started_at) - epoch_us(scheduled_at)) / 1e6 AS lateness_s
FROM {database}.main.executions
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlResult:
    """What :meth:`DuckDBHistory.run_sql` found.

    ``table`` (a ``pyarrow.Table``) holds the first ``max_rows`` rows; ``truncated`` says the
    query had more. ``columns`` are the result's (name, DuckDB type) pairs, in order, e.g.
    ``("started_at", "TIMESTAMP WITH TIME ZONE")``; the Arrow schema has the same names.
    """

    columns: tuple[tuple[str, str], ...]
    table: pa.Table
    truncated: bool


class Deadline:
    """Interrupts the query running on ``cur`` once ``seconds`` have passed, unless the block
    was left before, or at once on ``stop()`` (the history is closing). ``interrupt()`` stops
    only that cursor's query, not the writer's or another query's."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self.stopped = False
        self.preempted = False
        self._cur = cur
        self._lock = threading.Lock()
        self._over = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:  # so the timer cannot touch the cursor once it is being closed
            self._over = True
        self._timer.cancel()

    def stop(self, *, preempted: bool = False) -> None:
        """Interrupt the query: the history is closing, or (``preempted``) its writer needs
        the memory the query holds."""
        with self._lock:
            self.preempted = self.preempted or preempted
            self.stopped = self.stopped or not preempted
            if not self._over:
                self._cur.interrupt()

    def _fire(self) -> None:
        with self._lock:
            if not self._over:
                self.fired = True
                self._cur.interrupt()


def run_query(
    cur: duckdb.DuckDBPyConnection,
    query: str,
    database: str,
    views: Mapping[str, pa.Table],
    max_rows: int,
    deadline: Deadline,
    limits: SqlLimits,
) -> SqlResult:
    """Run ``query`` on ``cur`` over the executions of ``database`` and the Arrow ``views``
    (name to table), read-only, until ``deadline``; raises the API error for what went wrong.
    The views are gone from ``cur`` afterwards, so it can serve the next query."""
    import pyarrow as pa

    try:
        statement = _one_select(cur, query)
        cur.execute(_EXECUTIONS_VIEW.format(database=_identifier(database)))
        for name, table in views.items():
            cur.register(name, table)  # a temporary view of this cursor only
        with deadline:
            # The statement-type check lets DML inside a WITH and nextval() through; a read-only
            # transaction refuses every write to the file (temporary objects stay writable).
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                return _fetch(cur, statement.query, max_rows, limits.max_bytes)
            finally:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
    except (duckdb.Error, OSError, pa.ArrowException) as exc:
        raise query_error(exc, deadline, limits) from None
    finally:
        with contextlib.suppress(duckdb.Error):  # the cursor serves the next query: let go
            for name in views:
                cur.unregister(name)


def _one_select(cur: duckdb.DuckDBPyConnection, query: str) -> Any:
    """The one statement of ``query`` if it is a SELECT, else QueryRefused saying why."""
    statements = cur.extract_statements(query)  # a syntax error raises duckdb's ParserException
    if not statements:
        raise QueryRefused(
            "the query is empty: send one SELECT, e.g. SELECT count(*) FROM executions"
        )
    if len(statements) > 1:
        raise QueryRefused(
            f"the query holds {len(statements)} statements: send exactly one SELECT "
            "(no ';' between statements)"
        )
    kind = statements[0].type
    if kind == duckdb.StatementType.MULTI:
        raise QueryRefused(
            "the query expands into several statements (a PIVOT without an IN list does): list "
            "the values, e.g. PIVOT executions ON success IN (true, false) USING count(*)"
        )
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(
            f"{kind.name} statements are not allowed: SQL here only reads (no INSERT, UPDATE, "
            "DELETE, CREATE, ATTACH, COPY, EXPORT, SET, PRAGMA, INSTALL or LOAD); send one "
            "SELECT over the views executions, jobs and members"
        )
    return statements[0]


def _fetch(
    cur: duckdb.DuckDBPyConnection, query: str, max_rows: int, max_bytes: int | None
) -> SqlResult:
    """Stream the result as Arrow and stop after ``max_rows + 1`` rows: the extra row says
    whether it was truncated, and DuckDB computes no more of it than that. Over ``max_bytes``
    of Arrow data it stops too, with ``QueryTooLarge``."""
    import pyarrow as pa

    relation = cur.sql(query)
    columns = tuple(zip(relation.columns, map(str, relation.types), strict=True))
    reader = relation.to_arrow_reader(min(max_rows + 1, _SQL_BATCH_ROWS))
    batches: list[pa.RecordBatch] = []
    rows = size = 0
    try:
        while rows <= max_rows:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            batches.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
            if max_bytes is not None and size > max_bytes:
                raise result_too_large(max_bytes, rows=rows)
    finally:
        reader.close()  # an open reader blocks its connection
    table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, max_rows)
    return SqlResult(columns=columns, table=table, truncated=rows > max_rows)


def query_error(exc: BaseException, deadline: Deadline, limits: SqlLimits) -> DkronError:
    """The API error for what DuckDB (or Arrow) raised while running user SQL."""
    message = str(exc)
    if deadline.preempted:
        return out_of_memory(limits)
    if deadline.stopped:
        return Unavailable(
            "the query was stopped because this server is shutting down: send it again to "
            "another server, or to this one once it is back"
        )
    if deadline.fired or isinstance(exc, duckdb.InterruptException):
        return QueryTimeout(
            f"the query ran for more than {deadline.seconds:g} s and was stopped: narrow it (a "
            'WHERE on started_at or finished_at skips old data cheaply) or send a larger "timeout"'
        )
    if isinstance(exc, duckdb.OutOfMemoryException | MemoryError) or is_out_of_memory(message):
        return out_of_memory(limits)
    if isinstance(exc, duckdb.PermissionException):
        return QueryRefused(
            f"{message}. SQL here cannot read or write files or URLs: query the views "
            "executions, jobs and members"
        )
    if "read-only mode" in message:
        return QueryRefused(
            f"the query would write ({message}): SQL here only reads, so no INSERT, UPDATE or "
            "DELETE (not even inside WITH) and no nextval(); send a SELECT that only reads"
        )
    if isinstance(exc, duckdb.InternalException | duckdb.FatalException):
        raise exc  # our fault, not the query's: a 500 with the details in the log
    return InvalidQuery(message)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@functools.cache
def jobs_schema() -> pa.Schema:
    """The Arrow schema of the ``jobs`` view (``docs/sql.md``)."""
    import pyarrow as pa

    text, instant, mapping = (
        pa.string(),
        pa.timestamp("us", tz="UTC"),
        pa.map_(pa.string(), pa.string()),
    )
    return pa.schema(
        [
            ("name", text),
            ("displayname", text),
            ("schedule", text),
            ("timezone", text),
            ("executor", text),
            ("executor_config", mapping),
            ("disabled", pa.bool_()),
            ("concurrency", text),
            ("retries", pa.int32()),
            ("parent_job", text),
            ("dependent_jobs", pa.list_(text)),
            ("owner", text),
            ("owner_email", text),
            ("tags", mapping),
            ("metadata", mapping),
            ("catchup", text),
            ("starts_at", instant),
            ("expires_at", instant),
            ("status", text),
            ("success_count", pa.int64()),
            ("error_count", pa.int64()),
            ("last_success", instant),
            ("last_error", instant),
            ("next", instant),
            ("health", text),
            ("health_reason", text),
            ("max_lateness", text),
            ("max_duration", text),
            ("calendar", text),
        ]
    )


@functools.cache
def members_schema() -> pa.Schema:
    """The Arrow schema of the ``members`` view (``docs/sql.md``)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("name", pa.string()),
            ("addr", pa.string()),
            ("port", pa.int32()),
            ("status", pa.string()),
            ("server", pa.bool_()),
            ("leader", pa.bool_()),
            ("tags", pa.map_(pa.string(), pa.string())),
        ]
    )
