"""A node's services without processes, in fake time, for their unit tests.

``Harness`` builds the real services (``Outcomes``, ``Runs``, ``FollowUps``, ``Roster``,
``Peering``) of node ``s1`` around one real ``JobState`` and a ``Shared`` whose ``submit``
applies each command to that state at once (every entry commits as it is made: Raft is not
what these tests are about; ``leader_model`` is where it is), or raises the error ``refuse``
holds for its type (an outcome unknown), on a ``FakeClock``. What lies
outside the node is faked and recorded: ``FakePeers`` (the calls to other nodes, which may be
made to hang), ``FakeRunner`` (the runs started here), ``FakeRaft`` (the voters).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from leader_model import settle

from dkron_lab import codec
from dkron_lab.clock import interval_seconds
from dkron_lab.config import Config
from dkron_lab.errors import DkronError, error_class
from dkron_lab.followups import FollowUps
from dkron_lab.membership import Liveness, NodeInfo
from dkron_lab.metrics import Metrics
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.notify import Notifier
from dkron_lab.outcomes import Outcomes
from dkron_lab.peering import Peering
from dkron_lab.roster import Roster
from dkron_lab.runs import Runs
from dkron_lab.services import Shared
from dkron_lab.state.commands import Command
from dkron_lab.state.machine import JobState, command
from dkron_lab.testing import FakeClock

__all__ = ["T0", "FakePeers", "FakeRaft", "FakeRunner", "Harness", "Post", "settle"]

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ME = "s1"


@dataclass(frozen=True)
class Post:
    at: datetime
    address: str
    path: str
    payload: dict[str, Any]
    target: str


@dataclass
class FakePeers:
    """``Peers.post`` that records each call; calls to an address in ``hanging`` never end."""

    clock: FakeClock
    posts: list[Post] = field(default_factory=list)
    hanging: set[str] = field(default_factory=set)

    async def post(
        self,
        address: str,
        path: str,
        payload: dict[str, Any],
        *,
        target: str,
        timeout: float | None = None,
    ) -> Any:
        self.posts.append(Post(self.clock.now(), address, path, payload, target))
        if address in self.hanging:
            await asyncio.Event().wait()
        return None

    def to(self, target: str, path: str) -> list[Post]:
        return [p for p in self.posts if p.target == target and p.path == path]


@dataclass
class FakeRunner:
    """What runs on this node: ``started`` records each start, ``busy`` is set by the test."""

    started: list[tuple[str, int, int]] = field(default_factory=list)  # (job, group, attempt)
    running: list[Execution] = field(default_factory=list)

    def start(
        self, job: Job, *, group: int, attempt: int = 1, scheduled_at: datetime | None = None
    ) -> None:
        self.started.append((job.name, group, attempt))

    def busy(self) -> list[Execution]:
        return list(self.running)


@dataclass
class FakeRaft:
    """The voters, and each change made to them: (time, "add" or "remove", address)."""

    clock: FakeClock
    voters: list[str] = field(default_factory=lambda: ["127.0.0.1:8946"])
    changes: list[tuple[datetime, str, str]] = field(default_factory=list)

    def peers(self) -> list[dict[str, Any]]:
        return [{"address": address} for address in self.voters]

    async def add_peer(self, address: str) -> None:
        self.changes.append((self.clock.now(), "add", address))
        if address not in self.voters:
            self.voters.append(address)

    async def remove_peer(self, address: str) -> None:
        self.changes.append((self.clock.now(), "remove", address))
        self.voters.remove(address)


class Harness:
    """Node ``s1``'s services on a fake clock; ``leader`` says whether it leads."""

    def __init__(self, *, leader: bool = True, start: datetime = T0) -> None:
        self.clock = FakeClock(start)
        self.state = JobState()
        self.leader = leader
        self.tasks: set[asyncio.Task[None]] = set()
        self.refuse: dict[str, DkronError] = {}  # command type -> the error its next submit raises
        self.config = Config(node_name=ME, server=True, bind_addr="127.0.0.1:8946")
        self.shared = Shared(
            name=ME,
            config=self.config,
            clock=self.clock,
            state=self.state,
            submit=self.submit,
            spawn=self.spawn,
            call_soon=lambda callback, *args: asyncio.get_running_loop().call_soon(callback, *args),
            is_leader=lambda: self.leader,
            term=lambda: 1,
        )
        self.peers = FakePeers(self.clock)
        self.runner = FakeRunner()
        self.raft = FakeRaft(self.clock)
        self.liveness = Liveness(monotonic=interval_seconds(self.clock))
        metrics = Metrics(ME, prometheus=False)
        self.outcomes = Outcomes(self.shared, metrics, replicate=self.state_apply)
        self.runs = Runs(
            self.shared,
            runner=self.runner,
            peers=self.peers,
            liveness=self.liveness,
            notifier=Notifier(node_name=ME),
            outcomes=self.outcomes,
            metrics=metrics,
            rng=random.Random(7),
        )
        self.followups = FollowUps(
            self.shared,
            runs=self.runs,
            outcomes=self.outcomes,
            liveness=self.liveness,
            rng=random.Random(7),
            ready=lambda: True,
        )
        self.roster = Roster(
            self.shared,
            liveness=self.liveness,
            peers=self.peers,
            runner=self.runner,
            runs=self.runs,
            outcomes=self.outcomes,
            leader_address=lambda: "127.0.0.1:8946" if self.leader else None,
        )
        self.peering = Peering(
            self.shared,
            raft=self.raft,
            peers=self.peers,
            roster=self.roster,
            ready=lambda: True,
        )

    # -- Shared ---------------------------------------------------------------------------------

    async def state_apply(self, cmd: Command) -> dict[str, Any]:
        return self.state.apply(cmd.encode())

    async def submit(self, cmd: Command, *, fenced: bool = False) -> dict[str, Any]:
        refusal = self.refuse.pop(cmd.kind, None)
        if refusal is not None:  # its outcome unknown, as when a leader loses its election
            raise refusal
        result = self.state.apply(cmd.encode())
        if "error" in result:
            raise error_class(result["error"]["type"])(result["error"]["message"])
        return result

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- the cluster around s1 -----------------------------------------------------------------

    def register(self, name: str, *, server: bool = False) -> None:
        """Register node ``name`` (s1 is registered by ``Roster.register``)."""
        info = NodeInfo(
            name=name,
            role="server" if server else "agent",
            http=f"{name}.test:8080",
            raft=f"{name}.test:8946" if server else "",
        )
        self.state.apply(command("register", node=info.to_dict()))

    def add_job(self, job: Job) -> Job:
        assert "error" not in self.state.apply(command("set_job", job=codec.job_to_record(job)))
        return self.state.jobs[job.name]

    async def advance(self, seconds: float, *, step: float = 0.1) -> None:
        """Move the fake clock ``seconds`` forward in ``step``s, letting the loop run at each."""
        for _ in range(round(seconds / step)):
            self.clock.advance(timedelta(seconds=step))
            await settle()
