"""When jobs fire: a heap of next fire instants, and the leader's loop over it.

``ScheduleIndex`` is kept on every server (so ``next`` is right wherever it is read); only the
leader runs ``Scheduler.run``, which claims each due fire through Raft slightly ahead of its
instant and starts it on the instant. Waking costs O(log n): nothing scans all jobs.

A job on a calendar (``model/calendar.py``) never has an excluded instant claimed: its index
entry is then a *calendar skip* (``ScheduleIndex.calendar_skip``), which the leader records as
skipped (reason ``calendar``). The excluded fires of one day are settled in at most two spans:
the day's first one on its instant, then the rest at the day's last one, so a ``* * * * *``
job on a calendar writes two records a day, not 1,440. ``next_of`` answers the next allowed
fire (the job's ``next``), ``due_of`` the next instant to act on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dkron_lab.clock import Clock
from dkron_lab.errors import DkronError
from dkron_lab.heartbeat import HEARTBEAT_EXECUTOR
from dkron_lab.model import schedule
from dkron_lab.model.calendar import Calendar, CalendarSkip, allows, calendar_fire, day_of, day_skip
from dkron_lab.model.job import Job, parse_job_schedule

__all__ = ["Fire", "ScheduleIndex", "Scheduler", "next_event", "next_run"]

log = logging.getLogger(__name__)

# Claims go through Raft this long before their instant, so the commit costs no lateness.
CLAIM_AHEAD = timedelta(milliseconds=200)
# How long the loop waits before claiming again fires whose claim went unanswered.
RETRY_CLAIM = timedelta(milliseconds=100)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """One due run of a job: the identity of a launch is (job, scheduled_at)."""

    job: str
    scheduled_at: datetime
    group: int = 0
    targets: tuple[str, ...] = ()


def next_run(
    job: Job, sched: schedule.Schedule, after: datetime, calendar: Calendar | None = None
) -> datetime | None:
    """The job's next fire strictly after ``after``, honouring starts_at and expires_at, and
    on a day ``calendar`` (the one the job names) allows."""
    if job.disabled or job.parent_job or sched.is_manual:
        return None
    if job.starts_at is not None and after < job.starts_at:
        after = job.starts_at - timedelta(microseconds=1)
    if calendar is None:
        instant = schedule.next_fire(sched, after)
    else:
        instant = calendar_fire(sched, after, calendar, job.calendar_mode)
    if instant is None or (job.expires_at is not None and instant > job.expires_at):
        return None
    return instant


def next_event(
    job: Job,
    sched: schedule.Schedule,
    after: datetime,
    calendar: Calendar | None,
    *,
    fresh: bool = False,
) -> tuple[datetime, CalendarSkip | None] | None:
    """What the index holds for ``job`` after ``after``: its next fire, or, when that fire is
    on a day ``calendar`` excludes, the span of excluded fires to settle (at its last one).
    ``fresh``: ``after`` is not a handled instant (the job or its calendar was just saved),
    so an excluded fire is settled alone, on its instant, like the first of a day."""
    instant = next_run(job, sched, after)
    if instant is None or calendar is None:
        return None if instant is None else (instant, None)
    if allows(calendar, job.calendar_mode, day_of(instant, sched.tzinfo)):
        return instant, None
    if job.starts_at is not None and after < job.starts_at:
        after = job.starts_at - timedelta(microseconds=1)
    until = job.expires_at or instant + timedelta(days=2)
    if fresh:
        return instant, CalendarSkip(first=instant, last=instant, count=1)
    skip = day_skip(sched, after, instant, until)
    return skip.last, skip


class ScheduleIndex:
    """Next fire instant per job, with a heap ordered by instant. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heap: list[tuple[datetime, int, str]] = []
        self._next: dict[str, datetime] = {}
        self._jobs: dict[str, tuple[Job, schedule.Schedule, Calendar | None]] = {}
        self._skips: dict[str, CalendarSkip] = {}  # jobs whose entry is a calendar skip
        self._allowed: dict[str, datetime | None] = {}  # their next allowed fire
        self._seq = itertools.count()
        self.changed: Callable[[], None] = lambda: None
        self.calendar_of: Callable[[str], Calendar | None] = lambda name: None
        """The calendar called ``name`` (set by the node); read outside the index's lock."""

    def update(self, name: str, job: Job | None, now: datetime) -> None:
        """A job was saved (or deleted, ``job=None``): recompute its next fire after ``now``.
        A heartbeat check is not fired (the watch, ``health.py``, holds its instants)."""
        entry = None
        if job is not None and job.executor != HEARTBEAT_EXECUTOR:
            try:
                calendar = self.calendar_of(job.calendar) if job.calendar else None
                entry = (job, parse_job_schedule(job), calendar)
            except DkronError:
                log.warning(
                    "job %r has an unparsable schedule %r; not scheduled", name, job.schedule
                )
        with self._lock:
            if entry is None:
                self._jobs.pop(name, None)
                self._next.pop(name, None)
                self._skips.pop(name, None)
                self._allowed.pop(name, None)
                return
            self._jobs[name] = entry
            self._push(name, now, fresh=True)
        self.changed()

    def clear(self) -> None:
        with self._lock:
            self._heap.clear()
            self._next.clear()
            self._jobs.clear()
            self._skips.clear()
            self._allowed.clear()

    def _push(self, name: str, after: datetime, *, fresh: bool = False) -> None:
        """Index ``name``'s next event after ``after`` (lock held)."""
        job, sched, calendar = self._jobs[name]
        event = next_event(job, sched, after, calendar, fresh=fresh)
        self._skips.pop(name, None)
        self._allowed.pop(name, None)
        if event is None:
            self._next.pop(name, None)
            return
        instant, skip = event
        if skip is not None:
            self._skips[name] = skip
            self._allowed[name] = next_run(job, sched, skip.last, calendar)
        self._next[name] = instant
        heapq.heappush(self._heap, (instant, next(self._seq), name))

    def next_of(self, name: str) -> datetime | None:
        """The job's next fire that will run (its ``next``)."""
        with self._lock:
            if name in self._skips:
                return self._allowed.get(name)
            return self._next.get(name)

    def due_of(self, name: str) -> datetime | None:
        """The next instant the scheduler acts on for the job: a fire or a calendar skip."""
        return self._next.get(name)

    def calendar_skip(self, fire: Fire) -> CalendarSkip | None:
        """The calendar skip ``fire`` (popped by ``pop_due``) stands for; None for a fire."""
        with self._lock:
            skip = self._skips.get(fire.job)
            return skip if skip is not None and skip.last == fire.scheduled_at else None

    def refresh(self, jobs: list[Job], now: datetime) -> None:
        """The calendar of ``jobs`` changed: index them again from ``now``."""
        for job in jobs:
            self.update(job.name, job, now)

    def earliest(self) -> datetime | None:
        with self._lock:
            self._drop_stale()
            return self._heap[0][0] if self._heap else None

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._next.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    def pop_due(self, until: datetime) -> list[Fire]:
        """Every fire due at or before ``until``, earliest first. Cheap: the following instants
        are computed later, by ``advance``, off the path between claim and start."""
        due: list[Fire] = []
        with self._lock:
            self._drop_stale()
            while self._heap and self._heap[0][0] <= until:
                instant, _, name = heapq.heappop(self._heap)
                due.append(Fire(job=name, scheduled_at=instant))
                self._drop_stale()
        return due

    def restore(self, fires: list[Fire]) -> None:
        """Put back fires popped by ``pop_due`` whose claim never finished (the scheduler was
        cancelled meanwhile): a later leader claims them, or loses to a claim that did commit."""
        with self._lock:
            for fire in fires:
                if self._next.get(fire.job) == fire.scheduled_at:
                    heapq.heappush(self._heap, (fire.scheduled_at, next(self._seq), fire.job))
        self.changed()

    def advance(self, fires: list[Fire]) -> None:
        """Move each fired job on to its following instant (unless it was saved meanwhile)."""
        with self._lock:
            for fire in fires:
                if self._next.get(fire.job) != fire.scheduled_at or fire.job not in self._jobs:
                    continue
                self._push(fire.job, fire.scheduled_at)
        self.changed()

    def fired(self, name: str, instant: datetime) -> None:
        """Another node fired ``name`` at ``instant``: move past it (keeps ``next`` right on
        servers that do not schedule, and a new leader from firing the same instant again)."""
        with self._lock:
            current = self._next.get(name)
            if name not in self._jobs or (current is not None and current > instant):
                return
            self._push(name, instant)
        self.changed()


