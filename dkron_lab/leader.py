"""What a leader does from its election to its deposition: settle the fires missed while
nobody led (the catch-up), then fire every schedule (``Scheduler``).

It owns one rule: **every due instant ends as exactly one of: run, or skipped with a reason.**

- The schedule index moves past an instant only once a claim of it has committed. A claim
  whose outcome is unknown (refused by the fencing, timed out, cut short by a lost election)
  puts its instants back and is made again: the state machine's answer to the second claim
  settles it (the first claim of an instant wins).
- A claim that loses to a committed claim of the same instant (another term's, or another
  leader's) starts that committed group on its targets that have not reported: a claim the
  fencing refused is started by nobody else. A node ignores a group it has already started,
  so starting one twice is harmless.
- Missed fires are settled per job by the catch-up policy: the skipped ones and the ones to
  run go in one Raft entry, so they commit (and the index moves) together or not at all.
- An instant on a day the job's calendar excludes is never claimed: it is recorded skipped
  (reason ``calendar``), by the schedule (``ScheduleIndex.calendar_skip``) or the catch-up.

May call: the replicated state (reads under its lock), ``submit`` (a fenced Raft write) and
the ``Starts`` the node gives it. It takes no decision about where a run goes beyond asking
``Starts.targets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from dkron_lab import codec
from dkron_lab.clock import Clock
from dkron_lab.errors import DkronError
from dkron_lab.model.calendar import Calendar, CalendarSkip, allows, day_of
from dkron_lab.model.job import Job, parse_job_schedule
from dkron_lab.model.planning import effective_policy, plan_catchup
from dkron_lab.scheduler import Fire, ScheduleIndex, Scheduler
from dkron_lab.services import Shared
from dkron_lab.state.commands import Batch, Claim, Command, Limits, Skip
from dkron_lab.state.commands import Fire as FireCommand
from dkron_lab.state.events import (
    CalendarChanged,
    FireClaimed,
    FiresSkipped,
    JobChanged,
    StateRestored,
)
from dkron_lab.state.machine import JobState

__all__ = [
    "CATCH_UP_CHUNK",
    "CatchUpSettings",
    "Leader",
    "Leadership",
    "Starts",
    "fire_command",
    "split_by_calendar",
]

log = logging.getLogger(__name__)

# Jobs settled per catch-up entry: bounds an entry's size when thousands of jobs missed fires.
CATCH_UP_CHUNK = 500
# How long a leader waits before making again a catch-up whose claim went unanswered.
RETRY_CATCH_UP = timedelta(milliseconds=200)

Submit = Callable[[Command], Awaitable[dict[str, Any]]]


class Starts(Protocol):
    """What the node does for the leader: choose targets, start runs, report untargeted ones."""

    name: str

    def targets(self, job: Job) -> tuple[str, ...]: ...

    def new_group(self) -> int: ...

    @property
    def limits(self) -> Limits: ...

    def start_fires(self, fires: list[Fire], *, local: bool, remote: bool) -> None:
        """Start each fire on its targets here (``local``) and elsewhere (``remote``); a fire
        without targets is reported failed (no live node has its tags)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchUpSettings:
    policy: str
    window: timedelta


def fire_command(state: JobState, limits: Limits, claims: Iterable[Claim]) -> FireCommand:
    """The ``fire`` command making ``claims`` under the cluster's concurrency ``limits``."""
    carried = limits if limits.active or state.limits_in_force().active else None
    return FireCommand(claims=tuple(claims), limits=carried)


