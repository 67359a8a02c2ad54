"""The history's one writer thread: queued writes, batches, retries, storage faults, retention.

Owns the write queue and the thread that drains it. Writes never block their caller: they are
queued, and the writer applies them in the order they were queued, in batches (``batch_rows``
writes, or whatever arrived within ``flush_interval``), each batch in one transaction.
:meth:`Writer.flush` blocks until everything queued before it is committed; committed means it
survives kill -9 (DuckDB's WAL).

* One bad write cannot fail its batch: strings are made storable first (``rows.clean``), and if
  a batch fails anyway its writes are tried one by one and each lost one is logged.
* A full disk or I/O error loses nothing: the batch is kept and tried again every
  ``storage_retry`` seconds, ``storage_fault`` says why, and ``flush()`` raises
  ``InsufficientStorage`` meanwhile. When DuckDB is out of memory, user SQL gives way first
  (the ``make_room`` callback stops the running queries).
* Retention runs after a batch, at most once a minute of the injected clock, and once at start.

May call the DuckDB cursor it is given (it opens none), :mod:`~dkron_lab.history.rows`,
:mod:`~dkron_lab.history.queries`, ``limits.is_out_of_memory`` and
``dkron_lab.credentials.keep_private``; it knows nothing of user SQL but the callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from dkron_lab.credentials import keep_private
from dkron_lab.errors import InsufficientStorage
from dkron_lab.history.limits import is_out_of_memory
from dkron_lab.history.queries import INSERT_EXECUTIONS
from dkron_lab.history.rows import clean, execution_row, unique
from dkron_lab.model.execution import Execution

__all__ = ["Append", "Audit", "DeleteJob", "Skipped", "Write", "Writer", "insert_executions"]

logger = logging.getLogger(__name__)
_PRUNE_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Append:
    execution: Execution


@dataclass(frozen=True, slots=True)
class DeleteJob:
    job_name: str


@dataclass(frozen=True, slots=True)
class Skipped:
    job_name: str
    reason: str
    first: datetime
    last: datetime
    count: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    at: datetime
    actor: str
    role: str | None
    remote: str
    method: str
    path: str
    status: int


Write = Append | DeleteJob | Skipped | Audit


class Writer:
    """The writer of the history file at ``path`` (named in messages and kept private).

    ``start(cur)`` runs it on ``cur`` until ``stop()``, which commits everything queued first;
    it can be started again. ``make_room`` stops the user queries, returning whether any ran.
    ``retention`` and ``clock``: see :class:`~dkron_lab.history.duckdb.DuckDBHistory`.
    """

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float,
        batch_rows: int,
        retention: timedelta | None,
        clock: Callable[[], datetime],
        make_room: Callable[[], bool],
    ) -> None:
        self._path = path
        self._flush_interval = flush_interval
        self._batch_rows = batch_rows
        self._retention = retention
        self._clock = clock
        self._make_room = make_room
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for writes
        self._done = threading.Condition(self._lock)  # flush() waits here for commits
        self._pending: list[Write] = []
        self._queued = 0  # writes ever queued (under _lock)
        self._committed = 0  # writes the writer has finished with (under _lock)
        self._flush_to = 0  # a flush() is waiting while this is > _committed
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_prune: datetime | None = None
        # Why the writer cannot commit (full disk, I/O error); it keeps the batch and retries.
        self.storage_fault: str | None = None
        self.storage_retry = 1.0  # seconds between two attempts while ``storage_fault`` is set

    def start(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Prune by retention now, then write on ``cur`` (closed when the writer stops)."""
        self._last_prune = None  # so starting always sweeps by retention
        self._prune_if_due(cur)
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(cur,), name="dkron-history-writer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Commit everything queued and stop the thread. Idempotent."""
        with self._lock:
            thread, self._stopping = self._thread, True
            self._work.notify()
        if thread is not None:
            thread.join()
        self._thread = None

    def enqueue(self, write: Write) -> None:
        with self._lock:
            if self._thread is None or self._stopping:
                raise RuntimeError(f"history {self._path} is not open: call open() first")
            self._pending.append(write)
            self._queued += 1
            # The writer only needs waking for its first write or a full batch; otherwise it
            # is busy or its batching deadline will wake it.
            if len(self._pending) == 1 or len(self._pending) >= self._batch_rows:
                self._work.notify()

    def flush(self) -> None:
        """Block until every write queued before this call is committed (at once if none);
        raises ``InsufficientStorage`` while ``storage_fault`` is set."""
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

    def _run(self, cur: duckdb.DuckDBPyConnection) -> None:
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

    def _store(self, cur: duckdb.DuckDBPyConnection, batch: list[Write]) -> None:
        """Commit ``batch``; while the disk refuses it, keep it and retry every
        ``storage_retry`` s (reporting ``storage_fault``, logged once). Stopping gives up after
        one more attempt (the executions are still in the Raft log: no snapshot was taken
        meanwhile, since its ``flush()`` failed)."""
        short_of_memory = 0
        while True:
            try:
                _write_batch(cur, batch)
            except _StorageFailure as failure:
                batch = failure.unwritten
                if is_out_of_memory(failure.reason) and short_of_memory < 3:
                    short_of_memory += 1
                    if not self._make_room():  # user SQL holds the memory: history goes first
                        time.sleep(0.1)  # no query ran: let the failed one let go of its memory
                    continue
                if self._storage_failed(failure.reason, len(batch)):
                    return
                continue
            if self.storage_fault is not None:
                logger.warning("history %s can be written again", self._path)
                self.storage_fault = None
            return

    def _storage_failed(self, reason: str, unwritten: int) -> bool:
        """Report the fault (flush() callers wake and raise), wait; True: give up (stopping)."""
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

    def _next_batch(self) -> tuple[list[Write], bool]:
        """Wait for writes, then up to ``flush_interval`` for a full batch, unless a flush or
        stop is waiting; return at most ``batch_rows`` writes and whether to stop."""
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