Claim = Callable[[list[Fire]], Awaitable[list[Fire]]]
Start = Callable[[list[Fire]], None]


class Scheduler:
    """The leader's loop: sleep until the earliest fire, claim it through Raft, start it."""

    def __init__(self, index: ScheduleIndex, clock: Clock, *, claim: Claim, start: Start) -> None:
        self._index = index
        self._clock = clock
        self._claim = claim
        self._start = start
        self._wake = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()

    def poke(self) -> None:
        """Something changed in the index: look again (thread-safe via the node's loop)."""
        self._wake.set()

    async def run(self) -> None:
        """Fire until cancelled (when this node stops being leader).

        Starts already claimed keep waiting for their instant after that: a committed claim
        is this node's to run whoever leads now (nobody else can claim it). ``abandon()``
        drops them when the node itself stops."""
        while True:
            await self._sleep_until_due()
            if not await self.tick(self._clock.now()):
                await self._clock.sleep_until(self._clock.now() + RETRY_CLAIM, exact=False)

    def abandon(self) -> None:
        for task in self._pending:
            task.cancel()

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        earliest = self._index.earliest()
        timeout = 60.0
        if earliest is not None:
            timeout = (earliest - CLAIM_AHEAD - self._clock.now()).total_seconds()
        if timeout > 0:
            sleeper = asyncio.ensure_future(
                self._clock.sleep_until(self._clock.now() + timedelta(seconds=timeout), exact=False)
            )
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    async def tick(self, now: datetime) -> bool:
        """Claim what falls due within ``CLAIM_AHEAD`` of ``now``; start each on its instant.

        The index moves past an instant only once its claim has an answer: a claim cut short
        or whose outcome is unknown puts its fires back and answers false (try again later).
        The claim answers what to start; every other instant it was given is settled in the
        replicated state (claimed by someone else, skipped with a reason)."""
        due = self._index.pop_due(now + CLAIM_AHEAD)
        if not due:
            return True
        try:
            won = await self._claim(due)
        except asyncio.CancelledError:
            self._index.restore(due)
            raise
        except DkronError as exc:
            log.warning("claim of %d fire(s) unsettled (trying again): %s", len(due), exc)
            self._index.restore(due)
            return False
        won = sorted(won, key=lambda fire: fire.scheduled_at)
        for instant, fires in itertools.groupby(won, key=lambda fire: fire.scheduled_at):
            task = asyncio.ensure_future(self._start_at(instant, list(fires)))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        claimed = {(fire.job, fire.scheduled_at) for fire in won}
        self._index.advance([f for f in due if (f.job, f.scheduled_at) not in claimed])
        return True

    async def _start_at(self, instant: datetime, fires: list[Fire]) -> None:
        await self._clock.sleep_until(instant)
        self._start(fires)
        self._index.advance(fires)
        self.poke()  # the loop may be asleep on an index that had none of these jobs
