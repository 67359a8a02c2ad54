"""The raft thread: the loop that drives pysyncobj, and its bridge back to asyncio.

One raft thread per node drives pysyncobj (``autoTick=False``): it ticks again at once while a
tick can make progress without the network (entries to apply, a leader's entries that a
majority already holds), otherwise it sleeps in ``poll`` until a message, a wake-up from
``submit`` (a socket pair) or ``tick_period``. Results go back to the submitting loop with
``call_soon_threadsafe``, batched per round of applied entries. Snapshots are written
synchronously on the raft thread. While the journal holds records it could not write (a full
disk, an I/O error) the raft thread does not tick, so nothing unwritten is counted, applied or
acknowledged; ``storage_fault`` says why and ``submit`` raises ``InsufficientStorage`` until a
retry (every ``STORAGE_RETRY`` s) writes them. Every submit has a deadline (B6).

Owns: ``_RaftThread`` (the mixin ``RaftNode`` inherits its thread half from), the wake pipe,
the pending commands and their settling, storage-fault handling, and the view the cheap
properties read. May call: the core (``_core``), the journal, the state machine (holding
``machine.lock``), ``failures`` and ``membership``'s call type; the asyncio loops of
submitters only through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dkron_lab.errors import (
    ClusterError,
    DkronError,
    InsufficientStorage,
    NotLeaderError,
    ReplicationTimeout,
)
from dkron_lab.state.raft._core import _Core
from dkron_lab.state.raft._pysyncobj import FAIL_REASON, POLL_EVENT_TYPE, SyncObj
from dkron_lab.state.raft.failures import _FENCE_LOST, _STOPPED, _failure, _leader_of
from dkron_lab.state.raft.journal import RaftData, RaftJournal, read_snapshot, write_snapshot
from dkron_lab.state.raft.membership import _Call
from dkron_lab.state.raft.protocol import StateMachine
from dkron_lab.state.raft.settings import RaftSettings

logger = logging.getLogger(__name__)

_FEED_BATCH = 1000  # commands handed to pysyncobj per tick; keeps its notify pipe from filling
_STATES = {0: "follower", 1: "candidate", 2: "leader"}
STORAGE_RETRY = 1.0  # seconds between two attempts to write what a full disk refused


class _RaftThread:
    """The raft-thread half of ``RaftNode``: everything that runs on the thread that drives
    pysyncobj, and the wake-up and bookkeeping the asyncio side shares with it. ``RaftNode``
    sets every attribute below in its ``__init__``."""

    _settings: RaftSettings
    _machine: StateMachine
    _on_leadership: Callable[[bool, int], None] | None
    _core: _Core | None
    _journal: RaftJournal | None
    _thread: threading.Thread | None
    _wake_r: socket.socket | None
    _wake_w: socket.socket | None
    _wake_pending: bool
    _stopping: bool
    _fatal: str | None
    _inbox: deque[_Pending]
    _outstanding: set[_Pending]
    _done: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Any]]
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]
    _waiters_lock: threading.Lock
    _view: _View
    _leadership: tuple[bool, int]
    _next_sweep: float
    _calls: deque[_Call]
    _hold_until: float
    _storage_fault: str | None
    _snapshot_fault: str | None
    _compactions_seen: int
    _storage_retry_at: float

    # -- the raft thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._guarded(self._first_tick)
        while not self._stopping:
            self._guarded(self._iterate)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except InsufficientStorage as exc:
            self._storage_failed(str(exc))
        except Exception:
            logger.exception("raft tick failed; retrying")
            time.sleep(self._settings.tick_period)

    def _first_tick(self) -> None:
        core = self._require_core()
        core._dk_raft_thread = threading.get_ident()
        core._dk_after_apply = self._flush_done
        core.doTick(0.0)  # loads the snapshot and applies the committed journal
        if core.selfNode is not None and not core.otherNodes:
            # The only voter has nobody to wait for: elect now, not after 0.4-1.4 s.
            core._SyncObj__raftElectionDeadline = 0.0
        self._after_tick(core)

    def _iterate(self) -> None:
        core, journal = self._require_core(), self._require_journal()
        if journal.fault is not None and not self._retry_journal(core, journal):
            return  # no tick while the journal holds what it could not write
        journal.sync()  # the last tick's appends are on disk before anything counts them
        self._run_calls(core)
        self._feed(core)
        mark = (journal.last_index, core.raftCommitIndex, core.raftLastApplied)
        core.doTick(0.0)
        core.close_snapshot_files()
        self._after_tick(core)
        if self._storage_fault is not None:
            self._storage_recovered(core, journal)
        if self._stopping or self._calls or self._feedable() or _queued(core):
            return
        moved = mark != (journal.last_index, core.raftCommitIndex, core.raftLastApplied)
        if not _can_progress_alone(core, journal, moved):
            core._poller.poll(self._settings.tick_period)  # until a message, a wake-up or a timer

    # -- a full disk or an I/O error (raft thread) -----------------------------------------------

    @property
    def storage_fault(self) -> str | None:
        """Why this node cannot write its raft data (full disk, I/O error), or None. While
        set, ``submit`` raises ``InsufficientStorage``; it clears by itself once a retry
        (every ``STORAGE_RETRY`` s) writes what was refused."""
        return self._storage_fault

    def _storage_failed(self, message: str) -> None:
        """A journal, meta, snapshot or compaction write failed: refuse writes, fail the
        waiting ones, log once. Nothing acknowledged is lost: what was refused stays pending in
        the journal, and no tick runs (nothing is counted, applied or acknowledged) until it is
        written."""
        if self._storage_fault is None:
            logger.error("%s; retrying every %g s (reads are still served)", message, STORAGE_RETRY)
        self._storage_fault = message
        self._storage_retry_at = time.monotonic() + STORAGE_RETRY
        journal = self._require_journal()
        if journal.fault is None:  # a snapshot or compaction: retried by a new one
            self._snapshot_fault, self._compactions_seen = message, journal.compactions
        self._fail_waiting(message)

    def _fail_waiting(self, message: str) -> None:
        unsent = InsufficientStorage(f"{message}; nothing was written")
        while self._inbox:
            pending = self._inbox.popleft()
            self._done.append((pending.loop, pending.future, unsent))
        maybe = InsufficientStorage(
            f"{message}; this write was not acknowledged and may still be applied once it can "
            "be written - re-read the state before retrying"
        )
        for pending in self._outstanding:
            self._done.append((pending.loop, pending.future, maybe))
        self._outstanding.clear()
        self._flush_done()

    def _retry_journal(self, core: _Core, journal: RaftJournal) -> bool:
        """Once per ``STORAGE_RETRY``: write what the journal holds. True once it could."""
        now = time.monotonic()
        if now < self._storage_retry_at:
            time.sleep(min(self._storage_retry_at - now, self._settings.tick_period))
            return False
        self._storage_retry_at = now + STORAGE_RETRY
        journal.sync()  # raises InsufficientStorage while it still cannot
        # The node stood still: a follower must not call an election for that time alone.
        timeout = core._SyncObj__generateRaftTimeout()
        core._SyncObj__raftElectionDeadline = time.monotonic() + timeout
        return True

    def _storage_recovered(self, core: _Core, journal: RaftJournal) -> None:
        if journal.fault is not None:
            return
        if self._snapshot_fault is not None and journal.compactions == self._compactions_seen:
            if time.monotonic() >= self._storage_retry_at:
                core._SyncObj__forceLogCompaction = True  # the next tick tries the snapshot
            return
        self._snapshot_fault = None  # a snapshot was written and the journal compacted
        logger.warning(
            "raft data in %s can be written again; writes are acknowledged again",
            self._settings.data_dir,
        )
        self._storage_fault = None

    def _feedable(self) -> bool:
        return bool(self._inbox) and not self._holding()

    def _holding(self) -> bool:
        return bool(self._hold_until) and time.monotonic() < self._hold_until

    def _feed(self, core: _Core) -> None:
        if self._holding():
            return  # a leadership transfer waits for the followers to catch up (L3)
        self._wake_pending = False  # before draining: a later submit must write a new wake-up
        for _ in range(_FEED_BATCH):
            try:
                pending = self._inbox.popleft()
            except IndexError:
                return
            self._feed_one(core, pending)

    def _feed_one(self, core: _Core, pending: _Pending) -> None:
        if pending.fenced and not core._isLeader():
            error = NotLeaderError("this node is not the leader", leader=_leader_of(core))
            self._done.append((pending.loop, pending.future, error))
            return
        pending.term = core.raftCurrentTerm
        self._outstanding.add(pending)
        core._applyCommand(pending.payload, functools.partial(self._on_result, pending))

    def _run_calls(self, core: _Core) -> None:
        while self._calls:
            step, loop, future = self._calls.popleft()
            settle = functools.partial(self._settle, loop, future)
            try:
                step(core, settle)
            except Exception as exc:  # a broken step must fail its caller, not the raft thread
                logger.exception("raft call failed")
                settle(exc)

    def _settle(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], outcome: Any
    ) -> None:
        self._done.append((loop, future, outcome))  # posted to the loop after the tick

    def _on_result(self, pending: _Pending, result: Any, error: int) -> None:
        self._outstanding.discard(pending)
        self._done.append((pending.loop, pending.future, self._outcome(pending, result, error)))

    def _outcome(self, pending: _Pending, result: Any, error: int) -> Any:
        core = self._require_core()
        if error == FAIL_REASON.SUCCESS:
            if not pending.fenced or (core.raftCurrentTerm == pending.term and core._isLeader()):
                return result
            return NotLeaderError(_FENCE_LOST, leader=_leader_of(core))
        return _failure(core, error)

    def _after_tick(self, core: _Core) -> None:
        self._flush_done()
        view = self._read_view(core)
        if view != self._view:
            self._view = view
            self._notify_leadership(view)
        if self._waiters and (view.ready or self._fatal):
            self._release_waiters(ClusterError(self._fatal) if self._fatal else None)
        if self._fatal:
            self._stopping = True
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            # B6: pysyncobj may never call back; their futures have long timed out.
            self._outstanding = {p for p in self._outstanding if p.deadline > now}

    def _read_view(self, core: _Core) -> _View:
        state = _STATES.get(core._SyncObj__raftState, "follower")
        leader = _leader_of(core)
        commit, applied = core.raftCommitIndex, core.raftLastApplied
        return _View(
            state=state,
            leader=leader,
            term=core.raftCurrentTerm,
            commit_index=commit,
            applied_index=applied,
            ready=leader is not None and self._caught_up(core, state, commit, applied),
        )

    def _caught_up(self, core: _Core, state: str, commit: int, applied: int) -> bool:
        if state == "leader":
            # Entries of older terms only count as committed once the leader's first entry is.
            term_applied = self._require_journal().entry_term(applied)
            return applied >= commit and term_applied == core.raftCurrentTerm
        leader_commit = core._SyncObj__leaderCommitIndex
        return leader_commit is not None and applied >= leader_commit

    def _notify_leadership(self, view: _View) -> None:
        leadership = (view.state == "leader", view.term)
        if leadership == self._leadership:
            return
        self._leadership = leadership
        if self._on_leadership is not None:
            try:
                self._on_leadership(*leadership)
            except Exception:
                logger.exception("on_leadership callback failed")

    def _flush_done(self) -> None:
        if not self._done:
            return
        done, self._done = self._done, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for loop, future, outcome in done:
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, items in by_loop.items():
            _post(loop, items)

    def _release_waiters(self, outcome: ClusterError | None) -> None:
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            _post(loop, [(waiter, outcome)])

    # -- pysyncobj hooks (raft thread) -----------------------------------------------------------

    def _apply_payload(self, payload: bytes) -> dict[str, Any]:
        try:
            command = json.loads(payload.decode())
        except ValueError:  # includes UnicodeDecodeError
            return {"error": "the raft log holds a command that is not JSON"}
        with self._machine.lock:
            try:
                return self._machine.apply(command)
            except Exception as exc:  # the contract says never; keep the log moving if it does
                logger.exception("state machine apply raised; it must return {'error': ...}")
                return {"error": f"apply raised {exc!r}"}

    def _write_snapshot(self, file_name: str, raft: RaftData) -> None:
        """pysyncobj's serializer; a failure (also of the history flush that runs first, the
        guard that the log is not compacted past executions the history lacks) leaves the
        journal uncompacted, refuses writes and is retried once per ``STORAGE_RETRY``."""
        if self._snapshot_fault is not None and time.monotonic() < self._storage_retry_at:
            raise InsufficientStorage(self._snapshot_fault)  # pysyncobj retries every tick
        fsync = self._settings.fsync != "never"
        try:
            with self._machine.lock:
                write_snapshot(file_name, self._machine.snapshot(), raft, fsync=fsync)
        except DkronError as exc:
            Path(file_name).unlink(missing_ok=True)
            self._storage_failed(f"cannot take a raft snapshot: {exc}")
            raise

    def _read_snapshot(self, file_name: str) -> RaftData:
        try:
            state, raft = read_snapshot(file_name)
            with self._machine.lock:
                self._machine.restore(state)
            self._require_journal().trim_to_snapshot(raft[1], raft[0])  # B2b
            return raft
        except Exception as exc:
            # pysyncobj would log and go on with an empty state; stop instead.
            self._fatal = f"cannot load the raft snapshot {file_name}: {exc!r}"
            raise

    # -- helpers ---------------------------------------------------------------------------------

    def _open_wake(self, core: _Core) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        core._poller.subscribe(self._wake_r.fileno(), self._drain_wake, POLL_EVENT_TYPE.READ)

    def _drain_wake(self, _fd: int, _event: int) -> None:
        reader = self._wake_r
        try:
            while reader is not None and reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            self._wake_now()

    def _wake_now(self) -> None:
        writer = self._wake_w
        if writer is None:
            return
        with contextlib.suppress(OSError):  # buffer full (a wake-up is pending) or closed
            writer.send(b"\0")

    def _close_wake(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def _fail_unfinished(self) -> None:
        unsent = ClusterError("the raft node stopped before the command was sent; nothing written")
        while self._inbox:
            pending = self._inbox.popleft()
            self._done.append((pending.loop, pending.future, unsent))
        for pending in self._outstanding:
            self._done.append((pending.loop, pending.future, ReplicationTimeout(_STOPPED)))
        while self._calls:
            _, loop, future = self._calls.popleft()
            self._done.append((loop, future, ClusterError("the raft node stopped; nothing done")))
        self._outstanding.clear()
        self._flush_done()
        self._release_waiters(ClusterError("the raft node was stopped"))

    def _expire(self, future: asyncio.Future[Any], timeout: float) -> None:
        if not future.done():
            view = self._view
            future.set_exception(
                ReplicationTimeout(
                    f"the command did not commit within {timeout:g} s (term {view.term}, leader "
                    f"{view.leader or 'unknown'}); it may still commit - re-read the state "
                    "before retrying"
                )
            )

    def _not_ready_message(self, timeout: float) -> str:
        view = self._view
        return (
            f"raft not ready after {timeout:g} s: state {view.state}, leader "
            f"{view.leader or 'unknown'}, term {view.term}, applied {view.applied_index} of "
            f"{view.commit_index}; check that a majority of {self._settings.partners or 'voters'} "
            "is running, reachable and uses the same cluster key"
        )

    def _require_running(self) -> None:
        if self._fatal:
            raise ClusterError(self._fatal)
        if self._core is None or self._stopping:
            raise ClusterError("the raft node is not running; call start() first")

    def _require_core(self) -> _Core:
        if self._core is None:
            raise ClusterError("the raft node is not running")
        return self._core

    def _require_journal(self) -> RaftJournal:
        if self._journal is None:
            raise ClusterError("the raft node is not running")
        return self._journal


# -- small pieces -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _View:
    """What the cheap properties read; replaced whole by the raft thread."""

    state: str = "stopped"
    leader: str | None = None
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    ready: bool = False


@dataclass(slots=True, eq=False)
class _Pending:
    payload: bytes
    fenced: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    deadline: float
    term: int = 0  # raft term when handed to pysyncobj (fencing)


def _queued(core: SyncObj) -> bool:
    """pysyncobj still holds commands (its per-tick time budget ran out)."""
    return bool(core._SyncObj__commandsQueue._FastQueue__queue)


def _can_progress_alone(core: SyncObj, journal: RaftJournal, moved: bool) -> bool:
    """Whether another tick right now would apply or commit something without news from the
    network. Exact, so the raft thread never spins: committed entries not yet applied (after a
    tick that moved), or a leader whose majority-replicated index is a new entry of its term
    (replies read at the end of a tick only count at the start of the next one)."""
    if moved and core.raftCommitIndex > core.raftLastApplied:
        return True
    if not core._isLeader():
        return False
    matched = core._SyncObj__raftMatchIndex
    indexes = sorted([journal.last_index, *(matched.get(n, 0) for n in core.otherNodes)])
    majority = indexes[(len(indexes) - 1) // 2]  # the highest index a majority holds
    commit = core.raftCommitIndex
    return bool(majority > commit and journal.entry_term(majority) == core.raftCurrentTerm)


def _post(loop: asyncio.AbstractEventLoop, items: list[tuple[asyncio.Future[Any], Any]]) -> None:
    with contextlib.suppress(RuntimeError):  # the submitting loop is closed: nobody waits
        loop.call_soon_threadsafe(_settle_all, items)


def _settle_all(items: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in items:
        if future.done():
            continue  # timed out or cancelled meanwhile
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _close_pysyncobj_pipe(core: SyncObj) -> None:
    # pysyncobj never closes the notifier pipe it opens with appendEntriesUseBatch=False.
    notifier = getattr(core, "_SyncObj__pipeNotifier", None)
    for name in ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW"):
        fd = getattr(notifier, name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
