"""``RaftNode``: the asyncio-facing API of one member of the Raft group.

Owns: the lifecycle (``start``, ``stop``, ``wait_ready``), ``submit``, membership
(``add_peer``, ``remove_peer``, ``transfer_leadership``, ``peers``) and the cheap reads
(``is_leader``, ``leader``, ``term``, ``status``). Everything that runs on the raft thread is
inherited from ``thread._RaftThread``; membership work is handed to that thread as steps
(``membership``). May call: ``thread``, ``membership``, ``settings``, ``journal``, and the core
(``_core``) to build it and to read its members for ``peers()`` and ``status()``; anything
that changes pysyncobj's state goes through the raft thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dkron_lab.errors import (
    ClusterError,
    InsufficientStorage,
    NoQuorumError,
    NotLeaderError,
    ReplicationTimeout,
    ValidationError,
)
from dkron_lab.state.raft._core import _ENCODER, _REGULAR, _Core, _sync_obj_conf
from dkron_lab.state.raft._pysyncobj import SyncObjException
from dkron_lab.state.raft.journal import RaftJournal
from dkron_lab.state.raft.membership import (
    _DENIED,
    _Call,
    _change_step,
    _peer,
    _probe_reachable,
    _Step,
    _transfer_step,
)
from dkron_lab.state.raft.protocol import StateMachine
from dkron_lab.state.raft.settings import JOURNAL_FILE, SNAPSHOT_FILE, RaftSettings, _split_address
from dkron_lab.state.raft.thread import _close_pysyncobj_pipe, _Pending, _RaftThread, _View

_RETRY_PERIOD = 0.02  # between attempts of a membership change or transfer the leader denied


class RaftNode(_RaftThread):
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
