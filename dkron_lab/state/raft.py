"""The Raft adapter: replicates commands to a deterministic state machine through pysyncobj.

Contract (the rest of dkron-lab sees only this):

* ``StateMachine`` is what gets replicated: ``apply(command) -> result`` is called on the raft
  thread in log order on every node, holding ``machine.lock``; ``snapshot()`` / ``restore()``
  move the whole state in and out of a snapshot (plain JSON data).
* ``RaftNode(settings, machine).start()`` loads the snapshot and the journal from
  ``settings.data_dir``, replays them and starts the raft thread. ``await submit(command)`` returns
  what ``apply`` returned for that command once it has committed, or raises ``NotLeaderError``,
  ``NoQuorumError``, ``ReplicationTimeout`` (outcome unknown) or another ``ClusterError``.
  Commands submitted in sequence (from one loop) are appended, hence applied, in that order.
* Membership (on the leader): ``add_peer``, ``remove_peer``, ``transfer_leadership``, one change
  at a time; ``peers()`` lists the voters. A follower raises ``NotLeaderError`` with the leader.
* ``fenced=True`` succeeds only if, when the command committed, this node was still leader in the
  term it was submitted in (``reference/pysyncobj-spike.md`` §3). Any failure of a fenced submit
  means "unknown": the entry may have been applied; the state machine's first-claim-wins rule
  decides and the caller re-reads the state.

Threads: one raft thread per node drives pysyncobj (``autoTick=False``): it ticks again at once
while a tick can make progress without the network (entries to apply, a leader's entries that
a majority already holds), otherwise it sleeps in ``poll`` until a message, a wake-up from
``submit`` (a socket pair) or ``tick_period``. Results go back to the submitting loop with
``call_soon_threadsafe``, batched per round of applied entries. Snapshots are written
synchronously on the raft thread. While the journal holds records it could not write (a full
disk, an I/O error) the raft thread does not tick, so nothing unwritten is counted, applied or
acknowledged; ``storage_fault`` says why and ``submit`` raises ``InsufficientStorage`` until a
retry (every ``STORAGE_RETRY`` s) writes them.

pysyncobj 0.3.17 is patched here, not forked (docs/raft.md has the why): our journal replaces
``FileJournal`` (B2, B2b, B7), snapshot-mode AppendEntries cannot commit unapplied entries (B5),
a success reply cannot rewind ``nextIndex`` and a follower keeps the entries it holds already
(B1), every submit has a deadline (B6), the leader steps down after ``leader_fallback_timeout``
(CheckQuorum, B8), the port binds only to ``self_address`` (B9) and it never starts without a
password (B10). Elections start with a pre-vote, and a voter that hears from a live leader
ignores vote requests (PreVote and leader stickiness: a server cut off from the others keeps
its term and cannot depose the leader when it comes back). Commands in the log are
``b"\\x00" + compact JSON`` and membership entries ``b"\\x02" + JSON``: no pickled objects in
the log or in snapshots, and none is ever loaded from them. pysyncobj's utility commands that
change the cluster (add, remove, transfer, set_version), sent to the raft port, are refused:
they would bypass the API's authentication.

The raft port authenticates before it unpickles. pysyncobj frames each message as a 4-byte
length and a Fernet token (AES-CBC with an HMAC-SHA256 over the whole token, keyed from the
password); ``TcpConnection`` checks the HMAC (``extract_timestamp``, then ``decrypt``) before
``pickle.loads``, from the very first frame of a connection, and drops the connection on any
failure. A frame that fails is logged here (rate-limited, naming the remote address; see
``_Authenticating``), as is a peer that closes our connection during the key exchange (what a
node with the wrong key sees). ``tests/security/test_cluster_trust.py`` sends pickles, framed
and encrypted with another key or not at all, and checks that ``pickle.loads`` never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import math
import os
import queue
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import InvalidToken
from pysyncobj import SyncObj, SyncObjConf, SyncObjException
from pysyncobj import syncobj as _pysyncobj
from pysyncobj.config import FAIL_REASON
from pysyncobj.journal import Journal
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

from dkron_lab.errors import (
    ClusterError,
    ConflictError,
    DkronError,
    InsufficientStorage,
    NoQuorumError,
    NotFoundError,
    NotLeaderError,
    ReplicationTimeout,
    ValidationError,
)
from dkron_lab.state.journal import (
    RaftData,
    RaftJournal,
    fsync_mode,
    read_snapshot,
    write_snapshot,
)

__all__ = ["JOURNAL_FILE", "SNAPSHOT_FILE", "RaftNode", "RaftSettings", "StateMachine"]

logger = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
SNAPSHOT_FILE = "raft.snapshot"

_REGULAR = bytes([_pysyncobj._COMMAND_TYPE.REGULAR])
_MEMBERSHIP = bytes([_pysyncobj._COMMAND_TYPE.MEMBERSHIP])
_RETRY_PERIOD = 0.02  # between attempts of a membership change or transfer the leader denied
_FEED_BATCH = 1000  # commands handed to pysyncobj per tick; keeps its notify pipe from filling
_STATES = {0: "follower", 1: "candidate", 2: "leader"}
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
STORAGE_RETRY = 1.0  # seconds between two attempts to write what a full disk refused


class StateMachine(Protocol):
    """The replicated state. Deterministic: the same commands in the same order give the same
    state and results on every node.

    ``lock`` is held by the adapter around ``apply``, ``snapshot`` and ``restore``; readers take
    it too. All three run on the raft thread and must not block on I/O.
    """

    lock: threading.RLock

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply one committed command and return its result (plain JSON data).

        Never raises: a rejected command returns ``{"error": ...}``.
        """
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON data."""
        ...

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the whole state with a snapshot taken by ``snapshot``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftSettings:
    """How one node takes part in the Raft group. Defaults: ``reference/pysyncobj-spike.md`` §9.

    ``self_address=None`` makes a read-only replica: it receives the log from the leader of
    ``partners`` but never votes or counts for a quorum. The ``password`` (the cluster key) is
    required: without one pysyncobj would unpickle whatever any local or remote process sends.
    """

    data_dir: Path
    self_address: str | None = "127.0.0.1:6868"
    partners: tuple[str, ...] = ()
    password: str | None = None
    bind_address: str | None = None  # default: self_address (never 0.0.0.0 by accident, B9)
    fsync: str = "batch"  # "batch" | "always" | "never": docs/raft.md, "Durability"
    tick_period: float = 0.05  # longest sleep of the idle raft thread
    heartbeat_period: float = 0.1
    election_timeout_min: float = 0.4
    election_timeout_max: float = 1.4
    connection_timeout: float = 3.5
    connection_retry: float = 1.0
    leader_fallback_timeout: float = 1.4  # CheckQuorum (B8): >= election_timeout_max
    compaction_min_entries: int = 50_000
    compaction_min_time: float = 3600.0
    compaction_split: bool = False
    dynamic_membership: bool = True
    batch_append_entries: bool = False  # False: one AppendEntries per command, sub-ms commits
    wait_for_leader: bool = False  # False: submit fails fast with NoQuorumError, no queueing

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "fsync", fsync_mode(self.fsync))
        others = dict.fromkeys(p for p in self.partners if p != self.self_address)
        object.__setattr__(self, "partners", tuple(others))
        _check_addresses(self)
        _check_timing(self)
        _check_exposure(self)

    @property
    def listen_address(self) -> str | None:
        """host:port the raft port binds to (None for a read-only replica)."""
        return self.bind_address or self.self_address


class RaftNode:
    """One member of the Raft group: a voter (``self_address`` set) or a read-only replica."""

    def __init__(
        self,
        settings: RaftSettings,
        machine: StateMachine,
        *,
        on_leadership: Callable[[bool, int], None] | None = None,
        on_knock: Callable[[str], None] | None = None,
    ) -> None:
        """``on_leadership(is_leader, term)`` runs on the raft thread whenever this node's
        belief of being leader or its term changes; ``on_knock(address)`` when a server that is
        not a voter (holding the cluster key, if there is one) connects to this node (pysyncobj
        connects to the peers whose address sorts after its own, so not always the leader).
        Both must return quickly."""
        self._settings = settings
        self._machine = machine
        self._on_leadership = on_leadership
        self._on_knock = on_knock
        self._core: _Core | None = None
        self._journal: RaftJournal | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._wake_pending = False
        self._stopping = False
        self._fatal: str | None = None
        self._inbox: deque[_Pending] = deque()
        self._outstanding: set[_Pending] = set()
        self._done: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Any]] = []
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []
        self._waiters_lock = threading.Lock()
        self._view = _View()
        self._leadership = (False, 0)
        self._next_sweep = 0.0
        self._calls: deque[_Call] = deque()  # work for the raft thread (membership, transfer)
        self._membership_lock = asyncio.Lock()  # pysyncobj allows one change in flight
        self._hold_until = 0.0  # submits wait in the inbox until then (leadership transfer)
        self._storage_fault: str | None = None  # why writes are refused (full disk, I/O error)
        self._snapshot_fault: str | None = None  # the snapshot or compaction part of it
        self._compactions_seen = 0  # the journal's compactions when the snapshot failed
        self._storage_retry_at = 0.0

    def _knocked(self, address: str) -> None:
        if self._on_knock is not None:
            self._on_knock(address)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the data directory, bind the raft port and start the raft thread.

        Loading the snapshot and replaying the journal happen on the raft thread; use
        ``wait_ready`` before serving reads. Raises ``ClusterError`` if the port is taken.
        """
        if self._core is not None:
            return
        settings = self._settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        for stale in (SNAPSHOT_FILE + ".tmp", SNAPSHOT_FILE + ".1.tmp"):
            (settings.data_dir / stale).unlink(missing_ok=True)
        if settings.listen_address is not None:
            _probe_bind(settings.listen_address)
        journal = RaftJournal(settings.data_dir / JOURNAL_FILE, fsync=settings.fsync)
        try:
            conf = _sync_obj_conf(settings, journal, self._write_snapshot, self._read_snapshot)
            core = _Core(settings, conf, journal, self._apply_payload)
            core._dk_knocked = self._knocked
        except SyncObjException as exc:
            journal.close()
            raise ClusterError(f"cannot bind the raft port {settings.listen_address}") from exc
        except BaseException:
            journal.close()
            raise
        self._journal, self._core, self._stopping, self._fatal = journal, core, False, None
        self._storage_fault = self._snapshot_fault = None
        self._leadership = (False, core.raftCurrentTerm)
        self._open_wake(core)
        name = f"raft-{settings.self_address or 'replica'}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the raft thread, store the meta file, close sockets and files. Idempotent.

        Submits still waiting fail: not yet handed to Raft with ``ClusterError``, in the log but
        not committed with ``ReplicationTimeout`` (they may commit after a restart).
        """
        core = self._core
        if core is None:
            return
        if self._thread is threading.current_thread():
            raise ClusterError("RaftNode.stop() cannot be called from the raft thread")
        self._stopping = True
        self._wake_now()
        if self._thread is not None:
            self._thread.join()
        self._core, self._thread = None, None
        core.destroy()  # transport, then journal.close(): meta stored
        _close_pysyncobj_pipe(core)
        core.close_snapshot_files(keep_current=False)
        self._close_wake()
        self._fail_unfinished()
        self._view = _View()

    async def wait_ready(self, timeout: float) -> None:
        """Return once a leader is known and this node has applied everything it committed
        (a leader: including the entry that opened its term). Raises ``NoQuorumError``."""
        self._require_running()
        if self._view.ready:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        with self._waiters_lock:
            self._waiters.append((loop, waiter))
        self._wake_now()
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            with self._waiters_lock:
                self._waiters = [w for w in self._waiters if w[1] is not waiter]
            raise NoQuorumError(self._not_ready_message(timeout)) from None

    # -- writes ----------------------------------------------------------------------------------

    async def submit(
        self, command: dict[str, Any], *, timeout: float = 5.0, fenced: bool = False
    ) -> dict[str, Any]:
        """Replicate ``command`` and return ``machine.apply``'s result for it.

        Raises ``ValidationError`` (not plain JSON data), ``NotLeaderError`` (with ``.leader``),
        ``NoQuorumError`` (no leader known: nothing written), ``ReplicationTimeout`` (no
        answer within ``timeout``: outcome unknown). A follower forwards non-fenced commands to
        the leader; a fenced one fails at once unless this node is leader.
        """
        self._require_running()
        if self._storage_fault is not None:
            raise InsufficientStorage(f"{self._storage_fault}; nothing was written")
        payload = _REGULAR + _encode_command(command)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        deadline = time.monotonic() + timeout
        self._inbox.append(_Pending(payload, fenced, loop, future, deadline))
        self._wake()
        timer = loop.call_later(timeout, self._expire, future, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    # -- membership ------------------------------------------------------------------------------

    async def add_peer(self, address: str, *, timeout: float = 10.0) -> None:
        """Make the server at ``address`` a voter; on the leader, one change at a time.

        Start the new server first, with the current members as partners: an unreachable
        address is refused (``ClusterError``), since a voter that never answers counts against
        the quorum (a one-node cluster would be wedged). Returns once the change committed;
        the new server then catches up (watch ``peers()``). Raises ``NotLeaderError`` (with
        ``.leader``), ``ConflictError`` (already a voter), ``ReplicationTimeout`` (outcome
        unknown: check ``peers()``), ``ValidationError`` (not host:port).
        """
        _split_address(address)
        deadline = time.monotonic() + timeout
        async with self._membership_lock:
            self._require_leader()
            await _probe_reachable(address, min(timeout, 2.0))
            await self._change_membership("add", address, deadline)

    async def remove_peer(self, address: str, *, timeout: float = 10.0) -> None:
        """Remove the voter at ``address``; on the leader, one change at a time.

        Stop the removed server afterwards: it no longer hears from the cluster and keeps
        asking for pre-votes with a member list that is no longer the cluster's; restart it
        before adding it again. The leader cannot remove itself (pysyncobj): asked to,
        it hands leadership to the most caught-up follower and raises ``NotLeaderError`` with
        the new leader, where the caller sends the same request, as for any follower.
        Raises ``NotFoundError`` (not a voter) and what ``add_peer`` raises.
        """
        _split_address(address)
        deadline = time.monotonic() + timeout
        if address == self._settings.self_address and self.is_leader:
            leader = await self.transfer_leadership(timeout=timeout)
            raise NotLeaderError(
                f"this node handed leadership to {leader} so that it can be removed; send the "
                f"removal of {address} to the new leader",
                leader=leader,
            )
        async with self._membership_lock:
            await self._change_membership("rem", address, deadline)

    async def transfer_leadership(self, to: str | None = None, *, timeout: float = 5.0) -> str:
        """Hand leadership to the voter ``to`` (default: the most caught-up connected one) and
        return the new leader's address once this node has seen it take over.

        pysyncobj only hands over to a follower that holds the whole log (spike L3), which
        never holds while writes stream in: submits on this node wait (not fail) while the
        transfer runs, and denied attempts are retried until ``timeout``. Raises
        ``NotLeaderError``, ``NotFoundError`` (``to`` is not a voter), ``ClusterError`` (no
        follower caught up in time, or no new leader took over).
        """
        if to is not None:
            _split_address(to)
        deadline = time.monotonic() + timeout
        async with self._membership_lock:
            self._hold_until = deadline
            try:
                denied = ClusterError(
                    f"no follower{'' if to is None else ' ' + to} caught up with the leader's log "
                    f"within {timeout:g} s; retry when writes are quieter"
                )
                await self._until_accepted(_transfer_step(to), deadline, denied)
                return await self._new_leader(deadline, timeout)
            finally:
                self._hold_until = 0.0
                self._wake_now()

    def peers(self) -> list[dict[str, Any]]:
        """The voters as this node sees them, this node first, then by address.

        Each: ``address``, ``role`` (``"self"`` or ``"voter"``), ``leader`` (bool),
        ``reachable`` (this node has a connection to it), ``match_index`` (the last log index
        known to be on that voter; only the leader knows it, else None).
        """
        core, view, me = self._core, self._view, self._settings.self_address
        leading = core is not None and view.state == "leader"
        rows = []
        if me is not None:
            last = self._journal.last_index if leading and self._journal is not None else None
            rows.append(_peer(me, "self", view.leader, reachable=core is not None, index=last))
        if core is None:
            others = [(a, False, None) for a in sorted(self._settings.partners)]
        else:
            matched = dict(core._SyncObj__raftMatchIndex) if leading else {}
            nodes = sorted(core.otherNodes, key=lambda n: str(n.id))
            others = [(str(n.id), core.isNodeConnected(n), matched.get(n)) for n in nodes]
        rows += [_peer(a, "voter", view.leader, reachable=r, index=i) for a, r, i in others]
        return rows

    async def _change_membership(self, kind: str, address: str, deadline: float) -> None:
        denied = ClusterError(
            f"the leader kept refusing to {'add' if kind == 'add' else 'remove'} {address}: an "
            "earlier membership change or the new leader's first entry is not committed yet; "
            "check that a majority of the voters is up, then retry"
        )
        try:
            await self._until_accepted(_change_step(kind, address), deadline, denied)
        except ReplicationTimeout:
            raise ReplicationTimeout(
                f"the change ({kind} {address}) did not commit in time; it may still commit - "
                "check peers() before retrying"
            ) from None

    async def _until_accepted(self, step: _Step, deadline: float, denied: ClusterError) -> None:
        """Run ``step`` on the raft thread until the leader does not deny it (pysyncobj denies
        what it cannot do right now: one change in flight, follower not caught up)."""
        while True:
            outcome = await self._on_raft_thread(step, deadline - time.monotonic())
            if outcome is not _DENIED:
                return
            if time.monotonic() + _RETRY_PERIOD >= deadline:
                raise denied
            await asyncio.sleep(_RETRY_PERIOD)

    async def _on_raft_thread(self, step: _Step, timeout: float) -> Any:
        """Run ``step(core, settle)`` on the raft thread; return what it settles with (raise
        it if it is an exception); ``ReplicationTimeout`` if nothing is settled in time."""
        self._require_running()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.append((step, loop, future))
        self._wake_now()
        try:
            return await asyncio.wait_for(future, max(timeout, 0.0))
        except TimeoutError:
            raise ReplicationTimeout(
                f"the raft leader did not answer within {timeout:.3g} s; the outcome is unknown"
            ) from None

    async def _new_leader(self, deadline: float, timeout: float) -> str:
        while time.monotonic() < deadline:
            view = self._view
            if view.state != "leader" and view.leader not in (None, self._settings.self_address):
                return view.leader
            await asyncio.sleep(0.01)
        raise ClusterError(
            f"leadership transfer was requested but no new leader took over within {timeout:g} s "
            f"(this node is {self._view.state}); check peers() and retry"
        )

    def _require_leader(self) -> None:
        self._require_running()
        if not self.is_leader:
            raise NotLeaderError(
                "membership changes are made on the leader; send the request there",
                leader=self.leader,
            )

    # -- cheap reads -----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """This node believes it is leader (there may briefly be two; see ``fenced``)."""
        return self._view.state == "leader"

    @property
    def leader(self) -> str | None:
        """Address of the leader this node last heard of."""
        return self._view.leader

    @property
    def term(self) -> int:
        return self._view.term

    @property
    def applied_index(self) -> int:
        """Log index of the last command applied to the state machine."""
        return self._view.applied_index

    @property
    def ready(self) -> bool:
        """See ``wait_ready``."""
        return self._view.ready

    def status(self) -> dict[str, Any]:
        """Plain data for the API and ``raft list-peers``."""
        view, core, settings = self._view, self._core, self._settings
        if core is None:
            partners = [{"address": a, "connected": False} for a in settings.partners]
            replicas, log_size, quorum = 0, 0, False
        else:
            nodes = sorted(core.otherNodes, key=lambda n: str(n.id))
            partners = [{"address": str(n.id), "connected": core.isNodeConnected(n)} for n in nodes]
            replicas, quorum = len(core.readonlyNodes), bool(core.hasQuorum)
            log_size = len(self._journal) if self._journal is not None else 0
        return {
            "state": view.state,
            "term": view.term,
            "leader": view.leader,
            "self": settings.self_address,
            "read_only": settings.self_address is None,
            "partners": partners,
            "read_only_replicas": replicas,
            "has_quorum": quorum,
            "commit_index": view.commit_index,
            "applied_index": view.applied_index,
            "log_size": log_size,
            "ready": view.ready,
        }

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


# -- pysyncobj subclass with the spike's validated overrides ------------------------------------

KNOCK_AFTER = 4.0  # seconds; a cluster being bootstrapped elects its leader well before
EARLY_ELECTION = (0.05, 0.55)  # seconds after the leader's connection closed


_AUTH_WARN_PERIOD = 10.0  # seconds between two warnings about the same remote host
_auth_warned: dict[str, float] = {}


def _warn_unauthenticated(remote: str, message: str) -> None:
    """Log ``message`` about ``remote`` (host:port) at most once per ``_AUTH_WARN_PERIOD`` for
    its host: a peer with the wrong key retries every second."""
    host = remote.rpartition(":")[0] or remote
    now = time.monotonic()
    if now - _auth_warned.get(host, -math.inf) < _AUTH_WARN_PERIOD:
        return
    if len(_auth_warned) > 1000:
        _auth_warned.clear()
    _auth_warned[host] = now
    logger.warning(message, remote)


class _Authenticating:
    """pysyncobj's Fernet for one connection: a frame that does not authenticate is logged
    (naming the remote address) and refused as before; pysyncobj then drops the connection
    without having unpickled it."""

    def __init__(self, fernet: Any, remote: str, *, incoming: bool) -> None:
        self._fernet = fernet
        self._remote = remote
        self._incoming = incoming
        self.trusted = False  # a frame from the other side has authenticated

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return bytes(self._fernet.encrypt_at_time(data, current_time))

    def extract_timestamp(self, token: bytes) -> int:
        return int(self._authenticated(self._fernet.extract_timestamp, token))

    def decrypt(self, token: bytes) -> bytes:
        data = bytes(self._authenticated(self._fernet.decrypt, token))
        self.trusted = True
        return data

    def _authenticated(self, step: Callable[[bytes], Any], token: bytes) -> Any:
        try:
            return step(token)
        except InvalidToken:
            if self._incoming:
                message = (
                    "raft: dropped a connection from %s: its data does not authenticate with "
                    "this cluster's key (wrong or missing cluster key?)"
                )
            else:
                message = (
                    "raft: cannot authenticate with the peer %s: its data does not decrypt "
                    "with this node's key (wrong or missing cluster key? --encrypt must be "
                    "the cluster's)"
                )
            _warn_unauthenticated(self._remote, message)
            raise


def _authenticating(conn: TcpConnection, remote: str, *, incoming: bool) -> None:
    if conn.encryptor is not None and not isinstance(conn.encryptor, _Authenticating):
        conn.encryptor = _Authenticating(conn.encryptor, remote, incoming=incoming)
        _bound_untrusted(conn, remote)


MAX_UNTRUSTED_BYTES = 64 * 1024
"""What a connection may make this node buffer before a frame of it has authenticated: the
first frames of pysyncobj's key exchange are a few hundred bytes."""


