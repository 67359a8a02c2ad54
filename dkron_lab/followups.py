"""What a run leaves to do next, on the leader: queued runs let through by the limits,
retries after their backoff, dependent runs of a successful parent. And on every server, the
manual runs a caller waits for (``POST /v1/jobs/<job>?wait``).

Each follow-up is claimed through a fenced Raft write before it starts, so a new leader takes
over exactly the ones its predecessor left (``resume``). A claim whose outcome is unknown is
tried again a second later, while this node leads. May call: ``Shared.submit``, ``Runs``,
``Outcomes``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import DkronError
from dkron_lab.membership import Liveness
from dkron_lab.outcomes import Outcomes
from dkron_lab.runs import Run, Runs
from dkron_lab.services import Shared
from dkron_lab.state.commands import Claim, Retry
from dkron_lab.state.events import ChildrenDue, GroupFinished, GroupStarted, RetryDue

__all__ = ["FollowUps"]

log = logging.getLogger(__name__)

AGAIN_AFTER = timedelta(seconds=1)


class FollowUps:
    def __init__(
        self,
        shared: Shared,
        *,
        runs: Runs,
        outcomes: Outcomes,
        liveness: Liveness,
        rng: random.Random,
        ready: Callable[[], bool],
    ) -> None:
        self._shared = shared
        self._runs = runs
        self._outcomes = outcomes
        self._liveness = liveness
        self._rng = rng
        self._ready = ready
        self._retrying: set[tuple[int, str, int]] = set()  # (group, node, attempt) due
        self.waiting: dict[int, asyncio.Future[str]] = {}  # manual runs a caller waits for
        shared.state.subscribe(self._on_event, GroupFinished, RetryDue, ChildrenDue, GroupStarted)

    def _on_event(self, event: GroupFinished | RetryDue | ChildrenDue | GroupStarted) -> None:
        self._shared.call_soon(self._follow_up, event)

    def _follow_up(self, event: GroupFinished | RetryDue | ChildrenDue | GroupStarted) -> None:
        if isinstance(event, GroupFinished):
            waiter = self.waiting.pop(event.group, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.status)
            return
        if not self._ready() or not self._shared.is_leader():
            return
        if isinstance(event, GroupStarted):
            self._start_group(event.group)
        elif isinstance(event, RetryDue):
            self._retry_soon(event.job_name, event.group, event.node, event.attempt, event.at)
        else:
            self._shared.spawn(self._run_children())

    def resume(self) -> None:
        """A new leader takes over the retries and dependent runs its predecessor left."""
        state = self._shared.state
        retries = [
            (group["job"], gid, node, pending["attempt"], pending["at"])
            for gid, group in state.open_groups().items()
            for node, pending in group.get("retry", {}).items()
        ]
        owed = bool(state.owed_runs())
        for job_name, gid, node, attempt, at in retries:
            when = codec.parse_time(at, "at") or self._shared.clock.now()
            self._retry_soon(job_name, gid, node, attempt, when)
        if owed:
            self._shared.spawn(self._run_children())

    def _start_group(self, gid: int) -> None:
        state = self._shared.state
        group = state.group(gid)
        job = state.find_job(group["job"]) if group else None
        if group is None or job is None or group.get("queued"):
            return
        targets = [t for t in group["targets"] if t not in group["results"]]
        scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
        self._runs.start([Run(job, gid, targets, scheduled_at)])

    def _retry_soon(self, job_name: str, gid: int, node: str, attempt: int, at: datetime) -> None:
        key = (gid, node, attempt)
        if key not in self._retrying:
            self._retrying.add(key)
            self._shared.spawn(self._retry(job_name, gid, node, attempt, at))

    async def _retry(self, job_name: str, gid: int, node: str, attempt: int, at: datetime) -> None:
        """Run attempt ``attempt`` of ``node``'s run once its backoff has passed: on the same
        node (Dkron), or with ``retry_on: any`` on another live node the tags match."""
        try:
            await self._shared.clock.sleep_until(at)
            await self._claim_retry(job_name, gid, node, attempt)
        except DkronError as exc:
            log.warning(
                "retry %d of job %r on %s failed to start (trying again): %s",
                attempt, job_name, node, exc,
            )  # fmt: skip
            self._again_soon(self._retry_soon, job_name, gid, node, attempt, at)
        finally:
            self._retrying.discard((gid, node, attempt))

    async def _claim_retry(self, job_name: str, gid: int, node: str, attempt: int) -> None:
        state = self._shared.state
        job = state.find_job(job_name)
        if job is None or not self._shared.is_leader():
            return
        to = node
        if job.retry_on == "any":
            taken = set((state.group(gid) or {}).get("targets", ()))
            others = [target for target in self._runs.targets(job) if target not in taken]
            if others:
                to = self._rng.choice(others)
        claim = Retry(group=gid, node=node, attempt=attempt, to=to)
        if not (await self._shared.submit(claim, fenced=True))["won"]:
            return
        group = state.group(gid) or {}
        scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
        if to != self._shared.name and not self._liveness.is_alive(to):
            self._outcomes.lost(job_name, gid, to, scheduled_at, "is gone: the retry could not run")
            return
        self._runs.start([Run(job, gid, [to], scheduled_at, attempt)])

    def _again_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Try a follow-up again in a second, while this node leads (a claim that failed stays
        owed in the state; a new leader would take it over anyway)."""

        async def again() -> None:
            clock = self._shared.clock
            await clock.sleep_until(clock.now() + AGAIN_AFTER, exact=False)
            if self._shared.is_leader():
                callback(*args)

        self._shared.spawn(again())

    async def _run_children(self) -> None:
        """Claim the dependent runs owed for successful parent groups, each exactly once."""
        state = self._shared.state
        owed = state.owed_runs()
        now = codec.format_time(self._shared.clock.now())
        fires, runs = [], []
        for entry in owed:
            job = state.find_job(entry["child"])
            if job is None:
                continue
            run = Run(job, self._runs.new_group(), self._runs.targets(job))
            runs.append(run)
            fires.append(
                Claim(
                    job=job.name,
                    group=run.group,
                    targets=tuple(run.targets) or (self._shared.name,),
                    parent_group=entry["parent_group"],
                    at=now,
                )
            )
        if not fires:
            return
        try:
            won, queued = await self._runs.claim(fires)
        except DkronError as exc:
            log.warning("could not start %d dependent run(s) (trying again): %s", len(fires), exc)
            self._again_soon(lambda: self._shared.spawn(self._run_children()))
            return
        started = [r for r, ok in zip(runs, won, strict=True) if ok and r.group not in queued]
        for run in started:
            if not run.targets:
                self._outcomes.untargeted(run.job, run.group, None)
        self._runs.start(started)
