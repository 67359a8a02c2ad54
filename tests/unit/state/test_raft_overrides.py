"""The pysyncobj fixes of ``dkron_lab.state.raft._core`` that can be shown in one process.

B1 and B5 drive the patched ``SyncObj`` by hand (no raft thread, ticks called by the test) and
check the unpatched base method really misbehaves on the same input, so each test can fail.
B6/B8/B9/B10 use real nodes on free loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pysyncobj import SyncObj
from pysyncobj.node import TCPNode

from dkron_lab.errors import (
    ClusterError,
    NoQuorumError,
    NotLeaderError,
    ReplicationTimeout,
    ValidationError,
)
from dkron_lab.state.raft import JOURNAL_FILE, RaftNode, RaftSettings
from dkron_lab.state.raft._core import _Core, _sync_obj_conf
from dkron_lab.state.raft.elections import (
    _grant_pre_vote,
    _held_prefix,
    _in_lease,
    _log_up_to_date,
    _majority,
)
from dkron_lab.state.raft.journal import RaftJournal

KEY = "raft-test-cluster-key"  # the raft port never runs without one


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Recorder:
    """A minimal state machine: remembers the ids it applied."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ids: list[int] = []

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        self.ids.append(command["id"])
        return {"applied": len(self.ids)}

    def snapshot(self) -> dict[str, Any]:
        return {"ids": list(self.ids)}

    def restore(self, data: dict[str, Any]) -> None:
        self.ids = list(data["ids"])


class ManualCore:
    """A patched SyncObj whose journal holds ``entries`` (index 2..) of term 1, never ticked
    by a thread; its partners do not exist, so it never elects itself (unless a test marks
    them connected). What it sends is kept in ``outbox`` as (partner address, message)."""

    def __init__(
        self,
        tmp_path: Path,
        entries: int,
        *,
        me: str | None = None,
        partners: tuple[str, ...] | None = None,
    ) -> None:
        self.me = me or f"127.0.0.1:{free_port()}"
        self.partners = partners or (f"127.0.0.1:{free_port()}",)
        self.partner = self.partners[0]
        settings = RaftSettings(
            password=KEY, data_dir=tmp_path, self_address=self.me, partners=self.partners
        )
        tmp_path.mkdir(exist_ok=True)
        journal = RaftJournal(tmp_path / JOURNAL_FILE)
        journal.add(b"\x01", 1, 0)  # pysyncobj's initial no-op
        for i in range(2, entries + 2):
            journal.add(b'\x00{"id":%d}' % i, i, 1)
        journal.setCurrentTerm(1, None)
        self.journal = journal
        self.applied: list[int] = []
        conf = _sync_obj_conf(settings, journal, None, None)
        self.core = _Core(settings, conf, journal, self._apply)
        self.outbox: list[tuple[str, dict[str, Any]]] = []
        transport = self.core._SyncObj__transport
        transport.send = lambda node, message: self.outbox.append((str(node.id), message))

    def node(self, address: str) -> TCPNode:
        """pysyncobj's node object for a partner (as messages from it arrive)."""
        return next(n for n in self.core.otherNodes if str(n.id) == address)

    def connect_all(self) -> None:
        """Count every partner as connected, and keep them so: the transport's attempts to
        reach the (absent) partners fail in every tick."""
        self.core._SyncObj__transport.setOnNodeDisconnectedCallback(lambda node: None)
        self.core._SyncObj__connectedNodes.update(self.core.otherNodes)

    def sent(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """The messages of type ``kind`` sent so far, taken out of the outbox."""
        taken = [(to, m) for to, m in self.outbox if m["type"] == kind]
        self.outbox = [(to, m) for to, m in self.outbox if m["type"] != kind]
        return taken

    def _apply(self, payload: bytes) -> dict[str, Any]:
        self.applied.append(json.loads(payload)["id"])
        return {}

    def close(self) -> None:
        self.core.destroy()


def deliver(core: _Core, node: TCPNode, message: dict[str, Any], *, patched: bool) -> None:
    if patched:
        core._SyncObj__onMessageReceived(node, message)
    else:
        SyncObj._SyncObj__onMessageReceived(core, node, message)


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[ManualCore]:
    core = ManualCore(tmp_path, entries=5)
    yield core
    core.close()


@pytest.mark.parametrize("patched", [True, False])
def test_b5_snapshot_mode_append_entries_cannot_commit_unapplied_entries(
    manual: ManualCore, patched: bool
) -> None:
    core = manual.core
    core.doTick(0.0)
    assert core.raftCommitIndex == 1 and manual.applied == []
    # A new leader (term 2) is still serializing its snapshot for us: no log-matching check.
    message = {"type": "append_entries", "term": 2, "commit_index": 6, "serialized": None}
    deliver(core, TCPNode(manual.partner), message, patched=patched)
    core.doTick(0.0)

    if patched:
        assert core.raftCommitIndex == 1
        assert manual.applied == []  # our term-1 entries were never committed by anyone
    else:
        assert manual.applied == [2, 3, 4, 5, 6]  # B5: stale entries applied


@pytest.mark.parametrize("patched", [True, False])
def test_b1_success_reply_does_not_rewind_next_index(manual: ManualCore, patched: bool) -> None:
    core, partner = manual.core, TCPNode(manual.partner)
    core._SyncObj__onBecomeLeader()  # appends its no-op at index 7
    core._SyncObj__raftNextIndex[partner] = 8  # everything up to 7 is in flight
    reply = {"type": "next_node_idx", "next_node_idx": 4, "success": True, "reset": False}
    deliver(core, partner, reply, patched=patched)

    assert core._SyncObj__raftMatchIndex[partner] == 3
    assert core._SyncObj__raftNextIndex[partner] == (8 if patched else 4)


def test_b1_reset_reply_still_moves_next_index_back(manual: ManualCore) -> None:
    core, partner = manual.core, TCPNode(manual.partner)
    core._SyncObj__onBecomeLeader()
    core._SyncObj__raftNextIndex[partner] = 8
    reply = {"type": "next_node_idx", "next_node_idx": 3, "success": False, "reset": True}
    deliver(core, partner, reply, patched=True)
    assert core._SyncObj__raftNextIndex[partner] == 3  # the follower's log really is shorter


def _addresses(count: int) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(count)]