class Leader:
    """Created on each election won; ``run`` until cancelled (deposition or stop)."""

    def __init__(
        self,
        *,
        state: JobState,
        index: ScheduleIndex,
        clock: Clock,
        submit: Submit,
        starts: Starts,
        catch_up: CatchUpSettings,
        on_won: Callable[[int], None] = lambda n: None,
        caught_up: Callable[[], None] = lambda: None,
    ) -> None:
        self._state = state
        self._index = index
        self._clock = clock
        self._submit = submit
        self._starts = starts
        self._settings = catch_up
        self._on_won = on_won
        self._caught_up = caught_up
        self.scheduler = Scheduler(index, clock, claim=self.claim, start=self._start_due)

    async def run(self) -> None:
        """Catch up (again until a claim of it commits), then schedule until cancelled."""
        while True:
            try:
                # A read barrier: once an entry of this term has committed, every entry of
                # an earlier term that ever will has too (the catch-up plans from them).
                await self._submit(Batch())
                self._start_unstarted()
                await self.catch_up(self._clock.now())
                break
            except DkronError as exc:
                log.warning("catch-up after the election unsettled (trying again): %s", exc)
                await self._clock.sleep_until(self._clock.now() + RETRY_CATCH_UP, exact=False)
        self._caught_up()
        await self.scheduler.run()

    def abandon(self) -> None:
        """This node stops: drop the starts still waiting for their instant."""
        self.scheduler.abandon()

    # -- claims --------------------------------------------------------------------------------

    async def claim(
        self, due: list[Fire], *, before: Iterable[Command] = (), after: Iterable[Command] = ()
    ) -> list[Fire]:
        """Claim ``due`` (after the commands ``before`` and before ``after``, in the same Raft
        entry) and answer the fires to start: those won, and the committed claims of those lost
        that may still be unstarted. Runs on other nodes are sent at once, with their instant;
        the local ones are the caller's to start on it. Calendar skips among ``due`` are
        recorded, not claimed. Raises ``DkronError`` when the outcome is unknown."""
        before, due = [*before, *self._calendar_skips(due)], self._not_skipped(due)
        after = list(after)
        fires = [replace(f, group=self._starts.new_group(), targets=self._targets(f)) for f in due]
        records = [self._record(fire) for fire in fires]
        cmd = fire_command(self._state, self._starts.limits, records)
        if before or after:
            batch = Batch(commands=(*before, cmd, *after))
            result = (await self._submit(batch))["results"][len(before)]
        else:
            result = await self._submit(cmd)
        self._on_won(sum(result["won"]))
        queued = set(result.get("queued", ()))
        won = [f for f, ok in zip(fires, result["won"], strict=True) if ok]
        lost = [f for f, ok in zip(fires, result["won"], strict=True) if not ok]
        claimed = [f for f in won if f.group not in queued] + self.committed(lost)
        self._starts.start_fires(claimed, local=False, remote=True)
        return claimed

    def _calendar_skips(self, due: list[Fire]) -> list[Command]:
        skips = ((f.job, self._index.calendar_skip(f)) for f in due)
        return [Skip(job=job, spans=(skip.to_span(),)) for job, skip in skips if skip is not None]

    def _not_skipped(self, due: list[Fire]) -> list[Fire]:
        return [f for f in due if self._index.calendar_skip(f) is None]

    def committed(self, lost: list[Fire]) -> list[Fire]:
        """The committed claims of the instants in ``lost`` that may be unstarted."""
        wanted = {(f.job, codec.format_time(f.scheduled_at)): f for f in lost}
        return self._unstarted(lambda group: wanted.get((group["job"], group["scheduled_at"])))

    def unstarted(self) -> list[Fire]:
        """Every open, scheduled claim with targets that have not reported: a new leader
        starts them all again, since it cannot know which ones a fenced-out leader dropped."""

        def scheduled(group: Mapping[str, Any]) -> Fire | None:
            at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
            return Fire(job=group["job"], scheduled_at=at) if at is not None else None

        return self._unstarted(scheduled)

    def _unstarted(self, match: Callable[[Mapping[str, Any]], Fire | None]) -> list[Fire]:
        """The open, unqueued claims ``match`` names, each with the targets that have not
        reported yet (none: the claim found no target; report it)."""
        found = []
        for gid, group in self._state.open_groups().items():
            fire = match(group)
            if fire is None or group.get("queued"):
                continue
            pending = tuple(t for t in group["targets"] if t not in group["results"])
            if group.get("untargeted"):  # its one target stands for the claimer: report it
                if pending != (self._starts.name,):
                    continue
                pending = ()
            elif not pending:
                continue
            found.append(replace(fire, group=gid, targets=pending))
        return found

    def _targets(self, fire: Fire) -> tuple[str, ...]:
        job = self._state.find_job(fire.job)
        return self._starts.targets(job) if job is not None else ()

    def _record(self, fire: Fire) -> Claim:
        return Claim(
            job=fire.job,
            scheduled_at=codec.format_time(fire.scheduled_at),
            group=fire.group,
            targets=tuple(fire.targets) or (self._starts.name,),
            untargeted=not fire.targets,
        )

    def _start_unstarted(self) -> None:
        fires = self.unstarted()
        self._starts.start_fires(fires, local=False, remote=True)
        self._start_due(fires)

    def _start_due(self, fires: list[Fire]) -> None:
        self._starts.start_fires(fires, local=True, remote=False)

    # -- catch-up ------------------------------------------------------------------------------

    async def catch_up(self, now: datetime) -> None:
        """Apply each job's catch-up policy to the instants its schedule held before ``now``,
        a chunk of jobs per Raft entry; a job's index moves once its chunk has committed."""
        jobs = self._state.all_jobs()
        behind = [job for job in jobs if (due := self._index.due_of(job.name)) and due <= now]
        for start in range(0, len(behind), CATCH_UP_CHUNK):
            await self._catch_up_chunk(behind[start : start + CATCH_UP_CHUNK], now)

    async def _catch_up_chunk(self, jobs: list[Job], now: datetime) -> None:
        skips: list[Command] = []
        later: list[Command] = []  # calendar skips after a fire to run: recorded after its claim
        fires: list[Fire] = []
        for job in jobs:
            due = self._index.due_of(job.name)
            if due is None or due > now:
                continue
            # A calendar skip stands for every excluded fire from its first one. From what
            # the state says is handled, if that is later (a catch-up made again after its
            # first answer was lost settles only what is left).
            skip = self._index.calendar_skip(Fire(job=job.name, scheduled_at=due))
            handled = (due if skip is None else skip.first) - timedelta(microseconds=1)
            handled = max(handled, self._state.last_fired_of(job.name) or handled)
            plan = plan_catchup(
                job,
                parse_job_schedule(job),
                last_fired=handled,
                now=now,
                policy=effective_policy(job, self._settings.policy),
                window=self._settings.window,
            )
            calendar = self._state.calendar(job.calendar) if job.calendar else None
            run, excluded = split_by_calendar(job, plan.fire, calendar)
            fires += [Fire(job=job.name, scheduled_at=at) for at in run]
            early = [s.to_span() for s in excluded if not run or s.last < run[0]]
            late = [s.to_span() for s in excluded if run and s.last > run[0]]
            spans = [_span_record(span) for span in plan.skipped] + early
            if spans:
                skips.append(Skip(job=job.name, spans=tuple(spans)))
            if late:
                later.append(Skip(job=job.name, spans=tuple(late)))
        if fires:
            log.info("catching up %d missed fire(s)", len(fires))
        if fires or skips or later:
            self._start_due(await self.claim(fires, before=skips, after=later))
        for job in jobs:
            self._index.fired(job.name, now)


