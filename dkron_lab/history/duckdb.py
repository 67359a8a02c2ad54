"""Execution history in DuckDB: the only module of dkron-lab that imports ``duckdb``.

Every server keeps every finished execution it applied from the Raft log in one DuckDB file in
its data dir (no per-job cap; retention is a setting). :class:`DuckDBHistory` is the whole
interface:

* **Writes** (``append``, ``delete_job``) never block the caller. They go into one queue and one
  writer thread applies them in the order they were called, in batches (``batch_rows`` writes,
  or whatever arrived within ``flush_interval``), each batch in one transaction. ``flush()``
  blocks until everything queued before it is committed; committed means it survives kill -9
  (DuckDB's WAL).
* **Reads** are thread-safe and run concurrently with the writer, each on its own cursor.
* ``append`` is idempotent by (job name, execution id), Dkron's key, because Raft may re-apply
  entries after a restart.

Choices, measured with ``benchmarks/bench_history.py`` and scratch runs on DuckDB 2.0.1:

* A batch is ONE ``INSERT ... SELECT unnest(?::T[]), ...`` with a typed list parameter per column:
  ~60k rows/s with plain duckdb, against ~3k for ``executemany`` and ~5k for one multi-row
  ``VALUES`` of 2,000 rows (pyarrow/pandas would be faster still but are not dependencies).
  Most of that time is DuckDB converting the Python lists, ~1-2 us per value.
* No primary key (see ``schema.sql``). A duplicate is found by an anti-join on ``id`` restricted
  to rows whose ``started_at`` lies in the batch's span: ids are ``<started ns>-<node>``, so a
  re-applied execution has the same ``started_at``, and zone maps skip every other row group
  (58k rows/s at 5M rows, against 11k rows/s for an unrestricted anti-join). Consequently an
  execution counts as a duplicate when its job name, ``id`` and ``started_at`` all match.
* Output strings are sanitised (lone surrogates become U+FFFD) so that one bad row cannot fail
  its batch; if a batch fails anyway, its writes are retried one by one and each lost write is
  logged with the number lost.
* Retention runs on the writer after a batch, at most once a minute of the injected clock, and
  once when the history is opened.
* Copying history between servers (a server that joined late or installed a Raft snapshot never
  applied the older log entries): ``export_executions`` / ``export_skipped`` read pages of plain
  JSON-able records in a stable key order, resumed from a cursor (the last row's key: there is no
  primary key to page by); ``import_executions`` / ``import_skipped`` queue them through the
  idempotent writes above, so a copied row the log also delivers is stored once.
* **User SQL** (``run_sql``, behind ``POST /v1/sql``) runs in a sandbox that is set up once,
  when the file is opened, because DuckDB's settings are global to the database instance the
  writer shares (``reference/jupyter-spike.md`` section 4): extensions, secrets and Python
  replacement scans are off from ``connect``; then external access (files, URLs) is turned off
  and the configuration locked, so no ``SET`` can undo it, ours included. Each query then runs
  on its own cursor inside ``BEGIN TRANSACTION READ ONLY`` (a statement-type check alone lets
  ``WITH d AS (DELETE ... RETURNING *) SELECT`` and ``nextval`` write), under a timer that
  interrupts that cursor only, and is read as Arrow up to ``max_rows + 1`` rows. The views it
  sees (``executions`` with derived columns, ``jobs``, ``members``) are temporary objects of
  that cursor, so nothing one query sees or makes can reach another. See ``docs/sql.md``.
* **Limits of user SQL** (``SqlLimits``, from ``--sql-*``): DuckDB's ``memory_limit`` is global
  and the writer shares it, so it is the queries' budget plus ``WRITER_RESERVE``, and each
  query's own intermediates (hash tables, sorts) are capped by ``operator_memory_limit``, a
  per-connection setting; since no ``SET`` works once the configuration is locked, the
  ``max_queries`` query cursors are made, limited, when the file is opened, and a query waits
  (up to its timeout) for a free one. Spills go to ``<file>.tmp``, capped by
  ``max_temp_directory_size``. Results are read in small Arrow batches and stop as soon as
  they pass ``max_bytes``. Over any of these is ``QueryTooLarge`` naming the limit, never an
  out-of-memory kill.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from dkron_lab.credentials import keep_private
from dkron_lab.errors import (
    BadRequest,
    DkronError,
    InsufficientStorage,
    InvalidQuery,
    QueryRefused,
    QueryTimeout,
    QueryTooLarge,
    Unavailable,
)
from dkron_lab.model.execution import OUTPUT_CUT, Execution

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "SORT_FIELDS",
    "WRITER_RESERVE",
    "DuckDBHistory",
    "SqlLimits",
    "SqlResult",
    "result_too_large",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

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

# Migration scripts in order; applying the n-th brings a file to schema version n.
_MIGRATIONS: tuple[str, ...] = ("schema.sql", "schema_v2.sql", "schema_v3.sql")
_PRUNE_EVERY = timedelta(minutes=1)
_package_files = resources.files("dkron_lab.history")
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    # A scheduler never downloads extensions; the ones we use (ICU for TIMESTAMPTZ) are built in.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # The user-SQL sandbox (see the module docstring): these can only be set at connect.
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,
}
# Set after the migrations, in this order: once the configuration is locked, no SET works.
_LOCK_DOWN = ("SET enable_external_access = false", "SET lock_configuration = true")

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "VARCHAR"),
    ("job_name", "VARCHAR"),
    ("node_name", "VARCHAR"),
    ('"group"', "BIGINT"),
    ("attempt", "INTEGER"),
    ("started_at", "TIMESTAMPTZ"),
    ("finished_at", "TIMESTAMPTZ"),
    ("scheduled_at", "TIMESTAMPTZ"),
    ("success", "BOOLEAN"),
    ("output", "VARCHAR"),
)
_NAMES = ", ".join(name for name, _ in _COLUMNS)
_NAMES_BUT_OUTPUT = ", ".join(name for name, _ in _COLUMNS if name != "output")
_INSERT = f"""
INSERT INTO executions ({_NAMES})
SELECT * FROM (SELECT {", ".join(f"unnest(?::{t}[]) AS {n}" for n, t in _COLUMNS)}) AS batch
WHERE NOT EXISTS (
    SELECT 1 FROM executions AS e
    WHERE e.started_at BETWEEN ? AND ?
      AND e.id = batch.id AND e.job_name = batch.job_name AND e.started_at = batch.started_at)
