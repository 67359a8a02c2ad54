"""A model of a cluster's leadership around the real ``Leader``, ``Scheduler`` and ``JobState``,
in fake time, for the leader's unit tests and the fire invariant.

The replicated state is one ``JobState`` (what every server holds once an entry commits).
``FakeLog`` stands for Raft: a fenced submit appends an entry; ``commit()`` applies the oldest
one and answers its submitter only if the term has not changed since (else ``NotLeaderError``,
as the fencing does: the entry is applied all the same); ``drop()`` discards the newest
uncommitted entry (a new leader's log never had it). Each node keeps its own schedule index,
moved by the state's events as ``Node`` moves it. Starts reach one target, ``w1``, which
(like every node) ignores a group it has already started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import NotLeaderError
from dkron_lab.leader import CatchUpSettings, Leader
from dkron_lab.model import schedule
from dkron_lab.model.job import Job, parse_job_schedule
from dkron_lab.scheduler import Fire, ScheduleIndex
from dkron_lab.state.machine import (
    FireClaimed,
    FiresSkipped,
    JobChanged,
    JobState,
    Limits,
    command,
)
from dkron_lab.testing import FakeClock

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TARGET = "w1"


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


@dataclass
class _Entry:
    command: dict[str, Any]
    term: int
    answer: asyncio.Future[dict[str, Any]]


@dataclass
class FakeLog:
    state: JobState
    term: int = 1
    pending: list[_Entry] = field(default_factory=list)

    async def submit(self, cmd: dict[str, Any]) -> dict[str, Any]:
        entry = _Entry(cmd, self.term, asyncio.get_running_loop().create_future())
        self.pending.append(entry)
        return await entry.answer

    def commit(self) -> None:
        if not self.pending:
            return
        entry = self.pending.pop(0)
        result = self.state.apply(entry.command)
        if entry.answer.done():
            return
        if entry.term == self.term:
            entry.answer.set_result(result)
        else:
            entry.answer.set_exception(NotLeaderError("the term changed"))

    def drop(self) -> None:
        if self.pending:
            entry = self.pending.pop()
            if not entry.answer.done():
                entry.answer.set_exception(NotLeaderError("deposed"))


class ModelNode:
    """A server's share of leadership: its schedule index and, while it leads, a ``Leader``."""

    def __init__(self, name: str, cluster: ModelCluster) -> None:
        self.name = name
        self.cluster = cluster
        self.index = ScheduleIndex()
        self.leader: Leader | None = None
        self.task: asyncio.Task[None] | None = None

    # -- Starts -------------------------------------------------------------------------------

    def targets(self, job: Job) -> tuple[str, ...]:
        return (TARGET,)

    def new_group(self) -> int:
        return self.cluster.new_group()

    @property
    def limits(self) -> Limits:
        return Limits(0, {})

    def start_fires(self, fires: list[Fire], *, local: bool, remote: bool) -> None:
        if remote:  # the target is never this node
            for fire in fires:
                self.cluster.run_on_target(fire)

    # -- leadership ---------------------------------------------------------------------------

    def lead(self, settings: CatchUpSettings) -> None:
        self.leader = Leader(
            state=self.cluster.state,
            index=self.index,
            clock=self.cluster.clock,
            submit=self.cluster.log.submit,
            starts=self,
            catch_up=settings,
        )
        self.index.changed = self.leader.scheduler.poke
        self.task = asyncio.ensure_future(self.leader.run())

    async def depose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.leader = self.task = None
        self.index.changed = lambda: None

    def on_event(self, event: Any) -> None:
        if isinstance(event, JobChanged):
            self.index.update(event.name, event.job, self.cluster.clock.now())
        elif self.leader is None and isinstance(event, FireClaimed):
            self.index.fired(event.job_name, event.scheduled_at)
        elif self.leader is None and isinstance(event, FiresSkipped):
            last = max(codec.parse_time(s["last"], "last") for s in event.spans)  # type: ignore[type-var]
            self.index.fired(event.job_name, last)


class ModelCluster:
    def __init__(self, jobs: list[Job], *, policy: str = "all") -> None:
        self.clock = FakeClock(T0)
        self.state = JobState()
        self.log = FakeLog(self.state)
        self.settings = CatchUpSettings(policy=policy, window=timedelta(hours=1))
        self.nodes = {name: ModelNode(name, self) for name in ("s1", "s2", "s3")}
        self.started: dict[tuple[str, datetime], set[int]] = defaultdict(set)
        self.skipped: list[tuple[str, dict[str, Any]]] = []
        self._groups = 0
        self._ran: set[int] = set()
        for node in self.nodes.values():
            self.state.subscribe(node.on_event)
        self.state.subscribe(self._on_event)
        for job in jobs:
            self.state.apply(command("set_job", job=codec.job_to_record(job)))

    def new_group(self) -> int:
        self._groups += 1
        return self._groups

    def run_on_target(self, fire: Fire) -> None:
        if fire.group not in self._ran:  # a node ignores a group it has already started
            self._ran.add(fire.group)
            self.started[fire.job, fire.scheduled_at].add(fire.group)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, FiresSkipped):
            self.skipped += [(event.job_name, span) for span in event.spans]

    @property
    def leader(self) -> ModelNode | None:
        return next((n for n in self.nodes.values() if n.leader is not None), None)

    async def elect(self, name: str) -> None:
        """A new term: the leader (if any) is deposed, ``name`` leads, and its first entry
        commits, with every entry before it still in the log."""
        current = self.leader
        if current is not None:
            await current.depose()
        self.log.term += 1
        self.nodes[name].lead(self.settings)
        await settle()
        for _ in range(len(self.log.pending)):  # up to the new leader's first entry
            self.log.commit()
            await settle()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        await settle()

    async def commit_all(self) -> None:
        while self.log.pending:
            self.log.commit()
            await settle()

    def committed_claims(self) -> dict[tuple[str, datetime], int]:
        claims = {}
        for gid, group in self.state.groups.items():
            at = codec.parse_time(group["scheduled_at"], "scheduled_at")
            assert at is not None
            assert (group["job"], at) not in claims, "two committed claims of one instant"
            claims[group["job"], at] = gid
        return claims

    def skipped_instants(self) -> list[tuple[str, datetime]]:
        found = []
        for name, span in self.skipped:
            job = self.state.jobs[name]
            sched = parse_job_schedule(job)
            first = codec.parse_time(span["first"], "first")
            last = codec.parse_time(span["last"], "last")
            assert first is not None and last is not None
            instants = _instants(sched, first - timedelta(microseconds=1), last)
            assert len(instants) == span["count"], span
            found += [(name, at) for at in instants]
        return found

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.depose()
        for entry in self.log.pending:
            entry.answer.cancel()


def _instants(sched: schedule.Schedule, after: datetime, until: datetime) -> list[datetime]:
    found = []
    while (at := schedule.next_fire(sched, after)) is not None and at <= until:
        found.append(at)
        after = at
    return found


def due_instants(job: Job, until: datetime) -> list[datetime]:
    """Every instant of ``job`` after T0 up to ``until``."""
    return _instants(parse_job_schedule(job), T0, until)