def split_by_calendar(
    job: Job, instants: tuple[datetime, ...], calendar: Calendar | None
) -> tuple[list[datetime], list[CalendarSkip]]:
    """``instants`` (consecutive fires of ``job``, oldest first) split into those to run and
    the spans of those ``calendar`` excludes, one per run of consecutive excluded ones.

    A catch-up records the spans older than its first fire before claiming, the later ones
    after; the state drops a span older than a fire already claimed, so with policy ``all``
    the excluded fires between two that run are not recorded (they are not run either)."""
    if calendar is None:
        return list(instants), []
    tz = parse_job_schedule(job).tzinfo
    run: list[datetime] = []
    spans: list[CalendarSkip] = []
    joined = False  # the previous instant was excluded: extend its span
    for at in instants:
        if allows(calendar, job.calendar_mode, day_of(at, tz)):
            run.append(at)
            joined = False
        elif joined:
            spans[-1] = replace(spans[-1], last=at, count=spans[-1].count + 1)
        else:
            spans.append(CalendarSkip(first=at, last=at, count=1))
            joined = True
    return run, spans


def _span_record(span: Any) -> dict[str, Any]:
    return {
        "reason": span.reason,
        "first": codec.format_time(span.first),
        "last": codec.format_time(span.last),
        "count": span.count,
    }


