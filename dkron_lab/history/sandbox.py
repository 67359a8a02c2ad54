"""The user-SQL sandbox of a history file: its settings, its query slots, stopping its queries.

Owns everything about ``POST /v1/sql`` that outlives one query. DuckDB's settings are global to
the database instance the writer shares (``reference/jupyter-spike.md`` section 4), so the
sandbox is set up once, when the file is opened: extensions, secrets and Python replacement
scans are off from ``connect`` (:func:`connect_settings`); the ``max_queries`` query cursors
are made, each with its memory share, while ``SET`` still works (:meth:`Sandbox.open`); then
external access (files, URLs) is turned off and the configuration locked
(:func:`lock_down`), so no ``SET`` can undo it, ours included. A query waits (up to its
timeout) for a free cursor; while it runs, a :class:`_SpillWatch` stops it once its spill files
pass ``--sql-temp-limit``. The writer can stop every query to get its memory back
(:meth:`Sandbox.preempt`), and closing stops them too.

May call the connection it is given (it opens none), :mod:`~dkron_lab.history.usersql` (one
query), :mod:`~dkron_lab.history.limits` and ``dkron_lab.errors``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any

import duckdb

from dkron_lab.errors import Unavailable
from dkron_lab.history.limits import Settings, SqlLimits, global_settings, operator_memory
from dkron_lab.history.usersql import Deadline, SqlResult, jobs_schema, members_schema, run_query

__all__ = ["Sandbox", "connect_settings", "lock_down"]

logger = logging.getLogger(__name__)

# Given at connect; the last three can only be set there.
_CONNECT: Settings = {
    # A scheduler never downloads extensions; the ones we use (ICU for TIMESTAMPTZ) are built in.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,
}
# Set after the migrations, in this order: once the configuration is locked, no SET works.
_LOCK_DOWN = ("SET enable_external_access = false", "SET lock_configuration = true")


def connect_settings(path: Path, limits: SqlLimits) -> Settings:
    """The settings for ``duckdb.connect`` of the history file at ``path``."""
    return _CONNECT | global_settings(path, limits)


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No files or URLs from now on, and no ``SET`` either: call once the file is set up."""
    for statement in _LOCK_DOWN:
        con.execute(statement)


class Sandbox:
    """The query slots of the history file at ``path`` (named in messages).

    ``lock`` guards the connection (making a cursor is not thread-safe) and is shared with the
    history, which makes cursors under it too. ``open(con)`` before :func:`lock_down`;
    ``close()`` stops the running queries and closes the query cursors, not ``con``.
    """

    def __init__(self, path: Path, limits: SqlLimits, lock: threading.Lock) -> None:
        if limits.max_queries < 1:
            raise ValueError("sql_limits.max_queries must be >= 1")
        self._path = path
        self._limits = limits
        self._lock = lock
        self._con: duckdb.DuckDBPyConnection | None = None
        self._database = ""  # DuckDB's name of the file, for the per-query views
        self._running: set[Deadline] = set()  # queries running now (under _lock)
        self._running_done = threading.Condition(lock)
        # The limited query cursors, free ones only.
        self._free: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()

    @property
    def running(self) -> Set[Deadline]:
        """The queries running now (a live view)."""
        return self._running

    def open(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make one cursor per query slot, its intermediates capped to an equal share of the
        memory budget (a per-connection setting: it must be set before the lock-down)."""
        free: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
        share = operator_memory(self._limits)
        for _ in range(self._limits.max_queries):
            cur = con.cursor()
            if share is not None:
                cur.execute(f"SET operator_memory_limit = '{share}B'")
            free.put(cur)
        (database,) = con.execute("SELECT current_database()").fetchall()[0]
        self._free, self._database, self._con = free, database, con

    def close(self) -> None:
        """Stop every running query and close the query cursors."""
        with self._lock:
            # DuckDB refuses to close a connection while a cursor of it runs a query.
            while self._running:
                for query in self._running:
                    query.stop()
                self._running_done.wait(timeout=0.1)
            while not self._free.empty():
                self._free.get_nowait().close()
            self._con = None

    def run(
        self,
        query: str,
        *,
        max_rows: int,
        timeout: float,
        jobs: Sequence[Mapping[str, Any]],
        members: Sequence[Mapping[str, Any]],
    ) -> SqlResult:
        """See :meth:`DuckDBHistory.run_sql`."""
        import pyarrow as pa  # only SQL needs it: a node that never gets a query saves ~150 ms

        views = {
            "jobs": pa.Table.from_pylist(list(jobs), schema=jobs_schema()),
            "members": pa.Table.from_pylist(list(members), schema=members_schema()),
        }
        database = self._database
        cur, deadline = self._start(timeout)
        watch = _SpillWatch(self._watch_cursor(), deadline, self._limits.temp)
        try:
            return run_query(cur, query, database, views, max_rows, deadline, self._limits)
        finally:
            watch.close()
            with self._lock:
                self._free.put(cur)
                self._running.discard(deadline)
                self._running_done.notify_all()

    def preempt(self) -> bool:
        """Stop every user query (each answers ``QueryTooLarge``) and wait for them to let go
        of their memory; False if none was running. The writer calls it when DuckDB is out of
        memory: a query must never cost a write."""
        deadline = time.monotonic() + 5.0
        with self._lock:
            running = list(self._running)
            while self._running and time.monotonic() < deadline:
                for query in self._running:  # again and again: one may not have begun yet
                    query.stop(preempted=True)
                self._running_done.wait(timeout=0.05)
        if running:
            logger.warning(
                "history: stopped %d SQL queries to leave memory to the writer", len(running)
            )
        return bool(running)

    def _start(self, timeout: float) -> tuple[duckdb.DuckDBPyConnection, Deadline]:
        """A free query cursor, waiting up to ``timeout`` for one, and its deadline."""
        try:
            cur = self._free.get(timeout=timeout)
        except queue.Empty:
            raise Unavailable(
                f"this server is busy: {self._limits.max_queries} SQL queries are running "
                f"(--sql-max-queries) and none finished within this query's timeout of "
                f"{timeout:g} s; send it again later, or to another server"
            ) from None
        with self._lock:
            if self._con is None:
                cur.close()
                raise Unavailable(f"history {self._path} is closed: send the query again later")
            deadline = Deadline(cur, timeout)
            self._running.add(deadline)
        return cur, deadline

    def _watch_cursor(self) -> duckdb.DuckDBPyConnection | None:
        """A cursor for ``_SpillWatch`` (None when spill files are not limited)."""
        if self._limits.temp is None:
            return None
        with self._lock:
            if self._con is None:
                raise Unavailable(f"history {self._path} is closed: send the query again later")
            return self._con.cursor()


class _SpillWatch:
    """Stops the query of ``deadline`` (as out of memory) once the spill files pass ``limit``
    bytes: DuckDB's own cap is higher, and what is left of it belongs to the history writer.
    Polls ``duckdb_temporary_files()`` on ``cur`` from a thread of its own until ``close()``."""

    _POLL = 0.05  # s; DuckDB spills some 300 MB/s here, far less than WRITER_RESERVE per poll

    def __init__(
        self, cur: duckdb.DuckDBPyConnection | None, deadline: Deadline, limit: int | None
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

    def _watch(self, cur: duckdb.DuckDBPyConnection, deadline: Deadline, limit: int) -> None:
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
