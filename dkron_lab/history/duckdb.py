"""Execution history in DuckDB: :class:`DuckDBHistory`, the whole interface of the history.

Every server keeps every finished execution it applied from the Raft log in one DuckDB file in
its data dir (no per-job cap; retention is a setting). This module owns opening and closing
that file and the history's public methods; the work is done by the other modules of this
package, the only ones of dkron-lab that speak DuckDB: ``schema`` (tables and migrations),
``writer`` (the writer thread: batches, retries, storage faults, retention), ``queries`` (the
SQL of the history's own reads and inserts), ``rows`` (executions to rows and records and back),
``sandbox`` (user SQL's settings, query slots, stopping queries), ``usersql`` (one user query),
``limits`` (``SqlLimits`` and its errors) and ``results`` (the kernel's side of a result).

* **Writes** (``append``, ``delete_job``, ``record_skipped``, ``record_audit``) never block the
  caller; ``flush()`` blocks until everything queued before it is committed. ``append`` is
  idempotent by (job name, execution id), Dkron's key: Raft may re-apply entries on restart.
* **Reads** are thread-safe and run concurrently with the writer, each on its own cursor.
* **Copying history between servers** (one that joined late or installed a Raft snapshot never
  applied the older log entries): ``export_executions`` / ``export_skipped`` read pages of
  JSON-able records in a stable key order, resumed from a cursor (the last row's key: there is
  no primary key to page by); ``import_executions`` / ``import_skipped`` queue them through the
  idempotent writes, so a copied row the log also delivers is stored once.
* **User SQL** (``run_sql``, behind ``POST /v1/sql``) runs read-only in the sandbox set up when
  the file is opened, within ``SqlLimits`` (see ``sandbox.py`` and ``docs/sql.md``).

May call the modules of this package, ``dkron_lab.credentials``, ``dkron_lab.errors`` and the
model; never the node or the API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import duckdb

from dkron_lab.credentials import keep_private
from dkron_lab.errors import BadRequest
from dkron_lab.history import queries
from dkron_lab.history.limits import WRITER_RESERVE, SqlLimits, result_too_large
from dkron_lab.history.queries import SORT_FIELDS, ExecutionFilter, RunStats
from dkron_lab.history.rows import (
    EXECUTION_CURSOR,
    EXECUTION_KEYS,
    SKIPPED_KEYS,
    TRUNCATED,
    execution_from_record,
    execution_from_row,
    parse_time,
    record,
)
from dkron_lab.history.sandbox import Sandbox, connect_settings, lock_down
from dkron_lab.history.schema import migrate
from dkron_lab.history.usersql import Deadline, SqlResult
from dkron_lab.history.writer import Append, Audit, DeleteJob, Skipped, Writer
from dkron_lab.model.execution import Execution

__all__ = [
    "SORT_FIELDS",
    "WRITER_RESERVE",
    "DuckDBHistory",
    "SqlLimits",
    "SqlResult",
    "result_too_large",
]

_T = TypeVar("_T")


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
        self._clock = clock or (lambda: datetime.now(UTC))
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()
        self._sql = sql_limits or SqlLimits()
        self._sandbox = Sandbox(self._path, self._sql, self._con_lock)
        self._writer = Writer(
            self._path,
            flush_interval=flush_interval,
            batch_rows=batch_rows,
            retention=retention,
            clock=self._clock,
            make_room=self._sandbox.preempt,
        )

    @property
    def path(self) -> Path:
        return self._path

    @property
    def sql_limits(self) -> SqlLimits:
        return self._sql

    @property
    def storage_fault(self) -> str | None:
        """Why the writer cannot commit (full disk, I/O error), else ``None``; it keeps the
        writes and retries."""
        return self._writer.storage_fault

    @property
    def storage_retry(self) -> float:
        """Seconds between two attempts to commit while ``storage_fault`` is set."""
        return self._writer.storage_retry

    @storage_retry.setter
    def storage_retry(self, seconds: float) -> None:
        self._writer.storage_retry = seconds

    # --- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create or migrate the file, prune by retention, start the writer thread."""
        if self._con is not None:
            raise RuntimeError(f"history {self._path} is already open")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # DuckDB spills there (its default, and --sql-temp-limit's): only we may look inside.
        spill = Path(f"{self._path}.tmp")
        spill.mkdir(mode=0o700, exist_ok=True)
        spill.chmod(0o700)
        con = duckdb.connect(str(self._path), config=connect_settings(self._path, self._sql))
        try:
            keep_private(self._path, quiet=True)  # history holds every job's output
            # Global, so every cursor returns UTC whatever the machine's zone is.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            migrate(con, self._clock())
            self._sandbox.open(con)  # before the lock-down: its cursors SET their limit
            lock_down(con)
            writer = con.cursor()
        except BaseException:
            self._sandbox.close()
            con.close()
            raise
        self._con = con
        self._writer.start(writer)

    def close(self) -> None:
        """Commit everything queued, stop the writer, close the file. Idempotent."""
        self._writer.stop()
        self._sandbox.close()
        with self._con_lock:
            if self._con is not None:
                self._con.close()
            self._con = None

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
        self._writer.enqueue(Append(execution))

    def delete_job(self, job_name: str) -> None:
        """Queue the deletion of every execution (and skipped fire) of exactly ``job_name``."""
        self._writer.enqueue(DeleteJob(job_name))

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
        self._writer.enqueue(Skipped(job_name, reason, first, last, count, recorded_at))

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
        audit = Audit(
            at=at, actor=actor, role=role, remote=remote, method=method, path=path, status=status
        )
        self._writer.enqueue(audit)

    def import_executions(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Queue records from :meth:`export_executions` (of any server); returns how many.

        Executions already stored (same job, id and start) are left as they are."""
        executions = [execution_from_record(r) for r in records]
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
                first=parse_time(r["first"]),
                last=parse_time(r["last"]),
                count=int(r["count"]),
                recorded_at=parse_time(r["recorded_at"]),
            )
            n += 1
        return n

    def flush(self) -> None:
        """Block until every write queued before this call is committed (at once if none).

        Raises ``InsufficientStorage`` while the writer cannot commit (full disk, I/O error):
        the writes are kept and retried, but are not on disk yet."""
        self._writer.flush()

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
        sql, params = queries.list_query(job_name, sort, order, start, end, output_size_limit)
        return self._page((sql, params), (queries.COUNT_JOB, [job_name]))

    def list_all_executions(
        self,
        found: ExecutionFilter,
        *,
        sort: str = "",
        order: str = "DESC",
        offset: int = 0,
        limit: int = 100,
        output_size_limit: int | None = None,
    ) -> tuple[list[Execution], list[bool], int]:
        """``limit`` executions from ``offset`` of every job's executions that ``found``
        selects, sorted as :meth:`list_executions` sorts, with their ``output_truncated``
        flags and how many ``found`` selects in all (page and total from one snapshot)."""
        page = queries.list_all_query(found, sort, order, offset, limit, output_size_limit)
        return self._page(page if limit else None, queries.count_all_query(found))

    def _page(
        self, page: tuple[str, list[Any]] | None, count: tuple[str, list[Any]]
    ) -> tuple[list[Execution], list[bool], int]:
        """The executions ``page`` (a query and its parameters; None: none) selects with their
        ``output_truncated`` flags, and the total ``count`` counts, from one snapshot."""

        def run(cur: duckdb.DuckDBPyConnection) -> tuple[list[tuple[Any, ...]], int]:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                rows = cur.execute(*page).fetchall() if page is not None else []
                (total,) = cur.execute(*count).fetchall()[0]
            finally:
                cur.execute("ROLLBACK")
            return rows, total

        rows, total = self._read(run)
        return [execution_from_row(r) for r in rows], [bool(r[TRUNCATED]) for r in rows], int(total)

    def run_stats(
        self, job_names: Sequence[str], *, last: int = 10, window: int = 100
    ) -> dict[str, RunStats]:
        """For each of ``job_names`` that has finished runs: its ``last`` runs, newest first,
        and the median duration of its ``window`` newest runs; one query for every name."""
        if not job_names:
            return {}
        rows = self.query(queries.RUN_STATS, [list(job_names), max(window, last), last])
        return queries.run_stats(rows)

    def ran_instants(self, job_name: str, first: datetime, last: datetime) -> list[datetime]:
        """The instants from ``first`` to ``last`` that a recorded run of ``job_name`` was for
        (what a backfill leaves out); written runs only: ``flush`` first."""
        rows = self.query(queries.RAN_INSTANTS, [job_name, first, last])
        return [row[0].astimezone(UTC) for row in rows]

    def get_execution(self, job_name: str, execution_id: str) -> Execution | None:
        """The execution ``execution_id`` of ``job_name`` with its full output, else ``None``."""
        rows = self.query(queries.GET_EXECUTION, [job_name, execution_id])
        return execution_from_row(rows[0]) if rows else None

    def count(self, job_name: str | None = None) -> int:
        """Number of executions of ``job_name``, or of all jobs."""
        if job_name is None:
            rows = self.query(queries.COUNT)
        else:
            rows = self.query(queries.COUNT_JOB, [job_name])
        return int(rows[0][0])

    def list_skipped(self, job_name: str) -> list[dict[str, Any]]:
        """The job's skipped spans, newest first."""
        keys = ("reason", "first", "last", "count", "recorded_at")
        rows = self.query(queries.LIST_SKIPPED, [job_name])
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def export_executions(
        self, after: Sequence[Any] | None, limit: int
    ) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """One page of every execution, oldest ``finished_at`` first, for another server.

        ``after`` is ``None`` for the first page, else the cursor the previous page returned.
        Returns JSON-able records (times as ISO 8601 strings) and the next cursor, ``None`` once
        the page is the last. The cursor is the last row's (finished_at, job_name, id,
        started_at), so rows written meanwhile neither shift nor repeat the pages.
        """
        rows = self._export(queries.EXPORT_EXECUTIONS, after, 4, limit)
        records = [record(EXECUTION_KEYS, row) for row in rows]
        last = records[-1] if len(records) == limit else None
        cursor = None if last is None else [last[k] for k in EXECUTION_CURSOR]
        return records, cursor

    def export_skipped(
        self, after: Sequence[Any] | None, limit: int
    ) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """One page of every skipped-fires span, like :meth:`export_executions`; the cursor is
        the last span's (job_name, reason, first, last)."""
        rows = self._export(queries.EXPORT_SKIPPED, after, 4, limit)
        records = [record(SKIPPED_KEYS, row) for row in rows]
        last = records[-1] if len(records) == limit else None
        cursor = None if last is None else [last[k] for k in SKIPPED_KEYS[:4]]
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
        return self._sandbox.run(
            query, max_rows=max_rows, timeout=timeout, jobs=jobs, members=members
        )

    @property
    def _queries(self) -> Set[Deadline]:
        """The user queries running now (for tests that wait for one to start)."""
        return self._sandbox.running

    def _preempt_queries(self) -> bool:
        """Stop every user query, as the writer does when DuckDB is out of memory."""
        return self._sandbox.preempt()

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