def _bound_untrusted(conn: TcpConnection, remote: str) -> None:
    """pysyncobj reads a frame whose header announces up to 2 GiB into memory before it checks
    it: a connection that has not authenticated a frame yet is dropped past
    ``MAX_UNTRUSTED_BYTES`` instead (anyone who can reach the port could otherwise make the
    node hold gigabytes)."""
    read = conn._TcpConnection__processRead
    encryptor = conn.encryptor

    def bounded_read() -> bool:
        more = bool(read())
        buffered = len(conn._TcpConnection__readBuffer)
        if not encryptor.trusted and buffered > MAX_UNTRUSTED_BYTES:
            _warn_unauthenticated(
                remote,
                "raft: dropped a connection from %s: it sent more than 64 KiB without "
                "authenticating (wrong or missing cluster key?)",
            )
            conn.disconnect()
            return False
        return more

    conn._TcpConnection__processRead = bounded_read


def _remote_of(conn: TcpConnection) -> str:
    sock = getattr(conn, "_TcpConnection__socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"


def _handshake_closed(conn: TcpConnection, remote: str) -> None:
    """Our connection to ``remote`` closed during the key exchange: the peer could not
    authenticate what this node sent (what a node with the wrong key sees)."""
    if getattr(conn, "_dk_handshaking", False):
        conn._dk_handshaking = False
        _warn_unauthenticated(
            remote,
            "raft: the peer %s closed the connection during the key exchange: it could not "
            "authenticate this node (wrong or missing cluster key? --encrypt must be the "
            "cluster's)",
        )


class _Transport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's transport, with the knock of a server that wants to join, and a warning
    for connections that fail authentication (``_Authenticating``, ``_handshake_closed``).

    pysyncobj connects a pair of voters from the side whose address sorts higher, and a member
    drops a connection that names a voter it does not know. So a server new to a running
    cluster may never be connected to at all. Once it has waited ``KNOCK_AFTER`` with an empty
    log and no leader, it knocks every second: a short connection to each partner it does not
    connect to itself, naming its own address (past the key exchange when there is a cluster
    key), which the partner then drops as usual. A member receiving a connection that names an
    unknown voter address (an agent names itself ``readonly``) tells its core; the leader then
    adds the knocking server.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dk_knocks: set[TcpConnection] = set()
        self._dk_last_knock = 0.0

    def _onTick(self) -> None:
        super()._onTick()
        now = time.monotonic()
        if now - self._dk_last_knock < 1.0 or not self._syncObj._dk_knocking():
            return
        self._dk_last_knock = now
        for node in self._nodes:
            if node not in self._connections and len(self._dk_knocks) < 16:
                self._knock(node)

    def _knock(self, node: Any) -> None:
        conf = self._syncObj.conf
        conn = TcpConnection(
            poller=self._syncObj._poller,
            timeout=conf.connectionTimeout,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
        )
        conn.encryptor = self._syncObj.encryptor
        _authenticating(conn, node.address, incoming=False)
        address = self._selfNode.address

        def connected() -> None:
            if conn.encryptor:
                conn._dk_handshaking = True
                conn.recvRandKey = os.urandom(32)
                conn.send(conn.recvRandKey)
            else:
                conn.send(address)

        def received(message: Any) -> None:
            if conn.encryptor and not conn.sendRandKey:
                conn._dk_handshaking = False
                conn.sendRandKey = message
                conn.send(address)

        def disconnected() -> None:
            _handshake_closed(conn, node.address)
            self._dk_knocks.discard(conn)

        conn.setOnConnectedCallback(connected)
        conn.setOnMessageReceivedCallback(received)
        conn.setOnDisconnectedCallback(disconnected)
        self._dk_knocks.add(conn)
        conn.connect(node.ip, node.port)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        super()._onNewIncomingConnection(conn)
        _authenticating(conn, _remote_of(conn), incoming=True)

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None:
            _authenticating(conn, node.address, incoming=False)

    def _onOutgoingConnected(self, conn: Any) -> None:
        conn._dk_handshaking = bool(self._syncObj.encryptor)
        if isinstance(conn.encryptor, _Authenticating):
            conn.encryptor.trusted = False  # a new peer process may listen there now
        super()._onOutgoingConnected(conn)

    def _onOutgoingMessageReceived(self, conn: Any, message: Any) -> None:
        conn._dk_handshaking = False
        super()._onOutgoingMessageReceived(conn, message)

    def _onDisconnected(self, conn: Any) -> None:
        node = self._connToNode(conn)
        if node is not None and node in self._nodes:
            _handshake_closed(conn, node.address)
        super()._onDisconnected(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        keyed = not self._syncObj.encryptor or conn.sendRandKey
        if (
            keyed
            and isinstance(message, str)
            and message != "readonly"
            and message not in self._nodeAddrToNode
        ):
            self._syncObj._dk_knocked(message)
        super()._onIncomingMessageReceived(conn, message)


class _Core(SyncObj):  # type: ignore[misc]
    """SyncObj with B1 and B5 fixed, JSON commands, an fsync point before every ack, and
    elections with PreVote and leader stickiness.

    pysyncobj calls its private methods through ``self``, so defining the mangled names
    (``_SyncObj__...``) here overrides them.
    """

    def __init__(
        self,
        settings: RaftSettings,
        conf: SyncObjConf,
        journal: RaftJournal,
        apply_payload: Callable[[bytes], dict[str, Any]],
    ) -> None:
        self._dk_journal = journal
        self._dk_apply = apply_payload
        self._dk_raft_thread: int | None = None  # set by the raft thread when it starts
        self._dk_after_apply: Callable[[], None] = lambda: None
        self._dk_sending: set[Any] = set()  # snapshot files open for followers
        self._dk_knocked: Callable[[str], None] = lambda address: None
        self._dk_leaderless_since: float | None = None
        # PreVote and leader stickiness (set before pysyncobj's __init__, which records the
        # attribute names it must not snapshot)
        self._dk_lease = settings.election_timeout_min
        self._dk_leader_heard = -math.inf  # when a live leader was last heard from
        self._dk_round: _PreVoteRound | None = None
        self._dk_rounds = itertools.count(1)
        self._dk_may_stand = 0  # the term a majority of pre-votes allows this node to stand in
        self._dk_transfer_votes: dict[Any, int] = {}  # voter -> term of its transfer election
        self._dk_own_messages: dict[str, Callable[[Any, dict[str, Any]], None]] = {
            _PRE_VOTE: self._on_pre_vote,
            _PRE_VOTE_REPLY: self._on_pre_vote_reply,
            _TRANSFER_VOTE: self._on_transfer_vote,
            _NEWER_TERM: self._on_newer_term,
        }
        super().__init__(
            settings.self_address, list(settings.partners), conf, transportClass=_Transport
        )
        self._close_finished_transmissions()

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        """The leader's connection closed: a killed leader's kernel closes its sockets at once,
        so the followers need not wait out a whole election timeout to notice. The election is
        brought forward to a random instant within ``EARLY_ELECTION`` (random, so that the
        followers rarely split the vote), and this node stops counting that leader as live, so
        it grants the other followers' pre-votes. The election still starts with a pre-vote:
        if only this node's connection closed, the others still hear from the leader and deny
        it. A hung or cut-off leader closes nothing and is found by the timeout as before;
        Raft's safety never rests on timing."""
        SyncObj._SyncObj__onNodeDisconnected(self, node)
        if self._isLeader() or node != self._getLeader():
            return
        self._dk_leader_heard = -math.inf
        soon = time.monotonic() + random.uniform(*EARLY_ELECTION)
        deadline = float(getattr(self, "_SyncObj__raftElectionDeadline"))  # noqa: B009 (mangled)
        if soon < deadline:
            self._SyncObj__raftElectionDeadline = soon

    def _dk_knocking(self) -> bool:
        """A server with an empty log that has found no leader for ``KNOCK_AFTER``: it is
        probably new to a running cluster, so it knocks (see ``_Transport``)."""
        if self._getLeader() is not None or self.raftCommitIndex > 1:
            self._dk_leaderless_since = None
            return False
        now = time.monotonic()
        if self._dk_leaderless_since is None:
            self._dk_leaderless_since = now
        return now - self._dk_leaderless_since > KNOCK_AFTER

    def _close_finished_transmissions(self) -> None:
        """Close the snapshot file of a transmission as pysyncobj finishes or cancels it."""
        serializer = self._SyncObj__serializer

        def closing(method: Callable[[Any], Any]) -> Callable[[Any], Any]:
            def call(transmission_id: Any) -> Any:
                before = serializer._Serializer__transmissions.get(transmission_id)
                result = method(transmission_id)
                after = serializer._Serializer__transmissions.get(transmission_id)
                if before is not None and after is not before and "file" in before:
                    before["file"].close()
                return result

            return call

        serializer.getTransmissionData = closing(serializer.getTransmissionData)
        serializer.cancelTransmisstion = closing(serializer.cancelTransmisstion)

    def close_snapshot_files(self, *, keep_current: bool = True) -> None:
        """pysyncobj 0.3.17 drops a finished or cancelled snapshot transmission (and resets
        them all on a new snapshot) without closing the file it opened for it: one handle
        leaked per snapshot sent. Close every file no transmission holds any more."""
        transmissions = self._SyncObj__serializer._Serializer__transmissions
        current = {t["file"] for t in transmissions.values() if "file" in t}
        for stale in self._dk_sending - current if keep_current else self._dk_sending | current:
            stale.close()
        self._dk_sending = current if keep_current else set()

    def _SyncObj__applyLogEntries(self) -> bool:
        """Hand results back as soon as a round of entries is applied, not at the end of the
        tick (which still sends AppendEntries to every follower)."""
        resend = SyncObj._SyncObj__applyLogEntries(self)
        self._dk_after_apply()
        return bool(resend)

    def _applyCommand(self, command: bytes, callback: Any, commandType: int | None = None) -> None:
        """pysyncobj writes to its wake-up pipe on every command (appendEntriesUseBatch=False);
        on the raft thread that is a wasted syscall per command (and a GIL hand-off): the queue
        is read in the same or the next tick anyway."""
        if threading.get_ident() != self._dk_raft_thread:
            SyncObj._applyCommand(self, command, callback, commandType)
            return
        if commandType is not None:
            command = bytes([commandType]) + command
        try:
            self._SyncObj__commandsQueue.put_nowait((command, callback))
        except queue.Full:
            self._SyncObj__callErrCallback(FAIL_REASON.QUEUE_FULL, callback)

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        kind = command[:1]
        if kind == _REGULAR:
            return self._dk_apply(command[1:])
        if kind == _MEMBERSHIP:
            return SyncObj._SyncObj__doApplyCommand(self, command)  # parsed below, as JSON
        return None  # no-op; pysyncobj's VERSION entries would be unpickled: never loaded

    def _SyncObj__parseChangeClusterRequest(self, command: bytes) -> list[str] | None:
        """Membership entries are ``b"\\x02" + JSON ["add"|"rem", "host:port"]``; pysyncobj's
        own are pickles, which it loads from the log on every node."""
        if command[:1] != _MEMBERSHIP:
            return None
        try:
            kind, address = json.loads(command[1:])
        except (ValueError, TypeError):
            logger.error("ignoring a membership entry that is not ours: %r", command[:40])
            return None
        return [str(kind), str(address)]

    def _refuse_utility(self, _args: Any, callback: Callable[[Any, int], None]) -> None:
        """Membership and version changes sent as utility messages to the raft port bypass the
        API's authentication (the cluster key is shared with every agent): refused."""
        callback(None, FAIL_REASON.REQUEST_DENIED)

    _addNodeToCluster = _removeNodeFromCluster = _refuse_utility
    _transferLeadership = _setCodeVersion = _refuse_utility

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        own = self._dk_own_messages.get(kind) if isinstance(kind, str) else None
        if own is not None:
            own(node, message)  # pysyncobj ignores types it does not know; never reaches it
        elif kind == "append_entries":
            self._append_entries(node, message)
        elif kind == "next_node_idx" and message.get("success") and not message.get("reset"):
            self._success_reply(node, message)
        elif kind == "request_vote" and self._ignores_vote(node, message):
            return
        else:
            SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _append_entries(self, node: Any, message: dict[str, Any]) -> None:
        if not self._from_leader(node, message):
            return
        if "prevLogIdx" not in message:
            self._snapshot_mode_append(node, message)
        elif "transmission" not in message:
            self._regular_append(node, message)
        else:  # one big entry in chunks: pysyncobj unpickles it at the last one
            SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _SyncObj__sendNextNodeIdx(
        self, node: Any, reset: bool = False, nextNodeIdx: int | None = None, success: bool = False
    ) -> None:
        try:
            self._dk_journal.sync()  # a follower's entries are written before it acknowledges
        except InsufficientStorage:
            return  # no acknowledgement; the raft thread sees the fault and stops ticking
        SyncObj._SyncObj__sendNextNodeIdx(
            self, node, reset=reset, nextNodeIdx=nextNodeIdx, success=success
        )

    def _snapshot_mode_append(self, node: Any, message: dict[str, Any]) -> None:
        """B5: a snapshot chunk (or ``serialized: None``) carries no log-matching check, so it
        must not commit entries this node has not applied; they may be a deposed leader's."""
        before = self.raftCommitIndex
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        ceiling = max(before, self.raftLastApplied)
        if self.raftCommitIndex > ceiling:
            self._SyncObj__raftCommitIndex = ceiling
            self._dk_journal.setRaftCommitIndex(ceiling)

    def _success_reply(self, node: Any, message: dict[str, Any]) -> None:
        """B1: a success reply acknowledges a prefix; it must not pull ``nextIndex`` back over
        entries already in flight (pysyncobj re-sends them and followers truncate)."""
        next_index = self._SyncObj__raftNextIndex
        before = next_index.get(node)
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        if before is not None and node in next_index and next_index[node] < before:
            next_index[node] = before

    def _regular_append(self, node: Any, message: dict[str, Any]) -> None:
        """B1: Raft (§5.3) deletes a follower's entries only from the first one that conflicts
        with the leader's; pysyncobj deletes everything after ``prevLogIdx`` and appends the
        message's entries again. A leader re-sends entries a follower already holds whenever a
        stale reply rewinds its ``nextIndex``, and the follower may have applied them by then
        ("truncating already-applied log entries", and a log shorter than it acknowledged).
        So the entries this node holds already (same index and term) are dropped from the
        message; if it holds them all and more, nothing in its log changes."""
        entries = message.get("entries") or []
        held = _held_prefix(entries, self._dk_journal.entry_term)
        if held == 0:
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            return
        _, last, last_term = entries[held - 1]
        if held < len(entries) or last == self._dk_journal.last_index:
            rest = {**message, "prevLogIdx": last, "prevLogTerm": last_term}
            SyncObj._SyncObj__onMessageReceived(self, node, {**rest, "entries": entries[held:]})
        elif message["term"] == self.raftCurrentTerm and node == self._getLeader():
            self._acknowledge_held(node, message, last)
        else:  # a new leader's or term's first message re-sends nothing: not seen, but safe
            SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _acknowledge_held(self, node: Any, message: dict[str, Any], last: int) -> None:
        """What pysyncobj does for an AppendEntries of its leader, minus the log change: the
        timer, the leader's commit index, this node's commit index up to ``last`` (what the
        message showed it shares with the leader; its entries after that are not checked),
        and the success reply."""
        if not self._SyncObj__transferInProgress:
            timeout = self._SyncObj__generateRaftTimeout()
            self._SyncObj__raftElectionDeadline = time.monotonic() + timeout
        self._SyncObj__leaderCommitIndex = message["commit_index"]
        commit = min(message["commit_index"], last)
        if commit > self.raftCommitIndex:
            self._SyncObj__raftCommitIndex = commit
            self._dk_journal.setRaftCommitIndex(commit)
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=last + 1, success=True)

    # -- elections: PreVote, leader stickiness (docs/raft.md, "Elections") ----------------------

    guarded_elections = True
    """PreVote, leader stickiness and the newer-term answer; False gives pysyncobj's elections
    (tests show the difference)."""

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._before_election()
        SyncObj._onTick(self, timeToWait)

    def _before_election(self) -> None:
        """pysyncobj makes a follower whose election timer fired a candidate in a new term, in
        ``_onTick``. That election now runs only for a leadership transfer (the leader asked
        for it; the voters are told first, so that stickiness lets its vote requests through)
        or once a majority granted a pre-vote for that term. Otherwise the timer is re-armed
        and pre-votes are asked for; term and state stay as they are (Raft thesis §9.6)."""
        if not self._election_due():
            return
        term = self.raftCurrentTerm + 1
        if self._SyncObj__transferInProgress:
            self._send_voters({"type": _TRANSFER_VOTE, "term": term})
        elif self.guarded_elections and self._dk_may_stand != term and self.otherNodes:
            self._ask_pre_votes(term)

    def _election_due(self) -> bool:
        """pysyncobj's condition for starting an election."""
        return bool(
            self.selfNode is not None
            and not self._isLeader()
            and self._SyncObj__raftElectionDeadline < time.monotonic()
            and self._SyncObj__connectedToAnyone()
        )

    def _ask_pre_votes(self, term: int) -> None:
        timeout = self._SyncObj__generateRaftTimeout()
        self._SyncObj__raftElectionDeadline = time.monotonic() + timeout
        self._dk_round = _PreVoteRound(term=term, number=next(self._dk_rounds))
        self._send_voters(
            {
                "type": _PRE_VOTE,
                "term": term,
                "round": self._dk_round.number,
                "last_log_index": self._SyncObj__getCurrentLogIndex(),
                "last_log_term": self._SyncObj__getCurrentLogTerm(),
            }
        )

    def _send_voters(self, message: dict[str, Any]) -> None:
        for node in self.otherNodes:
            self._SyncObj__transport.send(node, message)

    def _on_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        """Answer a pre-vote; nothing here changes (term, vote, timer), granted or not."""
        if self.selfNode is None:
            return  # read-only replicas do not vote
        log_ok = _log_up_to_date(
            (message["last_log_term"], message["last_log_index"]),
            (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()),
        )
        granted = _grant_pre_vote(
            term=message["term"], our_term=self.raftCurrentTerm, log_ok=log_ok, lease=self._lease()
        )
        reply = {"type": _PRE_VOTE_REPLY, "term": message["term"], "granted": granted}
        self._SyncObj__transport.send(node, {**reply, "round": message["round"]})

    def _on_pre_vote_reply(self, node: Any, message: dict[str, Any]) -> None:
        ask = self._dk_round
        if ask is None or message["round"] != ask.number or not message["granted"]:
            return
        voters = self._SyncObj__otherNodes
        if node in voters:
            ask.granted.add(node)
        if ask.term != self.raftCurrentTerm + 1 or self._isLeader():
            self._dk_round = None  # this node's term moved on meanwhile
        elif _majority(len(ask.granted) + 1, len(voters) + 1):
            self._dk_round = None
            self._dk_may_stand = ask.term
            self._SyncObj__raftElectionDeadline = 0.0  # pysyncobj's election, next tick

    def _on_transfer_vote(self, node: Any, message: dict[str, Any]) -> None:
        self._dk_transfer_votes[node] = message["term"]

    def _ignores_vote(self, node: Any, message: dict[str, Any]) -> bool:
        """Leader stickiness: while this node hears from a live leader it ignores vote requests
        (their term is not adopted either), unless they are for a leadership transfer."""
        transfer = self._dk_transfer_votes.pop(node, None) == message.get("term")
        return self.guarded_elections and not transfer and self._lease()

    def _lease(self) -> bool:
        return _in_lease(
            leading=self._isLeader(),
            leader_known=self._getLeader() is not None,
            since_heard=time.monotonic() - self._dk_leader_heard,
            lease=self._dk_lease,
        )

    def _from_leader(self, node: Any, message: dict[str, Any]) -> bool:
        """An AppendEntries of this node's term or a newer one is a live leader's: it renews
        the lease and ends a pre-vote round. pysyncobj ignores one of an older term without a
        word; it is answered with this node's term, so that a deposed leader steps down and a
        node stranded on a higher term (its election failed, and stickiness keeps the others
        from adopting its term) is not ignored for ever. Whether pysyncobj should see it."""
        if message["term"] >= self.raftCurrentTerm:
            self._dk_leader_heard = time.monotonic()
            self._dk_round = None
            return True
        if self.guarded_elections:
            self._SyncObj__transport.send(node, {"type": _NEWER_TERM, "term": self.raftCurrentTerm})
        return False

    def _on_newer_term(self, node: Any, message: dict[str, Any]) -> None:
        """Raft's rule for any reply carrying a newer term, which pysyncobj's do not carry:
        adopt it and follow (as pysyncobj does for a vote request of a newer term)."""
        if message["term"] > self.raftCurrentTerm:
            self._SyncObj__setCurrentTerm(message["term"], None)
            self._SyncObj__setState(_FOLLOWER)
            self._SyncObj__raftLeader = None


_PRE_VOTE = "dk_pre_vote"  # our message types; pysyncobj ignores types it does not know
_PRE_VOTE_REPLY = "dk_pre_vote_reply"
_TRANSFER_VOTE = "dk_transfer_vote"
_NEWER_TERM = "dk_newer_term"
_FOLLOWER = _pysyncobj._RAFT_STATE.FOLLOWER


@dataclass(slots=True, kw_only=True)
class _PreVoteRound:
    term: int  # the term this node would stand in
    number: int  # tells this round's replies from an earlier round's
    granted: set[Any] = field(default_factory=set)  # the voters that granted it


def _log_up_to_date(theirs: tuple[int, int], ours: tuple[int, int]) -> bool:
    """Raft §5.4.1: whether a log ending at ``theirs`` (last term, last index) is at least as
    up to date as one ending at ``ours``."""
    return theirs >= ours


def _in_lease(*, leading: bool, leader_known: bool, since_heard: float, lease: float) -> bool:
    """Whether a node hears from a live leader: it leads, or it heard from the leader it knows
    less than ``lease`` (the minimum election timeout) ago."""
    return leading or (leader_known and since_heard < lease)


def _grant_pre_vote(*, term: int, our_term: int, log_ok: bool, lease: bool) -> bool:
    """A pre-vote for ``term`` is granted if that term is newer than ours, the candidate's log
    is at least as up to date, and no live leader is heard from (thesis §9.6)."""
    return term > our_term and log_ok and not lease


def _majority(votes: int, voters: int) -> bool:
    return votes > voters / 2


def _held_prefix(
    entries: Sequence[tuple[bytes, int, int]], term_at: Callable[[int], int | None]
) -> int:
    """How many of ``entries`` (command, index, term), from the first, a log already holds:
    an entry at the same index with the same term (by Raft's Log Matching property the same
    entry, and the same log before it)."""
    held = 0
    for _, index, term in entries:
        if term_at(index) != term:
            break
        held += 1
    return held


def _sync_obj_conf(
    s: RaftSettings,
    journal: RaftJournal,
    serializer: Callable[[str, RaftData], None] | None,
    deserializer: Callable[[str], RaftData] | None,
) -> SyncObjConf:
    return SyncObjConf(
        autoTick=False,
        autoTickPeriod=s.tick_period,
        appendEntriesUseBatch=s.batch_append_entries,
        appendEntriesPeriod=s.heartbeat_period,
        raftMinTimeout=s.election_timeout_min,
        raftMaxTimeout=s.election_timeout_max,
        connectionTimeout=s.connection_timeout,
        connectionRetryTime=s.connection_retry,
        leaderFallbackTimeout=s.leader_fallback_timeout,
        commandsWaitLeader=s.wait_for_leader,
        journalFile=journal,  # handed back as is by _create_journal below
        fullDumpFile=str(s.data_dir / SNAPSHOT_FILE),  # both or neither (B7)
        serializer=serializer,
        deserializer=deserializer,
        logCompactionMinEntries=s.compaction_min_entries,
        logCompactionMinTime=s.compaction_min_time,
        logCompactionSplit=s.compaction_split,
        dynamicMembershipChange=s.dynamic_membership,
        password=s.password,
        bindAddress=s.listen_address,
        maxBindRetries=1,  # the port was probed; never spin on a taken port
    )


class _QuietFailedDump(logging.Filter):
    """pysyncobj warns "Failed to store full dump" at every failed snapshot attempt; the
    adapter logs the reason once (``_storage_failed``) instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Failed to store full dump"


logging.getLogger(_pysyncobj.__name__).addFilter(_QuietFailedDump())


# pysyncobj builds its journal with the module-level ``createJournal(conf.journalFile)``; passing
# our journal object as ``journalFile`` and returning it here is the narrowest hook. Other
# journalFile values behave exactly as before.
_original_create_journal = _pysyncobj.createJournal


def _create_journal(journal_file: Any) -> Any:
    if isinstance(journal_file, Journal):
        return journal_file
    return _original_create_journal(journal_file)


_pysyncobj.createJournal = _create_journal


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


_UNKNOWN = "it may or may not be applied - re-read the state before retrying"
_FENCE_LOST = f"leadership changed while the fenced command committed; {_UNKNOWN}"
_STOPPED = "the raft node stopped before the command committed; it may still commit after a restart"
_FAILURES: dict[int, tuple[type[ClusterError], str]] = {
    FAIL_REASON.QUEUE_FULL: (ClusterError, "the raft command queue is full; retry later"),
    FAIL_REASON.MISSING_LEADER: (
        NoQuorumError,
        "no raft leader is known (election running or too few servers reachable); nothing "
        "was written - retry once a leader is elected",
    ),
    FAIL_REASON.DISCARDED: (NotLeaderError, f"a new leader replaced the command; {_UNKNOWN}"),
    FAIL_REASON.NOT_LEADER: (NotLeaderError, "the node this was forwarded to is not the leader"),
    FAIL_REASON.LEADER_CHANGED: (NotLeaderError, f"the leader changed; {_UNKNOWN}"),
    FAIL_REASON.REQUEST_DENIED: (ClusterError, "the raft leader denied the request"),
    FAIL_REASON.UNKNOWN_OUTCOME: (ReplicationTimeout, f"the outcome is unknown; {_UNKNOWN}"),
}


_DENIED = object()  # a step's outcome: pysyncobj refused it for now, try again
_Step = Callable[[_Core, Callable[[Any], None]], None]
_Call = tuple[_Step, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _failure(core: SyncObj, error: int) -> ClusterError:
    kind, message = _FAILURES.get(error, (ClusterError, f"raft failure code {error}"))
    if kind is NotLeaderError:
        return NotLeaderError(message, leader=_leader_of(core))
    return kind(message)


def _voters(core: SyncObj) -> list[str]:
    others = [str(node.id) for node in core.otherNodes]
    return sorted(others + ([] if core.selfNode is None else [str(core.selfNode.id)]))


def _change_step(kind: str, address: str) -> _Step:
    """The raft-thread half of a membership change: check it on the leader, then append it."""

    def step(core: _Core, settle: Callable[[Any], None]) -> None:
        problem = _membership_problem(core, kind, address)
        if problem is not None:
            settle(problem)
            return
        payload = _MEMBERSHIP + _ENCODER.encode([kind, address]).encode()
        core._applyCommand(payload, functools.partial(_settle_step, core, settle))

    return step


def _settle_step(core: SyncObj, settle: Callable[[Any], None], _result: Any, error: int) -> None:
    """pysyncobj's callback for a step: None on success, ``_DENIED`` to retry, or the error."""
    if error == FAIL_REASON.SUCCESS:
        settle(None)
    else:
        settle(_DENIED if error == FAIL_REASON.REQUEST_DENIED else _failure(core, error))


def _membership_problem(core: SyncObj, kind: str, address: str) -> DkronError | None:
    if not core._isLeader():
        return NotLeaderError(
            "membership changes are made on the leader; send the request there",
            leader=_leader_of(core),
        )
    voters = _voters(core)
    if kind == "add" and address in voters:
        return ConflictError(f"{address} is already a voter (voters: {', '.join(voters)})")
    if kind == "rem" and address not in voters:
        return NotFoundError(f"{address} is not a voter; the voters are {', '.join(voters)}")
    if kind == "rem" and core.selfNode is not None and address == str(core.selfNode.id):
        return ConflictError("the leader cannot remove itself; call remove_peer again")
    return None


def _transfer_step(to: str | None) -> _Step:
    """The raft-thread half of a leadership transfer: ask pysyncobj to send TimeoutNow."""

    def step(core: _Core, settle: Callable[[Any], None]) -> None:
        if not core._isLeader():
            settle(
                NotLeaderError("only the leader can transfer leadership", leader=_leader_of(core))
            )
            return
        if to is not None and to not in {str(node.id) for node in core.otherNodes}:
            voters = ", ".join(_voters(core))
            settle(NotFoundError(f"{to} is not another voter; the voters are {voters}"))
            return
        core.transferLeadership(to, callback=functools.partial(_settle_step, core, settle))

    return step


def _peer(
    address: str, role: str, leader: str | None, *, reachable: bool, index: int | None
) -> dict[str, Any]:
    return {
        "address": address,
        "role": role,
        "leader": address == leader,
        "reachable": reachable,
        "match_index": index,
    }


async def _probe_reachable(address: str, timeout: float) -> None:
    host, port = _split_address(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), port), timeout)
    except (OSError, TimeoutError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
        raise ClusterError(
            f"cannot reach the raft port {address} ({why}): start the new server first, with "
            "the current voters as partners, then add it"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


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


def _leader_of(core: SyncObj) -> str | None:
    leader = core._getLeader()
    return None if leader is None else str(leader.id)


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


def _encode_command(command: dict[str, Any]) -> bytes:
    if not isinstance(command, dict):
        raise ValidationError(
            f"a raft command must be a dict of plain JSON data, not {type(command).__name__}"
        )
    try:
        text = _ENCODER.encode(command)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"a raft command must be plain JSON data ({exc}); encode domain objects to dicts first"
        ) from None
    return text.encode()


def _close_pysyncobj_pipe(core: SyncObj) -> None:
    # pysyncobj never closes the notifier pipe it opens with appendEntriesUseBatch=False.
    notifier = getattr(core, "_SyncObj__pipeNotifier", None)
    for name in ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW"):
        fd = getattr(notifier, name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _probe_bind(address: str) -> None:
    host, port = _split_address(address)
    try:
        family, kind, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        raise ClusterError(
            f"cannot bind the raft port {address}: {exc.strerror or exc}; another process "
            "(another dkron-lab node?) may hold it - stop it or choose another port"
        ) from None


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"raft address {address!r} is not host:port (e.g. 127.0.0.1:6868)")
    return host, int(port)


def _check_addresses(settings: RaftSettings) -> None:
    for address in (settings.self_address, settings.bind_address, *settings.partners):
        if address is not None:
            _split_address(address)
    if settings.self_address is None and not settings.partners:
        raise ValidationError("a read-only raft replica needs the voters' addresses in partners")
    if settings.self_address is None and settings.compaction_split:
        raise ValidationError("compaction_split needs self_address (pysyncobj limitation)")


def _check_timing(s: RaftSettings) -> None:
    rules = [
        (s.tick_period > 0, "tick_period must be > 0"),
        (s.heartbeat_period * 3 < s.election_timeout_min, "election_timeout_min > 3 heartbeats"),
        (s.election_timeout_min < s.election_timeout_max, "election_timeout_max > _min"),
        (s.connection_timeout >= s.election_timeout_max, "connection_timeout >= election max"),
        (
            s.leader_fallback_timeout >= s.election_timeout_max,
            "leader_fallback_timeout >= election_timeout_max",
        ),
        (s.connection_retry >= 0, "connection_retry must be >= 0"),
        (s.compaction_min_entries >= 2, "compaction_min_entries must be >= 2"),
        (s.compaction_min_time > 0, "compaction_min_time must be > 0"),
    ]
    broken = [message for ok, message in rules if not ok]
    if broken:
        raise ValidationError("raft timing settings are inconsistent: " + "; ".join(broken))


def _check_exposure(settings: RaftSettings) -> None:
    """B10: without a cluster key the raft port unpickles whatever anyone sends it, loopback
    included (any local user): a password is required."""
    if not settings.password:
        raise ValidationError(
            "the raft port needs the cluster key as its password: without one anyone who can "
            "connect to it (any local user too) could read all state and run code in this "
            "process. Create a key with `dkron-lab keygen`"
        )