"""
_SELECT = f"SELECT {_NAMES} FROM executions"
# Export page order and cursor: unique per stored row, since (job_name, id, started_at) is.
_EXPORT_EXECUTIONS = f"""
SELECT {_NAMES} FROM executions
WHERE ? IS NULL OR (finished_at, job_name, id, started_at) > (?::TIMESTAMPTZ, ?, ?, ?::TIMESTAMPTZ)
ORDER BY finished_at, job_name, id, started_at LIMIT ?
"""
_EXPORT_SKIPPED = """
SELECT job_name, reason, first_at, last_at, count, recorded_at FROM skipped_fires
WHERE ? IS NULL OR (job_name, reason, first_at, last_at) > (?, ?, ?::TIMESTAMPTZ, ?::TIMESTAMPTZ)
ORDER BY job_name, reason, first_at, last_at LIMIT ?
"""
_EXECUTION_KEYS = tuple(name.strip('"') for name, _ in _COLUMNS)
# What user SQL calls `executions`: the table plus derived columns, as a temporary view of the
# query's own cursor (temporary objects shadow the table of the same name).
_EXECUTIONS_VIEW = """
CREATE OR REPLACE TEMP VIEW executions AS
SELECT id, job_name, node_name, "group", attempt, started_at, finished_at, scheduled_at,
       success, output,
       (epoch_us(finished_at) - epoch_us(started_at)) / 1e6 AS duration_s,
       (epoch_us(started_at) - epoch_us(scheduled_at)) / 1e6 AS lateness_s