class Leadership:
    """The schedule index every server keeps (so ``next`` is right everywhere, and a new
    leader knows what is due), and a ``Leader`` for as long as this node leads.

    Subscribes to ``JobChanged``, ``FireClaimed``, ``FiresSkipped``, ``StateRestored`` and
    ``CalendarChanged`` (the jobs on a changed calendar are indexed again from now).
    """

    def __init__(
        self,
        shared: Shared,
        *,
        index: ScheduleIndex,
        starts: Starts,
        on_won: Callable[[int], None],
        caught_up: Callable[[], None],
        ready: Callable[[], bool],
    ) -> None:
        self._shared = shared
        self._index = index
        self._starts = starts
        self._on_won = on_won
        self._caught_up = caught_up
        self._ready = ready
        self._leader: Leader | None = None
        self._task: asyncio.Task[None] | None = None
        index.changed = self._poke
        index.calendar_of = shared.state.calendar
        kinds = (JobChanged, FireClaimed, FiresSkipped, StateRestored, CalendarChanged)
        shared.state.subscribe(self._on_event, *kinds)

    def _on_event(
        self, event: JobChanged | FireClaimed | FiresSkipped | StateRestored | CalendarChanged
    ) -> None:
        if isinstance(event, CalendarChanged):
            jobs = self._shared.state.jobs_on_calendar(event.name)
            self._index.refresh(jobs, self._shared.clock.now())
        elif isinstance(event, JobChanged):
            self._index.update(event.name, event.job, self._shared.clock.now())
        elif isinstance(event, StateRestored):
            self.reindex()
        elif self._shared.is_leader():
            return  # the leader moves its own index, once its claims are answered
        elif isinstance(event, FireClaimed):
            self._index.fired(event.job_name, event.scheduled_at)
        else:  # skipped instants are handled: a later leader must not settle them again
            if event.last is not None:
                self._index.fired(event.job_name, event.last)

    async def start(self, stack: AsyncExitStack) -> None:
        """Index every job from its last fire (so the fires missed while down are found);
        at stop, schedule no more (the first thing a node stops)."""
        self.reindex(resume=True)
        stack.push_async_callback(self.stop)

    def reindex(self, *, resume: bool = False) -> None:
        """Recompute every job's next fire; ``resume`` starts each from its last fire, so the
        fires missed while this node was down are found (and handled by the catch-up policy)."""
        self._index.clear()
        state = self._shared.state
        now = self._shared.clock.now()
        for job, last in state.jobs_with_last_fired():
            self._index.update(job.name, job, min(last, now) if resume and last else now)

    def _poke(self) -> None:
        if self._leader is not None:
            self._shared.call_soon(self._leader.scheduler.poke)

    def changed(self) -> None:
        """Leadership may have changed: act on the state as it is now (notices come in bursts
        during elections). Until the node is ready there is nothing to schedule from."""
        if not self._ready():
            return
        running = self._task is not None and not self._task.done()
        if self._shared.is_leader() and not running:
            config = self._shared.config
            self._leader = Leader(
                state=self._shared.state,
                index=self._index,
                clock=self._shared.clock,
                submit=functools.partial(self._shared.submit, fenced=True),
                starts=self._starts,
                catch_up=CatchUpSettings(policy=config.catchup, window=config.catchup_window),
                on_won=self._on_won,
                caught_up=self._caught_up,
            )
            self._task = asyncio.ensure_future(self._leader.run())
            log.info("leader (term %d): scheduling", self._shared.term())
        elif not self._shared.is_leader() and running:
            assert self._task is not None
            self._task.cancel()
            self._task = self._leader = None
            log.info("no longer leader: scheduling stopped")

    async def stop(self) -> None:
        """The node stops: no more scheduling, and the starts waiting for an instant drop."""
        if self._leader is not None:
            self._leader.abandon()
        task, self._task, self._leader = self._task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
