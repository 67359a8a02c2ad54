"""Who is in the cluster and who is alive.

Registrations (name, role, addresses, tags) are replicated; liveness is not: every node sends a
heartbeat to every server each second, and each server keeps the last one per node in memory
with a TTL (Nomad's model, without a Raft write per heartbeat). Since every server hears every
heartbeat, a new leader knows at once who is alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TTL",
    "LOST_DISPATCH",
    "Liveness",
    "LostRun",
    "NodeInfo",
    "lost_runs",
]

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TTL = 4.0
LOST_DISPATCH = 30.0  # seconds after dispatch that a live node must show a run as started


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """A registered node: what the leader needs to pick it and call it."""

    name: str
    role: str  # "server" or "agent"
    http: str  # host:port of its HTTP listener (internal API)
    raft: str = ""  # host:port of its Raft port; "" for agents
    tags: Mapping[str, str] = field(default_factory=dict)
    region: str = "global"
    left: bool = False  # it said goodbye (graceful stop); it gets no runs until it is back

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "http": self.http,
            "raft": self.raft,
            "tags": dict(self.tags),
            "region": self.region,
            "left": self.left,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeInfo:
        return cls(
            name=str(data["name"]),
            role=str(data["role"]),
            http=str(data["http"]),
            raft=str(data.get("raft", "")),
            tags=dict(data.get("tags", {})),
            region=str(data.get("region", "global")),
            left=bool(data.get("left", False)),
        )


@dataclass(slots=True)
class _Beat:
    at: float
    busy: list[dict[str, Any]]


class Liveness:
    """Last heartbeat per node, with what each node reported running."""

    def __init__(
        self, *, ttl: float = HEARTBEAT_TTL, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._beats: dict[str, _Beat] = {}

    def beat(self, name: str, busy: list[dict[str, Any]]) -> None:
        self._beats[name] = _Beat(self._monotonic(), busy)

    def is_alive(self, name: str) -> bool:
        beat = self._beats.get(name)
        return beat is not None and self._monotonic() - beat.at <= self._ttl

    def busy(self) -> list[dict[str, Any]]:
        """What every live node reported running at its last heartbeat."""
        return [e for name, b in self._beats.items() if self.is_alive(name) for e in b.busy]

    def running_groups(self, name: str) -> set[int]:
        beat = self._beats.get(name)
        return {int(e["group"]) for e in beat.busy} if beat else set()


@dataclass(frozen=True, slots=True)
class LostRun:
    """The run of ``group`` on ``node`` will never report: record it failed, saying ``why``."""

    group: int
    node: str
    why: str


def lost_runs(
    groups: Mapping[int, Mapping[str, Any]],
    now: float,
    *,
    sent: Callable[[int, str], float],
    alive: Callable[[str], bool],
    running: Callable[[str], Collection[int]],
) -> list[LostRun]:
    """Which runs in flight are lost: "running" is a lease, kept only by heartbeats.

    ``groups`` are the replicated groups in flight (``targets``, ``results``, ``retry``,
    ``queued``), ``sent(group, node)`` when the run was dispatched (Unix seconds), ``alive``
    and ``running`` what the heartbeats say. A run is lost when its node stopped answering
    heartbeats (after ``HEARTBEAT_TTL``), or when its node lives but has not shown it running
    ``LOST_DISPATCH`` seconds after dispatch (the call was lost, or the leader that claimed it
    died before sending it). Queued runs and runs waiting for a retry hold no lease.
    """
    lost = []
    for gid, group in groups.items():
        if group.get("queued"):
            continue
        for node in group["targets"]:
            if node in group["results"] or node in group.get("retry", {}):
                continue
            since = now - sent(gid, node)
            if since < HEARTBEAT_TTL:
                continue
            if not alive(node):
                lost.append(LostRun(gid, node, "stopped answering heartbeats"))
            elif gid not in running(node) and since > LOST_DISPATCH:
                lost.append(LostRun(gid, node, "never started this execution (lost dispatch)"))
    return lost
