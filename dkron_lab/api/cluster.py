"""The node and the cluster: health, status, members, leader, leave, Raft peers, what runs, pause
and the concurrency limits."""

from __future__ import annotations

from dkron_lab import codec
from dkron_lab.api.base import ApiMixin, zone_of
from dkron_lab.errors import (
    BadRequest,
    Unavailable,
)
from dkron_lab.model.limits import LimitChange

__all__ = [
    "Busy",
    "Concurrency",
    "Health",
    "IsLeader",
    "Leader",
    "Leave",
    "Members",
    "Pause",
    "RaftPeer",
    "RaftPeers",
    "Status",
    "Unpause",
]


class Health(ApiMixin):
    public = True

    def get(self) -> None:
        fault = self.node.storage_fault
        if fault is not None:  # a full disk or an I/O error: writes are refused until it clears
            self.write_json({"status": "unhealthy", "reason": fault}, status=503)
            return
        self.write_json({"status": "healthy"})


class Status(ApiMixin):
    def get(self) -> None:
        self.write_json(self.node.jobs.info())


class Members(ApiMixin):
    def get(self) -> None:
        members = self.node.jobs.members()
        self.set_header("X-Total-Count", len(members))
        self.write_json(members)


class Leader(ApiMixin):
    def get(self) -> None:
        leader = self.node.jobs.leader()
        if leader is None:
            raise Unavailable("no leader is known yet: wait for the election, then retry")
        self.write_json(leader)


class IsLeader(ApiMixin):
    def get(self) -> None:
        if self.node.is_leader:
            self.write_json("I am a leader")
        else:
            self.write_json("I am a follower", status=404)


class Leave(ApiMixin):
    async def post(self) -> None:
        members = self.node.jobs.members()
        await self.node.leave()
        self.write_json(members)


class RaftPeers(ApiMixin):
    accepts_body = True

    def get(self) -> None:
        peers = self.node.jobs.raft_peers()
        self.set_header("X-Total-Count", len(peers))
        self.write_json(peers)

    async def post(self) -> None:
        body = self.json_body()
        address = body.get("address") if isinstance(body, dict) else None
        if not isinstance(address, str):
            raise BadRequest('send {"address": "host:port"}: the new server\'s --bind-addr')
        await self.node.jobs.add_peer(address)
        self.write_json(self.node.jobs.raft_peers())


class RaftPeer(ApiMixin):
    async def delete(self, peer: str) -> None:
        await self.node.jobs.remove_peer(peer)
        self.write_json(self.node.jobs.raft_peers())


class Busy(ApiMixin):
    def get(self) -> None:
        running = self.node.jobs.busy()
        self.set_header("X-Total-Count", len(running))
        self.write_json(
            [codec.execution_to_json(e, zone_of(self.node, e.job_name)) for e in running]
        )


class Pause(ApiMixin):
    def get(self) -> None:
        self.write_json({"paused": self.node.paused})

    async def post(self) -> None:
        self.write_json({"paused": await self.node.jobs.set_paused(True)})


class Concurrency(ApiMixin):
    """``GET``/``PUT /v1/concurrency``: the cluster-wide limits, with what runs and waits."""

    accepts_body = True

    def get(self) -> None:
        self.write_json(self.node.jobs.concurrency())

    async def put(self) -> None:
        change = LimitChange.from_json(self.json_body())
        self.write_json(await self.node.jobs.set_limits(change))


class Unpause(ApiMixin):
    async def post(self) -> None:
        self.write_json({"paused": await self.node.jobs.set_paused(False)})