@pytest.mark.parametrize("patched", [True, False])
def test_b1_a_stale_reset_reply_resends_applied_entries_which_are_kept(
    tmp_path: Path, patched: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15's "truncating already-applied log entries", step by step. A leader sends a
    lagging follower (a replica after a reconnection, a server rejoining, any follower of a
    new leader) a second AppendEntries before the follower's reset reply to the first comes
    back; both are answered with the same reset. The first moves ``nextIndex`` back, the
    follower catches up and applies; the second moves it back again (B1's guard covers only
    success replies) and the leader re-sends what the follower applied. pysyncobj truncates
    those entries and appends them again; ours keeps them and acknowledges."""
    a, b = _addresses(2)
    leader = ManualCore(tmp_path / "leader", entries=11, me=a, partners=(b,))  # 1..12
    follower = ManualCore(tmp_path / "follower", entries=5, me=b, partners=(a,))  # 1..6
    try:
        leader.connect_all()
        leader.core._SyncObj__raftCommitIndex = 12
        leader.core._SyncObj__onBecomeLeader()  # appends 13; AppendEntries twice, nextIndex 14
        first, second = [m for _, m in leader.sent("append_entries")]
        for message in (first, second):
            deliver(follower.core, follower.node(a), message, patched=patched)
        reset, stale_reset = [m for _, m in follower.sent("next_node_idx")]
        assert reset == stale_reset == {**reset, "next_node_idx": 7, "reset": True}

        deliver(leader.core, leader.node(b), reset, patched=True)
        leader.core._SyncObj__sendAppendEntries()
        (catch_up,) = [m for _, m in leader.sent("append_entries")]
        deliver(follower.core, follower.node(a), catch_up, patched=patched)
        follower.core.doTick(0.0)
        assert follower.applied == list(range(2, 13))
        follower.sent("next_node_idx")

        deliver(leader.core, leader.node(b), stale_reset, patched=True)  # nextIndex back to 7
        leader.core._SyncObj__sendAppendEntries()
        (again,) = [m for _, m in leader.sent("append_entries")]
        assert again["prevLogIdx"] == 6 and [e[1] for e in again["entries"]] == list(range(7, 14))
        deliver(follower.core, follower.node(a), again, patched=patched)
        (reply,) = [m for _, m in follower.sent("next_node_idx")]
    finally:
        leader.close()
        follower.close()

    truncated = "truncating already-applied log entries from index 7" in caplog.text
    assert truncated is not patched
    assert reply["success"] and reply["next_node_idx"] == 14
    assert follower.journal.last_index == 13


@pytest.mark.parametrize("patched", [True, False])
def test_b1_entries_held_already_leave_the_log_alone(
    tmp_path: Path, patched: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A re-sent AppendEntries whose entries this follower holds, followed by more of its
    log: nothing is deleted, the commit index moves only up to what the message covered, and
    the reply acknowledges just that. pysyncobj cuts the log back to the message's end."""
    follower = ManualCore(tmp_path, entries=12)  # 1..13, term 1
    try:
        core, leader = follower.core, follower.node(follower.partner)
        deliver(core, leader, _heartbeat(1, prev=13), patched=patched)
        follower.outbox.clear()
        again = [(b'\x00{"id":%d}' % i, i, 1) for i in range(7, 11)]
        message = _heartbeat(1, prev=6) | {"entries": again, "commit_index": 12}
        deliver(core, leader, message, patched=patched)
        (reply,) = [m for _, m in follower.sent("next_node_idx")]
        last, commit = follower.journal.last_index, core.raftCommitIndex
    finally:
        follower.close()
    assert reply["success"] and reply["next_node_idx"] == 11
    assert (last, commit) == ((13, 10) if patched else (10, 10))
    assert "truncating" not in caplog.text  # nothing was applied yet: pysyncobj is silent


@pytest.mark.parametrize(
    ("entries", "held"),
    [
        ([], 0),
        ([(b"", 3, 1)], 1),
        ([(b"", 3, 1), (b"", 4, 1), (b"", 5, 2)], 2),  # 5 conflicts: deleted from there on
        ([(b"", 5, 1), (b"", 6, 1)], 1),  # 6 is beyond the log
        ([(b"", 2, 2)], 0),
    ],
)
def test_held_prefix_counts_the_entries_a_log_holds_already(
    entries: list[tuple[bytes, int, int]], held: int
) -> None:
    terms = {1: 0, 2: 1, 3: 1, 4: 1, 5: 1}  # index -> term of a log ending at 5
    assert _held_prefix(entries, terms.get) == held


def test_pre_vote_decisions() -> None:
    assert _log_up_to_date((2, 5), (2, 5)) and _log_up_to_date((3, 1), (2, 9))
    assert not _log_up_to_date((2, 4), (2, 5)) and not _log_up_to_date((1, 9), (2, 1))
    assert _in_lease(leading=True, leader_known=True, since_heard=99.0, lease=0.4)
    assert _in_lease(leading=False, leader_known=True, since_heard=0.39, lease=0.4)
    assert not _in_lease(leading=False, leader_known=True, since_heard=0.4, lease=0.4)
    assert not _in_lease(leading=False, leader_known=False, since_heard=0.0, lease=0.4)
    assert _grant_pre_vote(term=3, our_term=2, log_ok=True, lease=False)
    assert not _grant_pre_vote(term=3, our_term=2, log_ok=True, lease=True)  # stickiness
    assert not _grant_pre_vote(term=3, our_term=2, log_ok=False, lease=False)
    assert not _grant_pre_vote(term=2, our_term=2, log_ok=True, lease=False)
    assert [_majority(votes, 3) for votes in (1, 2, 3)] == [False, True, True]
    assert [_majority(votes, 4) for votes in (2, 3)] == [False, True]


@pytest.fixture
def voter(tmp_path: Path) -> Iterator[ManualCore]:
    """A follower in term 1 with a log ending at (index 4, term 1) and two connected partners."""
    core = ManualCore(tmp_path, entries=3, partners=tuple(_addresses(2)))
    core.connect_all()
    yield core
    core.close()


def _heartbeat(term: int, prev: int = 4) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": 1, "entries": []} | {
        "prevLogIdx": prev,
        "prevLogTerm": 1,
    }


