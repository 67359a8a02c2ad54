"""Every change dkron-lab makes to pysyncobj 0.3.17: the ``SyncObj`` subclass and two hooks.

pysyncobj is patched here, not forked (docs/raft.md has the why), so this module is what to
compare with a new pysyncobj release: every method below that overrides one of pysyncobj's
(including its name-mangled privates, ``_SyncObj__...``) and the two module-level hooks at the
end. Our journal replaces ``FileJournal`` (B2, B2b, B7; installed through ``createJournal``),
snapshot-mode AppendEntries cannot commit unapplied entries (B5), a success reply cannot
rewind ``nextIndex`` and a follower keeps the entries it holds already (B1), the leader steps
down after ``leader_fallback_timeout`` (CheckQuorum, B8). Elections start with a pre-vote, and
a voter that hears from a live leader ignores vote requests (PreVote and leader stickiness: a
server cut off from the others keeps its term and cannot depose the leader when it comes
back). Commands in the log are ``b"\\x00" + compact JSON`` and membership entries
``b"\\x02" + JSON``: no pickled objects in the log or in snapshots, and none is ever loaded
from them. pysyncobj's utility commands that change the cluster (add, remove, transfer,
set_version), sent to the raft port, are refused: they would bypass the API's authentication.

Longer than the package's other modules on purpose: ``_Core`` is one class because pysyncobj
calls these overrides through ``self``; splitting it into mixins would hide which of
pysyncobj's methods are replaced. The pure decisions it makes live in ``elections``.

May call: pysyncobj (through ``_pysyncobj``), ``elections``, ``journal``, ``settings`` and
``transport``; never the asyncio side (``node``, ``thread``), which reaches it through the
``_dk_*`` callbacks it sets.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from dkron_lab.errors import InsufficientStorage
from dkron_lab.state.raft._pysyncobj import FAIL_REASON, Journal, SyncObj, SyncObjConf
from dkron_lab.state.raft._pysyncobj import syncobj as _pysyncobj
from dkron_lab.state.raft.elections import (
    _grant_pre_vote,
    _held_prefix,
    _in_lease,
    _log_up_to_date,
    _majority,
    _PreVoteRound,
)
from dkron_lab.state.raft.journal import RaftData, RaftJournal
from dkron_lab.state.raft.settings import SNAPSHOT_FILE, RaftSettings
from dkron_lab.state.raft.transport import KNOCK_AFTER, _Transport

logger = logging.getLogger(__name__)

_REGULAR = bytes([_pysyncobj._COMMAND_TYPE.REGULAR])
_MEMBERSHIP = bytes([_pysyncobj._COMMAND_TYPE.MEMBERSHIP])
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
EARLY_ELECTION = (0.05, 0.55)  # seconds after the leader's connection closed


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
