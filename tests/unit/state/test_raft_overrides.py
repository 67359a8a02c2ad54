"""The pysyncobj fixes of ``dkron_lab.state.raft`` that can be shown in one process.

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
from dkron_lab.state.journal import RaftJournal
from dkron_lab.state.raft import (
    JOURNAL_FILE,
    RaftNode,
    RaftSettings,
    _Core,
    _sync_obj_conf,
)

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
    by a thread; its only partner does not exist, so it never elects itself."""

    def __init__(self, tmp_path: Path, entries: int) -> None:
        self.partner = f"127.0.0.1:{free_port()}"
        settings = RaftSettings(
            password=KEY,
            data_dir=tmp_path,
            self_address=f"127.0.0.1:{free_port()}",
            partners=(self.partner,),
        )
        journal = RaftJournal(tmp_path / JOURNAL_FILE)
        journal.add(b"\x01", 1, 0)  # pysyncobj's initial no-op
        for i in range(2, entries + 2):
            journal.add(b'\x00{"id":%d}' % i, i, 1)
        journal.setCurrentTerm(1, None)
        self.applied: list[int] = []
        conf = _sync_obj_conf(settings, journal, None, None)
        self.core = _Core(settings, conf, journal, self._apply)

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


def test_b8_b9_defaults_reach_pysyncobj(tmp_path: Path) -> None:
    settings = RaftSettings(password=KEY, data_dir=tmp_path, self_address="127.0.0.1:7001")
    journal = RaftJournal(tmp_path / JOURNAL_FILE)
    conf = _sync_obj_conf(settings, journal, None, None)
    journal.close()
    assert conf.leaderFallbackTimeout == 2.0
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