def _vote_request(kind: str, term: int, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "term": term, "last_log_index": 4, "last_log_term": 1, **extra}


@pytest.mark.parametrize("patched", [True, False])
def test_a_timed_out_follower_asks_for_pre_votes_before_it_stands(
    voter: ManualCore, patched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not patched:
        monkeypatch.setattr(_Core, "guarded_elections", False)
    core = voter.core
    core._SyncObj__raftElectionDeadline = 0.0
    core.doTick(0.0)
    if not patched:
        assert core.raftCurrentTerm == 2 and len(voter.sent("request_vote")) == 2
        return
    asked = voter.sent("dk_pre_vote")
    assert sorted(to for to, _ in asked) == sorted(voter.partners)
    assert asked[0][1] == _vote_request("dk_pre_vote", 2, round=asked[0][1]["round"])
    assert core.raftCurrentTerm == 1 and not voter.sent("request_vote")  # nothing changed
    assert core._SyncObj__raftElectionDeadline > 0  # re-armed
    denial = {"type": "dk_pre_vote_reply", "term": 2, "round": asked[0][1]["round"]}
    core._SyncObj__onMessageReceived(voter.node(voter.partners[0]), {**denial, "granted": False})
    core.doTick(0.0)
    assert core.raftCurrentTerm == 1 and not voter.sent("request_vote")

    core._SyncObj__onMessageReceived(voter.node(voter.partners[1]), {**denial, "granted": True})
    core.doTick(0.0)  # a majority (itself and one partner): pysyncobj's election
    assert core.raftCurrentTerm == 2 and len(voter.sent("request_vote")) == 2


def test_a_pre_vote_is_denied_while_a_leader_is_heard_and_changes_nothing(
    voter: ManualCore,
) -> None:
    core, leader, candidate = voter.core, *(voter.node(a) for a in voter.partners)
    core._SyncObj__onMessageReceived(leader, _heartbeat(1))
    voter.outbox.clear()

    def answer(**request: Any) -> bool:
        core._SyncObj__onMessageReceived(
            candidate, _vote_request("dk_pre_vote", round=7, **request)
        )
        ((to, reply),) = voter.sent("dk_pre_vote_reply")
        assert to == str(candidate.id) and reply["round"] == 7 and reply["term"] == request["term"]
        return bool(reply["granted"])

    assert not answer(term=2)  # the leader was heard just now
    core._dk_leader_heard -= core._dk_lease  # the lease ran out
    assert answer(term=2)
    assert not answer(term=2, last_log_index=3)  # a shorter log
    assert not answer(term=1)  # not a newer term
    assert core.raftCurrentTerm == 1 and core._SyncObj__votedForNodeId is None
    assert core._getLeader() == leader and not voter.outbox


@pytest.mark.parametrize("patched", [True, False])
def test_stickiness_ignores_vote_requests_but_lets_a_transfer_through(
    voter: ManualCore, patched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not patched:
        monkeypatch.setattr(_Core, "guarded_elections", False)
    core, leader, candidate = voter.core, *(voter.node(a) for a in voter.partners)
    core._SyncObj__onMessageReceived(leader, _heartbeat(1))
    core._SyncObj__onMessageReceived(candidate, _vote_request("request_vote", 5))
    if patched:
        assert core.raftCurrentTerm == 1 and not voter.sent("response_vote")
    else:
        assert core.raftCurrentTerm == 5 and voter.sent("response_vote")

    core._SyncObj__onMessageReceived(leader, _heartbeat(core.raftCurrentTerm))
    term = core.raftCurrentTerm + 1
    core._SyncObj__onMessageReceived(candidate, {"type": "dk_transfer_vote", "term": term})
    core._SyncObj__onMessageReceived(candidate, _vote_request("request_vote", term))
    assert core.raftCurrentTerm == term
    assert voter.sent("response_vote") == [
        (str(candidate.id), {"type": "response_vote", "term": term})
    ]


def test_a_deposed_leader_is_told_the_newer_term_and_steps_down(voter: ManualCore) -> None:
    core, peer = voter.core, voter.node(voter.partners[0])
    core._SyncObj__setCurrentTerm(3, None)
    core._SyncObj__onMessageReceived(peer, _heartbeat(2))  # from a leader of term 2
    assert voter.sent("dk_newer_term") == [(str(peer.id), {"type": "dk_newer_term", "term": 3})]
    assert core._getLeader() is None  # pysyncobj ignores it

    core._SyncObj__onBecomeLeader()
    core._SyncObj__onMessageReceived(peer, {"type": "dk_newer_term", "term": 4})
    assert not core._isLeader() and core.raftCurrentTerm == 4 and core._getLeader() is None


def test_b8_b9_defaults_reach_pysyncobj(tmp_path: Path) -> None:
    settings = RaftSettings(password=KEY, data_dir=tmp_path, self_address="127.0.0.1:7001")
    journal = RaftJournal(tmp_path / JOURNAL_FILE)
    conf = _sync_obj_conf(settings, journal, None, None)
    journal.close()
    assert conf.leaderFallbackTimeout == settings.election_timeout_max == 1.4  # CheckQuorum
    assert conf.bindAddress == "127.0.0.1:7001"
    assert conf.appendEntriesUseBatch is False
    assert conf.connectionRetryTime == 1.0
    assert (conf.logCompactionMinEntries, conf.logCompactionMinTime) == (50_000, 3600.0)


async def test_b9_listens_on_self_address_only(tmp_path: Path) -> None:
    port = free_port()
    node = RaftNode(
        RaftSettings(password=KEY, data_dir=tmp_path, self_address=f"127.0.0.1:{port}"), Recorder()
    )
    node.start()
    try:
        listening = [
            c.laddr
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert [address.ip for address in listening] == ["127.0.0.1"]
    finally:
        node.stop()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"self_address": "10.1.2.3:7001"},
        {"self_address": "myhost.example:7001"},
        {"self_address": "127.0.0.1:7001", "bind_address": "0.0.0.0:7001"},
        {"self_address": "127.0.0.1:7001"},  # loopback too: any local user could connect
        {"self_address": "localhost:7001", "password": ""},
        {"self_address": None, "partners": ("10.1.2.3:7001",)},
    ],
)
def test_b10_no_password_is_refused_everywhere(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="needs the cluster key.*dkron-lab keygen"):
        RaftSettings(data_dir=tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"self_address": "10.1.2.3:7001"},
        {"self_address": "localhost:7001"},
        {"self_address": "[::1]:7001"},
        {"self_address": None, "partners": ("10.1.2.3:7001",)},  # binds nothing
    ],
)
def test_b10_allowed_exposures(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    RaftSettings(data_dir=tmp_path, password=KEY, **kwargs)


def test_settings_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not host:port"):
        RaftSettings(password=KEY, data_dir=tmp_path, self_address="127.0.0.1")
    with pytest.raises(ValidationError, match="partners"):
        RaftSettings(password=KEY, data_dir=tmp_path, self_address=None)
    with pytest.raises(ValidationError, match="election_timeout_min > 3 heartbeats"):
        RaftSettings(password=KEY, data_dir=tmp_path, heartbeat_period=0.2)
    with pytest.raises(ValidationError, match="leader_fallback_timeout >= election_timeout_max"):
        RaftSettings(password=KEY, data_dir=tmp_path, leader_fallback_timeout=1.0)  # CheckQuorum
    settings = RaftSettings(
        password=KEY,
        data_dir=str(tmp_path),  # type: ignore[arg-type]
        self_address="127.0.0.1:1",
        partners=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:2"],  # type: ignore[arg-type]
    )
    assert settings.partners == ("127.0.0.1:2",) and settings.data_dir == tmp_path


@pytest.fixture
async def minority(tmp_path: Path) -> Any:
    """A voter whose only partner never starts: it can never be leader."""
    nodes: list[RaftNode] = []

    def make(**kwargs: Any) -> RaftNode:
        settings = RaftSettings(
            data_dir=tmp_path / str(len(nodes)),
            self_address=f"127.0.0.1:{free_port()}",
            partners=(f"127.0.0.1:{free_port()}",),
            password=KEY,
            **kwargs,
        )
        nodes.append(RaftNode(settings, Recorder()))
        nodes[-1].start()
        return nodes[-1]

    yield make
    for node in nodes:
        node.stop()


async def test_b6_every_submit_has_a_deadline(minority: Any) -> None:
    node = minority(wait_for_leader=True)  # pysyncobj would queue the command for ever
    with pytest.raises(ReplicationTimeout, match="did not commit within 0.2 s"):
        await node.submit({"id": 1}, timeout=0.2)


async def test_no_leader_fails_fast_and_fenced_needs_leadership(minority: Any) -> None:
    node = minority()
    with pytest.raises(NoQuorumError, match="no raft leader is known"):
        await node.submit({"id": 1})
    with pytest.raises(NotLeaderError, match="not the leader"):
        await node.submit({"id": 2}, fenced=True)
    with pytest.raises(NoQuorumError, match="not ready after 0.1 s"):
        await node.wait_ready(0.1)
    assert not node.is_leader and node.status()["has_quorum"] is False


async def test_stop_fails_waiting_submits(minority: Any) -> None:
    node = minority(wait_for_leader=True)
    waiting = asyncio.ensure_future(node.submit({"id": 1}, timeout=30))
    await asyncio.sleep(0)  # let it reach the raft thread's inbox
    node.stop()
    with pytest.raises(ClusterError, match="raft node stopped before the command"):
        await waiting


def test_b11_the_single_pysyncobj_import_puts_inet_ntop_back() -> None:
    """Importing pysyncobj swaps in a Windows-only ``socket.inet_ntop``; the adapter's one
    import point (``state/raft/_pysyncobj.py``) restores the real one."""
    import _socket

    import dkron_lab.state.raft._pysyncobj  # noqa: F401

    assert socket.inet_ntop is _socket.inet_ntop
    assert socket.inet_ntop(socket.AF_INET, b"\x7f\x00\x00\x01") == "127.0.0.1"