# --- applying a batch ------------------------------------------------------------------------


def _prune_due(last: datetime | None, now: datetime) -> bool:
    return last is None or now - last >= _PRUNE_EVERY


class _StorageFailure(Exception):
    """The disk refused a commit (not the data): ``unwritten`` must be written again."""

    def __init__(self, reason: str, unwritten: list[Write]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unwritten = unwritten


_STORAGE_ERRORS = ("No space left", "Could not write", "Failed to commit", "IO Error", "quota",
                   "Out of Memory")  # fmt: skip


def _storage_error(exc: Exception) -> bool:
    return isinstance(exc, OSError | duckdb.IOException) or any(
        marker in str(exc) for marker in _STORAGE_ERRORS
    )


def _write_batch(cur: duckdb.DuckDBPyConnection, batch: list[Write]) -> None:
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


def _in_transaction(cur: duckdb.DuckDBPyConnection, writes: list[Write]) -> None:
    cur.begin()
    try:
        _apply(cur, writes)
        cur.commit()
    except BaseException:
        cur.rollback()
        raise


def _apply(cur: duckdb.DuckDBPyConnection, writes: list[Write]) -> None:
    """Apply ``writes`` in order, each run of appends as one INSERT."""
    appends: list[Execution] = []
    for write in writes:
        if isinstance(write, Append):
            appends.append(write.execution)
            continue
        if appends:
            insert_executions(cur, appends)
            appends = []
        if isinstance(write, Skipped):
            _insert_skipped(cur, write)
        elif isinstance(write, Audit):
            cur.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                [write.at, clean(write.actor), write.role, write.remote, write.method,
                 clean(write.path), write.status],
            )  # fmt: skip
        else:
            cur.execute("DELETE FROM executions WHERE job_name = ?", [write.job_name])
            cur.execute("DELETE FROM skipped_fires WHERE job_name = ?", [write.job_name])
    if appends:
        insert_executions(cur, appends)


def _insert_skipped(cur: duckdb.DuckDBPyConnection, skip: Skipped) -> None:
    cur.execute(
        "INSERT INTO skipped_fires SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM "
        "skipped_fires WHERE job_name = ? AND reason = ? AND first_at = ? AND last_at = ?)",
        [skip.job_name, skip.reason, skip.first, skip.last, skip.count, skip.recorded_at,
         skip.job_name, skip.reason, skip.first, skip.last],
    )  # fmt: skip


def insert_executions(cur: duckdb.DuckDBPyConnection, executions: list[Execution]) -> None:
    """Insert ``executions`` (at least one) with one statement, skipping those stored already;
    the caller owns the transaction."""
    rows = [execution_row(execution) for execution in unique(executions)]
    columns = [list(column) for column in zip(*rows, strict=True)]
    started = columns[5]
    cur.execute(INSERT_EXECUTIONS, [*columns, min(started), max(started)])


def _describe(write: Write) -> str:
    if isinstance(write, Append):
        return f"execution {write.execution.id!r} of job {write.execution.job_name!r}"
    if isinstance(write, Skipped):
        return f"skipped fires of job {write.job_name!r} from {write.first} to {write.last}"
    if isinstance(write, Audit):
        return f"audit row {write.method} {write.path} at {write.at}"
    return f"deletion of the executions of job {write.job_name!r}"
