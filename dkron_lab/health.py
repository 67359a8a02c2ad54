"""The watch: every job's health (``model/health.py``), kept by the leader and replicated.

Every server follows the state's events into what it knows of each job's latest due instant
(``Timeliness``); only the leader acts on it:

- **Late**: each claimed fire is checked once at its instant plus the job's grace
  (``max_lateness``). A fire not started by then makes the job late; a heartbeat check
  (``executor: heartbeat``) without a ping by then has missed, and the miss is recorded as a
  failed execution. Runs elsewhere are known from their nodes' heartbeats, so a fire that a
  remote node seems not to have started is looked at once more a heartbeat later.
- **Missed**: fires the catch-up did not run (``MISSED_REASONS``) were missed.
- **Overdue**: the runs going on in the cluster are looked at every ``SWEEP`` against their
  job's ``max_duration``. (``on_overdue: kill`` is done by the node running the run.)

A change is one ``SetHealth`` command. Its submitter announces it through the notifier once
the command says it changed the state, so a change is announced once, by one leader, even when
a new leader finds the same change again. The checks are a heap of deadlines: idle, 10,000
heartbeat checks cost one timer.

May call: the replicated state (reads), ``Shared.submit``, the ``busy`` read of runs going on,
the notifier, and ``missed_run`` (which records a missed heartbeat as an execution).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import DkronError
from dkron_lab.heartbeat import HEARTBEAT_EXECUTOR, NO_PING, covered_instant, next_instant
from dkron_lab.membership import HEARTBEAT_INTERVAL
from dkron_lab.model.calendar import Calendar
from dkron_lab.model.execution import Execution
from dkron_lab.model.health import MISSED_REASONS, Assessment, Timeliness, assess, grace, time_limit
from dkron_lab.model.job import Job
from dkron_lab.model.units import format_duration
from dkron_lab.notify import Notifier
from dkron_lab.services import Shared
from dkron_lab.state.commands import SetHealth
from dkron_lab.state.events import (
    ExecutionFinished,
    FireClaimed,
    FiresSkipped,
    JobChanged,
    StateRestored,
)

__all__ = ["SWEEP", "Watch"]

log = logging.getLogger(__name__)

SWEEP = timedelta(seconds=1)
"""How often the runs going on are held against their ``max_duration``."""
_RECHECK = timedelta(seconds=HEARTBEAT_INTERVAL + 0.25)
_MAX_PASSED = 10_000  # instants stepped over to find the latest whose grace has ended

MissedRun = Callable[[Job, datetime, str], Coroutine[Any, Any, None]]


class Watch:
    def __init__(
        self,
        shared: Shared,
        *,
        notifier: Notifier,
        busy: Callable[[], list[Execution]],
        missed_run: MissedRun,
    ) -> None:
        self._shared = shared
        self._notifier = notifier
        self._busy = busy
        self._missed_run = missed_run
        self._timely: dict[str, Timeliness] = {}
        self._overdue: dict[str, str] = {}
        self._deadlines: list[tuple[datetime, int, str, datetime, bool]] = []
        self._order = itertools.count()
        self._asking: dict[str, str] = {}  # job: the health a SetHealth in flight asks for
        self._beat_due: dict[str, datetime] = {}  # heartbeat check: the instant held next
        self._unsaid: set[str] = set()  # jobs whose SetHealth failed: asked again each sweep
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._leading = False
        shared.state.subscribe(
            self._on_event, JobChanged, FireClaimed, FiresSkipped, ExecutionFinished, StateRestored
        )

    async def start(self, stack: AsyncExitStack) -> None:
        self._tasks = [asyncio.ensure_future(self._deadline_loop())]
        self._tasks.append(asyncio.ensure_future(self._sweep_loop()))
        stack.push_async_callback(self._stop)

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- what every server follows (Raft thread: hand over to the loop) ---------------------------

    def _on_event(self, event: object) -> None:
        self._shared.call_soon(self._follow, event)

    def _follow(self, event: object) -> None:
        if isinstance(event, FireClaimed):
            self._claimed(event.job_name, event.scheduled_at)
        elif isinstance(event, FiresSkipped):
            self._skipped(event)
        elif isinstance(event, ExecutionFinished):
            self._finished(event.execution)
        elif isinstance(event, JobChanged):
            if event.job is None:
                self._timely.pop(event.name, None)
                self._overdue.pop(event.name, None)
                self._beat_due.pop(event.name, None)
            else:
                self._arm(event.job)
                self._reassess(event.name)
        elif isinstance(event, StateRestored):
            self.elected()

    def _claimed(self, name: str, instant: datetime) -> None:
        job = self._shared.state.find_job(name)
        if job is None or job.executor == HEARTBEAT_EXECUTOR:
            return  # a heartbeat check's instants are held by _arm, its claims are its pings
        allowed = grace(job, self._shared.config.max_lateness)
        if allowed is not None:
            self._push(instant + allowed, name, instant, recheck=False)

    def _skipped(self, event: FiresSkipped) -> None:
        missed = [span for span in event.spans if span.get("reason") in MISSED_REASONS]
        if not missed or event.last is None:
            return
        count = sum(int(span.get("count", 1)) for span in missed)
        reasons = ", ".join(sorted({str(span["reason"]) for span in missed}))
        why = f"{count} fire(s) up to {codec.format_time(event.last)} not run (catch-up: {reasons})"
        self._note(event.job_name, Timeliness("missed", event.last, why))

    def _finished(self, execution: Execution) -> None:
        # Retries and backfilled runs start late on purpose.
        at = execution.scheduled_at if execution.attempt == 1 and not execution.backfill else None
        job = self._shared.state.find_job(execution.job_name)
        if at is not None and job is not None and job.executor != HEARTBEAT_EXECUTOR:
            allowed = grace(job, self._shared.config.max_lateness)
            late_by = execution.started_at - at
            if allowed is not None and late_by > allowed:
                why = (
                    f"its fire at {codec.format_time(at)} started {_seconds(late_by)} late "
                    f"(max_lateness {format_duration(allowed)})"
                )
                self._note(job.name, Timeliness("late", at, why))
            else:
                self._note(job.name, Timeliness("ok", at))
        elif at is not None and job is not None and not execution.output.startswith(NO_PING):
            self._note(job.name, Timeliness("ok", at))  # a ping came (a /fail one too)
        self._reassess(execution.job_name)

    def _note(self, name: str, timeliness: Timeliness) -> None:
        """The job's latest instant came to ``timeliness`` (an older instant changes nothing)."""
        known = self._timely.get(name)
        if known and known.instant and timeliness.instant and timeliness.instant < known.instant:
            return
        self._timely[name] = timeliness
        self._reassess(name)

    # -- what only the leader does -----------------------------------------------------------------

    def leadership_changed(self) -> None:
        leading = self._shared.is_leader()
        if leading and not self._leading:
            self.elected()
        self._leading = leading

    def elected(self) -> None:
        """This node leads now (or the state was replaced): check every open claim's start,
        and every job's recorded health against what is known."""
        self._deadlines.clear()
        now = self._shared.clock.now()
        for group in self._shared.state.open_groups().values():
            at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
            if at is not None:
                self._claimed(str(group["job"]), at)
        for job in self._shared.state.all_jobs():
            self._arm(job)
        for name, (health, _, reason) in self._shared.state.unhealthy().items():
            # What the last leader said holds until a new fact replaces it (a restarted
            # cluster knows no facts yet: it must not call a missed job ok).
            if health in ("late", "missed"):
                self._timely.setdefault(name, Timeliness(health, None, reason))
            elif health == "overdue":
                self._overdue.setdefault(name, reason)  # the next sweep says if it still is
            self._reassess(name)
        log.debug("watching %d deadline(s) from %s", len(self._deadlines), now.isoformat())
        self._wake.set()

    def _arm(self, job: Job) -> None:
        """A heartbeat check's next instant to hold against its pings: after the last one it
        was held against (by the latest ping or miss recorded), or the next one from now. Of
        instants whose grace ended while no leader watched, only the latest is held."""
        if job.executor != HEARTBEAT_EXECUTOR or job.disabled or not self._shared.is_leader():
            return
        allowed = grace(job, self._shared.config.max_lateness) or timedelta(0)
        now = self._shared.clock.now()
        stats = self._shared.state.stats_of(job.name)
        last = max(filter(None, (stats.last_success, stats.last_error)), default=None)
        calendar = self._calendar_of(job)
        instant = next_instant(job, (last or now) - allowed, calendar)
        for _ in range(_MAX_PASSED):
            following = next_instant(job, instant, calendar) if instant is not None else None
            if following is None or following + allowed > now:
                break
            instant = following
        if instant is not None:
            self._beat_due[job.name] = instant  # one chain per check: an older one ends
            self._push(instant + allowed, job.name, instant, recheck=False)

    def _push(self, when: datetime, name: str, instant: datetime, *, recheck: bool) -> None:
        heapq.heappush(self._deadlines, (when, next(self._order), name, instant, recheck))
        if self._deadlines[0][0] == when:
            self._wake.set()  # a new earliest deadline: the loop sleeps until it instead

    async def _deadline_loop(self) -> None:
        clock = self._shared.clock
        while True:
            self._wake.clear()
            now = clock.now()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, name, instant, recheck = heapq.heappop(self._deadlines)
                if self._shared.is_leader():
                    self._check_start(name, instant, recheck=recheck)
            if self._deadlines:
                sleep = clock.sleep_until(self._deadlines[0][0])
                woken = asyncio.ensure_future(self._wake.wait())
                sleeping = asyncio.ensure_future(sleep)
                try:
                    await asyncio.wait({woken, sleeping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                    sleeping.cancel()
            else:
                await self._wake.wait()

    def _check_start(self, name: str, instant: datetime, *, recheck: bool) -> None:
        job = self._shared.state.find_job(name)
        if job is None or job.disabled:
            return
        if job.executor == HEARTBEAT_EXECUTOR:
            if self._beat_due.get(name) == instant:
                self._check_ping(job, instant)
            return
        known = self._timely.get(name)
        if self._started(name, instant) or (known and known.instant and known.instant >= instant):
            return  # started, or already said of this instant (or a later one)
        if not recheck and self._elsewhere(name):
            # A remote start shows in the next heartbeat: look once more before saying late.
            self._push(self._shared.clock.now() + _RECHECK, name, instant, recheck=True)
            return
        allowed = grace(job, self._shared.config.max_lateness) or timedelta(0)
        why = f"its fire at {codec.format_time(instant)} has not started within " + (
            f"{format_duration(allowed)} (max_lateness)"
        )
        self._note(name, Timeliness("late", instant, why))

    def _check_ping(self, job: Job, instant: datetime) -> None:
        """The grace of ``instant`` ended: a ping must have covered it (else it is recorded as
        a failed run, and the job missed); then hold the next instant."""
        allowed = grace(job, self._shared.config.max_lateness) or timedelta(0)
        last_ping = self._shared.state.stats_of(job.name).last_success
        default = self._shared.config.max_lateness
        calendar = self._calendar_of(job)
        began = self._shared.state.ping_started(job.name)  # a /ping/start covers it too
        pinged = self._started(job.name, instant) or any(
            at is not None and covered_instant(job, at, default, calendar) == instant
            for at in (last_ping, began)
        )
        if not pinged:
            at, within = codec.format_time(instant), format_duration(allowed)
            why = f"{NO_PING} for {at} within {within} (max_lateness)"
            self._shared.spawn(self._missed_run(job, instant, why))
            self._note(job.name, Timeliness("missed", instant, f"no ping for {at} within {within}"))
        following = next_instant(job, instant, self._calendar_of(job))
        self._beat_due.pop(job.name, None)
        if following is not None:
            self._beat_due[job.name] = following
            self._push(following + allowed, job.name, following, recheck=False)

    def _calendar_of(self, job: Job) -> Calendar | None:
        return self._shared.state.calendar(job.calendar) if job.calendar else None

    def _started(self, name: str, instant: datetime) -> bool:
        known = self._timely.get(name)
        if known and known.instant and known.instant >= instant and known.state == "ok":
            return True
        return any(
            e.job_name == name and e.scheduled_at == instant and not e.queued for e in self._busy()
        )

    def _elsewhere(self, name: str) -> bool:
        """Whether an open claim of the job targets another node than this one."""
        here = self._shared.name
        return any(
            group["job"] == name and any(target != here for target in group["targets"])
            for group in self._shared.state.open_groups().values()
        )

    async def _sweep_loop(self) -> None:
        clock = self._shared.clock
        while True:
            await clock.sleep_until(clock.now() + SWEEP, exact=False)
            if self._shared.is_leader():
                self.sweep(clock.now())
                for name in self._unsaid:
                    self._reassess(name)
                self._unsaid.clear()

    def sweep(self, now: datetime) -> None:
        """Hold every run going on, and every heartbeat check whose work began, against its
        job's ``max_duration``."""
        overdue: dict[str, str] = {}
        for execution in self._busy():
            job = self._shared.state.find_job(execution.job_name)
            limit = time_limit(job, self._shared.config.max_duration) if job else None
            if execution.queued or limit is None or now - execution.started_at <= limit:
                continue
            overdue[execution.job_name] = (
                f"the run {execution.id} on {execution.node_name} has gone on for "
                f"{_seconds(now - execution.started_at)} (max_duration {format_duration(limit)})"
            )
        for name, began in self._shared.state.ping_starts_now().items():
            job = self._shared.state.find_job(name)
            limit = time_limit(job, self._shared.config.max_duration) if job else None
            if limit is not None and now - began > limit:
                overdue[name] = (
                    f"its /ping/start came {_seconds(now - began)} ago and no ping since "
                    f"(max_duration {format_duration(limit)})"
                )
        for name in set(self._overdue) | set(overdue):
            before, after = self._overdue.get(name), overdue.get(name)
            if (before is None) != (after is None):
                if after is None:
                    self._overdue.pop(name, None)
                else:
                    self._overdue[name] = after
                self._reassess(name)

    def _reassess(self, name: str) -> None:
        """Submit the job's health if it differs from the recorded one (leader only)."""
        state = self._shared.state
        job = state.find_job(name)
        if job is None or not self._shared.is_leader():
            return
        found = assess(
            job, state.stats_of(name), self._timely.get(name, Timeliness()), self._overdue.get(name)
        )
        recorded = state.health_of(name)[0]
        if found.health == self._asking.get(name, recorded):
            return
        self._asking[name] = found.health
        self._shared.spawn(self._record(job, found, recorded))

    async def _record(self, job: Job, found: Assessment, previous: str) -> None:
        since = self._shared.clock.now()
        cmd = SetHealth(
            job=job.name,
            health=found.health,
            since=codec.format_time(since) or "",
            reason=found.reason,
        )
        try:
            result = await self._shared.submit(cmd)
        except DkronError as exc:
            log.warning("health of %r not recorded (will be asked again): %s", job.name, exc)
            self._unsaid.add(job.name)
            return
        finally:
            if self._asking.get(job.name) == found.health:
                del self._asking[job.name]
        if result.get("changed"):
            log.info("job %r health %s -> %s: %s", job.name, previous, found.health, found.reason)
            self._notifier.health_changed(
                job, health=found.health, previous=previous, since=since, reason=found.reason
            )


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():.1f} s"