FROM {database}.main.executions
"""
_SQL_BATCH_ROWS = 2_048  # one DuckDB vector: as fast as a row group, and the byte cap bites early
WRITER_RESERVE = 256 * 1024**2
"""Bytes of DuckDB memory kept beyond ``--sql-memory-limit`` for the history writer."""
_SKIPPED_KEYS = ("job_name", "reason", "first", "last", "count", "recorded_at")


@dataclass(frozen=True, slots=True)
class _Append:
    execution: Execution


@dataclass(frozen=True, slots=True)
class _DeleteJob:
    job_name: str


@dataclass(frozen=True, slots=True)
class _Skipped:
    job_name: str
    reason: str
    first: datetime
    last: datetime
    count: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class _Audit:
    at: datetime
    actor: str
    role: str | None
    remote: str
    method: str
    path: str
    status: int


_Write = _Append | _DeleteJob | _Skipped | _Audit


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlLimits:
    """What user SQL may use (``--sql-memory-limit`` and friends, in bytes).

    ``memory``: all queries' DuckDB memory together (``None``: DuckDB's default, 80 % of RAM);
    ``temp``: their spill files (``None``: DuckDB's default, 90 % of the free disk);
    ``max_bytes``: one result, as Arrow or JSON (``None``: no cap); ``max_queries``: queries at
    once, the rest wait their turn.
    """

    memory: int | None = None
    temp: int | None = None
    max_bytes: int | None = None
    max_queries: int = 2


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


class DuckDBHistory:
    """The execution history of one server, in the DuckDB file at ``path``.

    Lifecycle: ``open()`` creates or migrates the file and starts the writer thread; ``close()``
    commits everything queued, stops the writer and closes the file. Usable as a context manager.

    ``retention``: executions whose ``finished_at`` is older than ``clock() - retention`` are
    deleted (``None`` keeps everything). ``clock`` returns the aware current time; it defaults to
    the system clock and is a parameter so tests can run fake time.

    Writes still queued when the process dies are lost (the writer thread is a daemon); what
    ``flush()`` or ``close()`` returned for is on disk. The queue is unbounded.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval: float = 0.05,
        batch_rows: int = 2000,
        retention: timedelta | None = None,
        clock: Callable[[], datetime] | None = None,
        sql_limits: SqlLimits | None = None,
    ) -> None:
        if batch_rows < 1 or flush_interval < 0:
            raise ValueError("batch_rows must be >= 1 and flush_interval >= 0")
        self._path = Path(path)
        self._flush_interval = flush_interval
        self._batch_rows = batch_rows
        self._retention = retention
        self._clock = clock or (lambda: datetime.now(UTC))
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for writes
        self._done = threading.Condition(self._lock)  # flush() waits here for commits
        self._pending: list[_Write] = []
        self._queued = 0  # writes ever queued (under _lock)
        self._committed = 0  # writes the writer has finished with (under _lock)
        self._flush_to = 0  # a flush() is waiting while this is > _committed
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_prune: datetime | None = None
        # Why the writer cannot commit (full disk, I/O error); it keeps the batch and retries.
        self.storage_fault: str | None = None
        self.storage_retry = 1.0  # seconds between two attempts while ``storage_fault`` is set
        self._database = ""  # DuckDB's name of the file, for the per-query views
        self._queries: set[_Deadline] = set()  # user SQL running now (under _con_lock)
        self._queries_done = threading.Condition(self._con_lock)
        self._sql = sql_limits or SqlLimits()
        if self._sql.max_queries < 1:
            raise ValueError("sql_limits.max_queries must be >= 1")
        # The limited query cursors, free ones only (see "Limits of user SQL" above).
        self._sql_cursors: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def sql_limits(self) -> SqlLimits:
        return self._sql

    # --- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create or migrate the file, prune by retention, start the writer thread."""
        if self._thread is not None:
            raise RuntimeError(f"history {self._path} is already open")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # DuckDB spills there (its default, and --sql-temp-limit's): only we may look inside.
        spill = Path(f"{self._path}.tmp")
        spill.mkdir(mode=0o700, exist_ok=True)
        spill.chmod(0o700)
        con = duckdb.connect(str(self._path), config=_CONFIG | _sql_config(self._path, self._sql))
        try:
            keep_private(self._path, quiet=True)  # history holds every job's output
            # Global, so every cursor returns UTC whatever the machine's zone is.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            _migrate(con, self._clock())
            cursors = _sql_cursors(con, self._sql)  # before the lock: they SET their limit
            for statement in _LOCK_DOWN:
                con.execute(statement)
            (self._database,) = con.execute("SELECT current_database()").fetchall()[0]
            writer = con.cursor()
        except BaseException:
            con.close()
            raise
        self._con = con
        self._sql_cursors = cursors
        self._last_prune = None  # so opening always sweeps by retention
        self._prune_if_due(writer)
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run_writer, args=(writer,), name="dkron-history-writer", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Commit everything queued, stop the writer, close the file. Idempotent."""
        with self._lock:
            thread, self._stopping = self._thread, True
            self._work.notify()
        if thread is not None:
            thread.join()
        with self._con_lock:
            # DuckDB refuses to close a connection while a cursor of it runs a query.
            while self._queries:
                for query in self._queries:
                    query.stop()
                self._queries_done.wait(timeout=0.1)
            while not self._sql_cursors.empty():
                self._sql_cursors.get_nowait().close()
            if self._con is not None:
                self._con.close()
            self._con, self._thread = None, None

    def __enter__(self) -> DuckDBHistory:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- writes ----------------------------------------------------------------------------

    def append(self, execution: Execution) -> None:
        """Queue a finished execution. A second append of the same execution changes nothing."""
        if execution.finished_at is None:
            raise ValueError(
                f"execution {execution.id!r} of job {execution.job_name!r} is still running: "
                "only finished executions (finished_at set) belong in the history"
            )
        self._enqueue(_Append(execution))

    def delete_job(self, job_name: str) -> None:
        """Queue the deletion of every execution (and skipped fire) of exactly ``job_name``."""
        self._enqueue(_DeleteJob(job_name))

    def record_skipped(
        self,
        job_name: str,
        *,
        reason: str,
        first: datetime,
        last: datetime,
        count: int,
        recorded_at: datetime,
    ) -> None:
        """Queue a span of fires not run; recording the same span twice changes nothing."""
        self._enqueue(_Skipped(job_name, reason, first, last, count, recorded_at))

    def record_audit(
        self,
        *,
        at: datetime,
        actor: str,
        role: str | None,
        remote: str,
        method: str,
        path: str,
        status: int,
    ) -> None:
        """Queue one row of the ``audit`` table: a change asked of the API and its answer."""
        audit = _Audit(
            at=at, actor=actor, role=role, remote=remote, method=method, path=path, status=status
        )
        self._enqueue(audit)

    def list_skipped(self, job_name: str) -> list[dict[str, Any]]:
        """The job's skipped spans, newest first."""

        def run(cur: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
            return cur.execute(
                "SELECT reason, first_at, last_at, count, recorded_at FROM skipped_fires "
                "WHERE job_name = ? ORDER BY last_at DESC",
                [job_name],
            ).fetchall()

        keys = ("reason", "first", "last", "count", "recorded_at")
        return [dict(zip(keys, row, strict=True)) for row in self._read(run)]

    def export_executions(
        self, after: Sequence[Any] | None, limit: int
    ) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """One page of every execution, oldest ``finished_at`` first, for another server.

        ``after`` is ``None`` for the first page, else the cursor the previous page returned.
        Returns JSON-able records (times as ISO 8601 strings) and the next cursor, ``None`` once
        the page is the last. The cursor is the last row's (finished_at, job_name, id,
        started_at), so rows written meanwhile neither shift nor repeat the pages.
        """
        rows = self._export(_EXPORT_EXECUTIONS, after, 4, limit)
        records = [_record(_EXECUTION_KEYS, row) for row in rows]
        last = records[-1] if len(records) == limit else None
        cursor = None if last is None else [last[k] for k in _EXECUTION_CURSOR]
        return records, cursor

    def export_skipped(
        self, after: Sequence[Any] | None, limit: int
    ) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """One page of every skipped-fires span, like :meth:`export_executions`; the cursor is
        the last span's (job_name, reason, first, last)."""
        rows = self._export(_EXPORT_SKIPPED, after, 4, limit)
        records = [_record(_SKIPPED_KEYS, row) for row in rows]
        last = records[-1] if len(records) == limit else None
        cursor = None if last is None else [last[k] for k in _SKIPPED_KEYS[:4]]
        return records, cursor

    def _export(
        self, sql: str, after: Sequence[Any] | None, width: int, limit: int
    ) -> list[tuple[Any, ...]]:
        if limit < 1:
            raise BadRequest(f"limit={limit} is not a page size: use 1 or more")
        if after is not None and len(after) != width:
            raise BadRequest(
                f"cursor {list(after)!r} is not one this server returned: pass the 'next' of "
                "the previous page, or null for the first"
            )
        key = list(after) if after is not None else [None] * width
        return self.query(sql, [None if after is None else 1, *key, limit])

    def import_executions(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Queue records from :meth:`export_executions` (of any server); returns how many.

        Executions already stored (same job, id and start) are left as they are."""
        executions = [_execution_from_record(record) for record in records]
        for execution in executions:
            self.append(execution)
        return len(executions)

    def import_skipped(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Queue spans from :meth:`export_skipped`; a span already stored is left as it is."""
        n = 0
        for r in records:
            self.record_skipped(
                str(r["job_name"]),
                reason=str(r["reason"]),
                first=_time(r["first"]),
                last=_time(r["last"]),
                count=int(r["count"]),
                recorded_at=_time(r["recorded_at"]),
            )
            n += 1
        return n

    def flush(self) -> None:
        """Block until every write queued before this call is committed (at once if none).

        Raises ``InsufficientStorage`` while the writer cannot commit (full disk, I/O error):
        the writes are kept and retried, but are not on disk yet."""
        with self._lock:
            target = self._queued
            if self._committed >= target:
                return
            if threading.current_thread() is self._thread:
                raise RuntimeError("flush() called on the history writer thread would deadlock")
            self._flush_to = max(self._flush_to, target)
            self._work.notify()
            while self._committed < target:
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError(f"history writer of {self._path} stopped before flushing")
                if self.storage_fault is not None:
                    raise InsufficientStorage(self.storage_fault)
                self._done.wait(timeout=1.0)

    def _enqueue(self, write: _Write) -> None:
        with self._lock:
            if self._thread is None or self._stopping:
                raise RuntimeError(f"history {self._path} is not open: call open() first")
            self._pending.append(write)
            self._queued += 1
            # The writer only needs waking for its first write or a full batch; otherwise it
            # is busy or its batching deadline will wake it.
            if len(self._pending) == 1 or len(self._pending) >= self._batch_rows:
                self._work.notify()

    # --- reads -----------------------------------------------------------------------------

    def list_executions(
        self,
        job_name: str,
        *,
        sort: str = "",
        order: str = "DESC",
        start: int = 0,
        end: int | None = None,
        output_size_limit: int | None = None,
    ) -> tuple[list[Execution], list[bool], int]:
        """One page of a job's executions, ``[start:end]`` of the sorted list.

        Returns the executions, one ``output_truncated`` flag per execution, and the job's total
        number of executions. ``sort`` is a key of :data:`SORT_FIELDS` (ties are broken by start
        time, then id; NULL ``scheduled_at`` sorts last); ``order`` is ``ASC`` or ``DESC`` (``""``
        means ``DESC``). ``output_size_limit=N`` keeps the last N characters of each output.
        Raises :class:`~dkron_lab.errors.BadRequest` for any other value.
        """
        sql, params = _list_query(job_name, sort, order, start, end, output_size_limit)

        def run(cur: duckdb.DuckDBPyConnection) -> tuple[list[tuple[Any, ...]], int]:
            cur.execute("BEGIN TRANSACTION READ ONLY")  # the page and the total from one snapshot
            try:
                rows = cur.execute(sql, params).fetchall()
                (total,) = cur.execute(
                    "SELECT count(*) FROM executions WHERE job_name = ?", [job_name]
                ).fetchall()[0]
            finally:
                cur.execute("ROLLBACK")
            return rows, total

        rows, total = self._read(run)
        return [_execution(row) for row in rows], [bool(row[10]) for row in rows], int(total)

    def get_execution(self, job_name: str, execution_id: str) -> Execution | None:
        """The execution ``execution_id`` of ``job_name`` with its full output, else ``None``."""
        rows = self.query(
            f"{_SELECT} WHERE job_name = ? AND id = ? LIMIT 1", [job_name, execution_id]
        )
        return _execution(rows[0]) if rows else None

    def count(self, job_name: str | None = None) -> int:
        """Number of executions of ``job_name``, or of all jobs."""
        if job_name is None:
            rows = self.query("SELECT count(*) FROM executions")
        else:
            rows = self.query("SELECT count(*) FROM executions WHERE job_name = ?", [job_name])
        return int(rows[0][0])

    def run_sql(
        self,
        query: str,
        *,
        max_rows: int,
        timeout: float,
        jobs: Sequence[Mapping[str, Any]] = (),
        members: Sequence[Mapping[str, Any]] = (),
    ) -> SqlResult:
        """Run one user ``SELECT``, read-only, over the views of ``docs/sql.md``. Blocking: call
        it in a thread. Writes queued meanwhile carry on; the query sees one snapshot.

        ``jobs`` and ``members`` are the rows of the ``jobs`` and ``members`` views (their keys
        are the columns; a missing key is NULL): they live in the Raft state, not in this file,
        so the caller passes them in. At most ``max_rows`` rows come back; the query is
        interrupted after ``timeout`` seconds. It first waits, up to ``timeout`` too, while
        ``max_queries`` others run.

        Raises :class:`~dkron_lab.errors.QueryRefused` (not exactly one ``SELECT``, or it would
        write, touch files or URLs), :class:`~dkron_lab.errors.InvalidQuery` (DuckDB's
        message), :class:`~dkron_lab.errors.QueryTimeout`,
        :class:`~dkron_lab.errors.QueryTooLarge` (over a limit of ``SqlLimits``), or
        :class:`~dkron_lab.errors.Unavailable` when ``close()`` stops it or no query cursor
        came free in time.
        """
        if max_rows < 0 or timeout <= 0:
            raise ValueError(f"max_rows={max_rows} must be >= 0 and timeout={timeout} > 0")
        import pyarrow as pa  # only SQL needs it: a node that never gets a query saves ~150 ms

        views = {
            "jobs": pa.Table.from_pylist(list(jobs), schema=_jobs_schema()),
            "members": pa.Table.from_pylist(list(members), schema=_members_schema()),
        }
        database = self._database

        cur, deadline = self._start_query(timeout)
        watch = _SpillWatch(self._watch_cursor(), deadline, self._sql.temp)
        try:
            return _run_sandboxed(cur, query, database, views, max_rows, deadline, self._sql)
        finally:
            watch.close()
            with self._con_lock:
                self._sql_cursors.put(cur)
                self._queries.discard(deadline)
                self._queries_done.notify_all()

    def _watch_cursor(self) -> duckdb.DuckDBPyConnection | None:
        """A cursor for ``_SpillWatch`` (None when spill files are not limited)."""
        if self._sql.temp is None:
            return None
        with self._con_lock:
            if self._con is None:
                raise Unavailable(f"history {self._path} is closed: send the query again later")
            return self._con.cursor()

    def _make_room(self) -> None:
        """Stop the user queries; if none runs, give the one that just failed a moment to let
        go of its memory."""
        if not self._preempt_queries():
            time.sleep(0.1)

    def _preempt_queries(self) -> bool:
        """Stop every user query (each answers ``QueryTooLarge``) and wait for them to let go
        of their memory; False if none was running. The writer calls it when DuckDB is out of
        memory: a query must never cost a write."""
        deadline = time.monotonic() + 5.0
        with self._con_lock:
            running = list(self._queries)
            while self._queries and time.monotonic() < deadline:
                for query in self._queries:  # again and again: one may not have begun yet
                    query.stop(preempted=True)
                self._queries_done.wait(timeout=0.05)
        if running:
            logger.warning(
                "history: stopped %d SQL queries to leave memory to the writer", len(running)
            )
        return bool(running)

    def _start_query(self, timeout: float) -> tuple[duckdb.DuckDBPyConnection, _Deadline]:
        """A free query cursor, waiting up to ``timeout`` for one, and its deadline."""
        try:
            cur = self._sql_cursors.get(timeout=timeout)
        except queue.Empty:
            raise Unavailable(
                f"this server is busy: {self._sql.max_queries} SQL queries are running "
                f"(--sql-max-queries) and none finished within this query's timeout of "
                f"{timeout:g} s; send it again later, or to another server"
            ) from None
        with self._con_lock:
            if self._con is None:
                cur.close()
                raise Unavailable(f"history {self._path} is closed: send the query again later")
            deadline = _Deadline(cur, timeout)
            self._queries.add(deadline)
        return cur, deadline

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a fresh cursor and fetch every row. Internal helper for tests and
        benchmarks: it is NOT sandboxed and must never see user SQL."""
        return self._read(lambda cur: cur.execute(sql, list(params)).fetchall())

    def _read(self, run: Callable[[duckdb.DuckDBPyConnection], _T]) -> _T:
        # A DuckDB connection is not thread-safe, its cursors are: one fresh cursor per call
        # (creating one costs ~10 us).
        with self._con_lock:
            if self._con is None:
                raise RuntimeError(f"history {self._path} is not open: call open() first")
            cur = self._con.cursor()
        try:
            return run(cur)
        finally:
            cur.close()

    # --- the writer thread -----------------------------------------------------------------

    def _run_writer(self, cur: duckdb.DuckDBPyConnection) -> None:
        try:
            while True:
                batch, stopping = self._next_batch()
                if batch:
                    self._store(cur, batch)
                    keep_private(Path(f"{self._path}.wal"), quiet=True)  # DuckDB makes new ones
                    self._prune_if_due(cur)
                with self._lock:
                    self._committed += len(batch)
                    self._done.notify_all()
                if stopping and not batch:
                    return
        finally:
            cur.close()

    def _store(self, cur: duckdb.DuckDBPyConnection, batch: list[_Write]) -> None:
        """Commit ``batch``; while the disk refuses it, keep it and retry every
        ``storage_retry`` s (reporting ``storage_fault``, logged once). Closing gives up after
        one more attempt (the executions are still in the Raft log: no snapshot was taken
        meanwhile, since its ``flush()`` failed)."""
        short_of_memory = 0
        while True:
            try:
                _write_batch(cur, batch)
            except _StorageFailure as failure:
                batch = failure.unwritten
                if _out_of_memory_error(failure.reason) and short_of_memory < 3:
                    short_of_memory += 1
                    self._make_room()  # user SQL holds the memory: it gives way, history first
                    continue
                if self._storage_failed(failure.reason, len(batch)):
                    return
                continue
            if self.storage_fault is not None:
                logger.warning("history %s can be written again", self._path)
                self.storage_fault = None
            return

    def _storage_failed(self, reason: str, unwritten: int) -> bool:
        """Report the fault (flush() callers wake and raise), wait; True: give up (closing)."""
        with self._lock:
            if self.storage_fault is None:
                logger.error(
                    "history: cannot commit %d writes to %s (%s); keeping them and retrying "
                    "every %g s", unwritten, self._path, reason, self.storage_retry,
                )  # fmt: skip
            self.storage_fault = (
                f"cannot write the execution history {self._path} ({reason}): free space in "
                f"{self._path.parent} or fix the disk; writes are refused until it can be "
                "written, then resume by themselves"
            )
            self._done.notify_all()
            if self._stopping:
                logger.error("history: closing with %d writes not written", unwritten)
                return True
            self._work.wait(self.storage_retry)
            return False

    def _next_batch(self) -> tuple[list[_Write], bool]:
        """Wait for writes, then up to ``flush_interval`` for a full batch, unless a flush or
        close is waiting; return at most ``batch_rows`` writes and whether to stop."""
        with self._lock:
            while not self._pending and not self._stopping:
                self._work.wait()
            deadline = time.monotonic() + self._flush_interval
            while not self._batch_ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._work.wait(remaining)
            batch = self._pending[: self._batch_rows]
            del self._pending[: self._batch_rows]
            return batch, self._stopping

    def _batch_ready(self) -> bool:
        return (
            len(self._pending) >= self._batch_rows
            or self._stopping
            or self._flush_to > self._committed
        )

    def _prune_if_due(self, cur: duckdb.DuckDBPyConnection) -> None:
        now = self._clock()
        if self._retention is None or not _prune_due(self._last_prune, now):
            return
        self._last_prune = now
        try:
            (deleted,) = cur.execute(
                "DELETE FROM executions WHERE finished_at < ?", [now - self._retention]
            ).fetchall()[0]
        except Exception:
            logger.exception("history: deleting executions older than %s failed", self._retention)
            return
        if deleted:
            logger.info("history: deleted %d executions older than %s", deleted, self._retention)


# --- user SQL --------------------------------------------------------------------------------


class _Deadline:
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

    def __enter__(self) -> _Deadline:
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


class _SpillWatch:
    """Stops the query of ``deadline`` (as out of memory) once the spill files pass ``limit``
    bytes: DuckDB's own cap is higher, and what is left of it belongs to the history writer.
    Polls ``duckdb_temporary_files()`` on ``cur`` from a thread of its own until ``close()``."""

    _POLL = 0.05  # s; DuckDB spills some 300 MB/s here, far less than WRITER_RESERVE per poll

    def __init__(
        self, cur: duckdb.DuckDBPyConnection | None, deadline: _Deadline, limit: int | None
    ) -> None:
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if cur is None or limit is None:
            return
        self._thread = threading.Thread(
            target=self._watch, args=(cur, deadline, limit), name="dkron-sql-spill", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self, cur: duckdb.DuckDBPyConnection, deadline: _Deadline, limit: int) -> None:
        try:
            while not self._done.wait(self._POLL):
                ((spilled,),) = cur.execute(
                    "SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()"
                ).fetchall()
                if spilled > limit:
                    deadline.stop(preempted=True)
                    return
        except duckdb.Error:
            logger.exception("history: cannot watch the spill files of a query")
        finally:
            cur.close()


def _run_sandboxed(
    cur: duckdb.DuckDBPyConnection,
    query: str,
    database: str,
    views: Mapping[str, pa.Table],
    max_rows: int,
    deadline: _Deadline,
    limits: SqlLimits,
) -> SqlResult:
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
        raise _query_error(exc, deadline, limits) from None
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


def result_too_large(max_bytes: int, *, rows: int) -> QueryTooLarge:
    """The error for a result over ``--sql-max-bytes`` (after ``rows`` rows)."""
    return QueryTooLarge(
        f"the result passed {_size(max_bytes)} after {rows} rows, the most this server sends "
        "(--sql-max-bytes): narrow it: select fewer or narrower columns (e.g. left(output, 200) "
        "rather than output), add a LIMIT, aggregate in SQL (count, sum, GROUP BY), or send a "
        'smaller "max_rows"'
    )


def _sql_config(path: Path, limits: SqlLimits) -> dict[str, str | bool | int | float | list[str]]:
    """The global DuckDB settings of ``limits`` (the per-query ones are in _sql_cursors)."""
    config: dict[str, str | bool | int | float | list[str]] = {}
    if limits.memory is not None:
        config["memory_limit"] = f"{limits.memory + WRITER_RESERVE}B"
    if limits.temp is not None:
        # Queries are stopped at limits.temp (_SpillWatch); the rest is the writer's, so that a
        # commit or checkpoint can always evict: a failed checkpoint invalidates the database.
        config["temp_directory"] = f"{path}.tmp"
        config["max_temp_directory_size"] = f"{limits.temp + WRITER_RESERVE}B"
    return config


def _sql_cursors(
    con: duckdb.DuckDBPyConnection, limits: SqlLimits
) -> queue.Queue[duckdb.DuckDBPyConnection]:
    """One cursor per query slot; each query's intermediates get an equal share of the
    memory budget."""
    free: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
    for _ in range(limits.max_queries):
        cur = con.cursor()
        if limits.memory is not None:
            share = max(limits.memory // limits.max_queries, 1024**2)
            cur.execute(f"SET operator_memory_limit = '{share}B'")
        free.put(cur)
    return free


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _out_of_memory_error(message: str) -> bool:
    return "Out of Memory" in message or "failed to offload" in message


def _out_of_memory(limits: SqlLimits) -> QueryTooLarge:
    memory = "DuckDB's default" if limits.memory is None else _size(limits.memory)
    temp = "the free disk" if limits.temp is None else _size(limits.temp)
    return QueryTooLarge(
        f"the query needed more memory than this server gives SQL ({memory}, --sql-memory-limit, "
        f"shared by up to {limits.max_queries} queries) and its spill files ({temp}, "
        "--sql-temp-limit): narrow it: a WHERE on started_at or finished_at, fewer or narrower "
        "columns (a big output column is the usual cause), fewer GROUP BY groups, DISTINCT "
        "values or ORDER BY rows, or a LIMIT"
    )


def _query_error(exc: BaseException, deadline: _Deadline, limits: SqlLimits) -> DkronError:
    """The API error for what DuckDB (or Arrow) raised while running user SQL."""
    message = str(exc)
    if deadline.preempted:
        return _out_of_memory(limits)
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
    if isinstance(exc, duckdb.OutOfMemoryException | MemoryError) or _out_of_memory_error(message):
        return _out_of_memory(limits)
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
def _jobs_schema() -> pa.Schema:
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
        ]
    )


@functools.cache
def _members_schema() -> pa.Schema:
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


# --- the functional core -------------------------------------------------------------------


def _prune_due(last: datetime | None, now: datetime) -> bool:
    return last is None or now - last >= _PRUNE_EVERY


def _migrate(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Bring the file to the newest schema version, one transaction per migration."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    (current,) = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0]
    if current > len(_MIGRATIONS):
        raise DkronError(
            f"history file has schema version {current} but this dkron-lab knows only up to "
            f"{len(_MIGRATIONS)}: upgrade dkron-lab, or move the file away to start a new history"
        )
    for version in range(current + 1, len(_MIGRATIONS) + 1):
        script = _package_files.joinpath(_MIGRATIONS[version - 1]).read_text("utf-8")
        con.begin()
        try:
            con.execute(script)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now])
            con.commit()
        except BaseException:
            con.rollback()
            raise


class _StorageFailure(Exception):
    """The disk refused a commit (not the data): ``unwritten`` must be written again."""

    def __init__(self, reason: str, unwritten: list[_Write]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unwritten = unwritten


_STORAGE_ERRORS = ("No space left", "Could not write", "Failed to commit", "IO Error", "quota",
                   "Out of Memory")  # fmt: skip


def _storage_error(exc: Exception) -> bool:
    return isinstance(exc, OSError | duckdb.IOException) or any(
        marker in str(exc) for marker in _STORAGE_ERRORS
    )


def _write_batch(cur: duckdb.DuckDBPyConnection, batch: list[_Write]) -> None:
    """Apply ``batch`` in one transaction; if that fails, apply each write alone so one bad
    write cannot lose the others. Raises ``_StorageFailure`` (with what is not written yet)
    when the disk refuses a commit: those writes are kept, never dropped."""
    try:
        _in_transaction(cur, batch)
        return
    except Exception as exc:
        if _storage_error(exc):
            raise _StorageFailure(str(exc), batch) from None
        logger.warning(
            "history: a batch of %d writes failed (%s); retrying one by one", len(batch), exc
        )
    lost = 0
    for position, write in enumerate(batch):
        try:
            _in_transaction(cur, [write])
        except Exception as exc:
            if _storage_error(exc):
                raise _StorageFailure(str(exc), batch[position:]) from None
            lost += 1
            logger.error("history: lost %s: %s", _describe(write), exc)
    if lost:
        logger.error("history: %d of %d writes in a batch were lost", lost, len(batch))


def _in_transaction(cur: duckdb.DuckDBPyConnection, writes: list[_Write]) -> None:
    cur.begin()
    try:
        _apply(cur, writes)
        cur.commit()
    except BaseException:
        cur.rollback()
        raise


def _apply(cur: duckdb.DuckDBPyConnection, writes: list[_Write]) -> None:
    """Apply ``writes`` in order, each run of appends as one INSERT."""
    appends: list[Execution] = []
    for write in writes:
        if isinstance(write, _Append):
            appends.append(write.execution)
            continue
        if appends:
            _insert(cur, appends)
            appends = []
        if isinstance(write, _Skipped):
            _insert_skipped(cur, write)
        elif isinstance(write, _Audit):
            cur.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                [write.at, _clean(write.actor), write.role, write.remote, write.method,
                 _clean(write.path), write.status],
            )  # fmt: skip
        else:
            cur.execute("DELETE FROM executions WHERE job_name = ?", [write.job_name])
            cur.execute("DELETE FROM skipped_fires WHERE job_name = ?", [write.job_name])
    if appends:
        _insert(cur, appends)


def _insert_skipped(cur: duckdb.DuckDBPyConnection, skip: _Skipped) -> None:
    cur.execute(
        "INSERT INTO skipped_fires SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM "
        "skipped_fires WHERE job_name = ? AND reason = ? AND first_at = ? AND last_at = ?)",
        [skip.job_name, skip.reason, skip.first, skip.last, skip.count, skip.recorded_at,
         skip.job_name, skip.reason, skip.first, skip.last],
    )  # fmt: skip


def _insert(cur: duckdb.DuckDBPyConnection, executions: list[Execution]) -> None:
    rows = [_row(execution) for execution in _unique(executions)]
    columns = [list(column) for column in zip(*rows, strict=True)]
    started = columns[5]
    cur.execute(_INSERT, [*columns, min(started), max(started)])


def _unique(executions: Iterable[Execution]) -> list[Execution]:
    """The first execution of each (job, id): the anti-join cannot see duplicates inside its
    own batch."""
    first: dict[tuple[str, str], Execution] = {}
    for execution in executions:
        first.setdefault((execution.job_name, execution.id), execution)
    return list(first.values())


def _row(e: Execution) -> tuple[Any, ...]:
    return (
        _clean(e.id),
        _clean(e.job_name),
        _clean(e.node_name),
        e.group,
        e.attempt,
        e.started_at,
        e.finished_at,
        e.scheduled_at,
        e.success,
        _clean(e.output),
    )


def _clean(text: str) -> str:
    """``text`` made encodable as UTF-8: lone surrogates (e.g. from ``surrogateescape``) become
    U+FFFD, valid surrogate pairs are joined. NUL bytes are kept: DuckDB stores them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _describe(write: _Write) -> str:
    if isinstance(write, _Append):
        return f"execution {write.execution.id!r} of job {write.execution.job_name!r}"
    if isinstance(write, _Skipped):
        return f"skipped fires of job {write.job_name!r} from {write.first} to {write.last}"
    if isinstance(write, _Audit):
        return f"audit row {write.method} {write.path} at {write.at}"
    return f"deletion of the executions of job {write.job_name!r}"


def _execution(row: Sequence[Any]) -> Execution:
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
        output=row[9],
    )


_EXECUTION_CURSOR = ("finished_at", "job_name", "id", "started_at")


def _record(keys: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as JSON-able values: aware times become ISO 8601 strings in UTC."""
    return {
        key: value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
        for key, value in zip(keys, row, strict=True)
    }


def _time(text: Any) -> datetime:
    value = datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        raise BadRequest(f"time {text!r} has no zone: send ISO 8601 with an offset")
    return value.astimezone(UTC)


def _execution_from_record(r: Mapping[str, Any]) -> Execution:
    try:
        return Execution(
            id=str(r["id"]),
            job_name=str(r["job_name"]),
            node_name=str(r["node_name"]),
            group=int(r["group"]),
            attempt=int(r["attempt"]),
            started_at=_time(r["started_at"]),
            finished_at=_time(r["finished_at"]),
            scheduled_at=_time(r["scheduled_at"]) if r.get("scheduled_at") else None,
            success=bool(r["success"]),
            output=str(r["output"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"not an exported execution record ({exc!r}): {dict(r)!r:.200}") from None


def _list_query(
    job_name: str, sort: str, order: str, start: int, end: int | None, output_size_limit: int | None
) -> tuple[str, list[Any]]:
    """SQL and parameters for one page of ``list_executions``; raises BadRequest."""
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
