"""Catch-up: what a new leader does with the fires that fell due while there was none.

Pure: no I/O, no clock. The caller passes ``now`` and the job's ``last_fired`` (the scheduled
instant of its last claimed fire, from the replicated state) and gets a ``CatchUp``: the missed
instants to run now, and the ones deliberately not run, which it records as skipped.

Rules (``docs/schedules.md``, "Missed runs and catch-up", has the long version):

* **Missed** = every instant the job would have fired (the scheduler's own rules: not disabled,
  not a child, not ``@manually``, from ``starts_at``, until ``expires_at``) strictly after
  ``last_fired`` and at or before ``now``. A job that never fired (``last_fired=None``) has
  missed nothing: a new job does not catch up on its past. (A caller that wants a job saved just
  before an outage to catch up passes the time it was saved.) Instants after ``now`` belong to
  the ordinary schedule, so catch-up and scheduler never both run an instant.
* **Policies**: ``skip`` runs none (Dkron's behaviour, but recorded); ``once`` runs the latest
  missed instant within the window; ``all`` runs every missed instant within the window, at most
  ``limit`` (the newest). The window holds the instants ``>= now - window``.
* A job past its ``expires_at`` is never started: all its missed fires are skipped.
* **Skipped** fires come as ``SkippedFires`` spans (one per reason, oldest first) with an exact
  count, the first and last instant and a bounded ``listed`` sample: a ``@every 1s`` job down
  for a month misses 2.6 million fires, which are counted, not walked. Counting is arithmetic
  for ``@every``; for cron it multiplies out the fields (times of day x matching days, per
  stretch of constant UTC offset), so it costs per day of the gap, not per fire.

Spans rather than a flat list, because an unbounded list cannot be held or replicated, and a
capped one alone would lose how many were skipped; a span states exactly which fires were
skipped (every fire of the schedule from ``first`` to ``last``) however many there are.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import tzinfo as TZInfo
from functools import lru_cache
from typing import Literal

from dkron_lab.model import schedule
from dkron_lab.model.job import CATCHUP_POLICIES, Job
from dkron_lab.model.schedule import Schedule

__all__ = [
    "CATCHUP_POLICIES",
    "SKIP_REASONS",
    "CatchUp",
    "SkipReason",
    "SkippedFires",
    "count_fires",
    "effective_policy",
    "missed_span",
    "plan_catchup",
]

SkipReason = Literal["policy", "window", "superseded", "limit", "expired"]
SKIP_REASONS: tuple[SkipReason, ...] = ("policy", "window", "superseded", "limit", "expired")
"""Why a missed fire was not run: the job's policy is ``skip``; it is older than the window;
``once`` ran a later one instead; ``all`` hit its limit (the oldest go); the job has expired."""

_MICRO = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_DAY = 86_400  # seconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedFires:
    """Missed fires not run, for one reason: every fire of the job's schedule from ``first``
    to ``last`` (both included), ``count`` of them.

    ``listed`` holds all of them, oldest first, when there are at most ``sample`` (the argument
    of ``plan_catchup``); otherwise the oldest ``sample // 2`` and the newest
    ``sample - sample // 2``; ``unlisted`` says how many lie between, unnamed.
    """

    reason: SkipReason
    first: datetime
    last: datetime
    count: int
    listed: tuple[datetime, ...]

    @property
    def unlisted(self) -> int:
        return self.count - len(self.listed)


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchUp:
    """The plan for one job: ``fire`` the missed instants to run now, oldest first;
    ``skipped`` the spans not run, oldest first, which the caller records."""

    fire: tuple[datetime, ...] = ()
    skipped: tuple[SkippedFires, ...] = ()

    @property
    def skipped_count(self) -> int:
        return sum(span.count for span in self.skipped)

    @property
    def missed_count(self) -> int:
        return len(self.fire) + self.skipped_count


def effective_policy(job: Job, default: str) -> str:
    """The job's ``catchup``, or the server's ``default`` when the job leaves it empty."""
    return job.catchup or default


def plan_catchup(
    job: Job,
    sched: Schedule,
    *,
    last_fired: datetime | None,
    now: datetime,
    policy: str,
    window: timedelta,
    limit: int = 1000,
    sample: int = 100,
) -> CatchUp:
    """Decide what to do with ``job``'s fires missed between ``last_fired`` and ``now``.

    ``sched`` is the job's parsed schedule (``parse_job_schedule(job)``); ``policy`` one of
    ``CATCHUP_POLICIES`` (resolve the job's ``""`` with ``effective_policy``); ``window``
    how old a missed fire may be and still run; ``limit`` the most fires ``all`` runs;
    ``sample`` the most instants listed per skipped span. Datetimes must be timezone-aware.

    Work is bounded by ``limit + 2 * sample`` schedule steps, plus arithmetic per day of the
    gap and, for cron day fields other than ``*``, one step per matching day of each year
    touched the first time (cached).
    Raises ``ValueError`` for an unknown policy, a negative window, ``limit < 1`` or
    ``sample < 0``.
    """
    _check_arguments(policy, window, limit, sample)
    span = missed_span(job, sched, last_fired=last_fired, now=now)
    if span is None:
        return CatchUp()
    after, until = span
    now = _utc(now, "now")
    if policy == "skip":
        return CatchUp(skipped=_skipped(sched, [("policy", after, until)], sample))
    if job.expires_at is not None and now > job.expires_at:
        return CatchUp(skipped=_skipped(sched, [("expired", after, until)], sample))
    # Instants >= now - window are in the window: (recent, until] holds them.
    recent = after if window >= now - after else max(after, now - window - _MICRO)
    fire = newest_fires(sched, recent, until, 1 if policy == "once" else limit)
    spans: list[tuple[SkipReason, datetime, datetime]] = [("window", after, min(recent, until))]
    if fire:
        spans.append(("superseded" if policy == "once" else "limit", recent, fire[0] - _MICRO))
    return CatchUp(fire=fire, skipped=_skipped(sched, spans, sample))


def _check_arguments(policy: str, window: timedelta, limit: int, sample: int) -> None:
    if policy not in CATCHUP_POLICIES:
        raise ValueError(
            f"catch-up policy {policy!r} is not one of {', '.join(CATCHUP_POLICIES)}: "
            "resolve a job's empty catchup with effective_policy(job, default)"
        )
    if window < timedelta(0):
        raise ValueError(f"the catch-up window must not be negative, got {window}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if sample < 0:
        raise ValueError(f"sample must be 0 or more, got {sample}")


def missed_span(
    job: Job, sched: Schedule, *, last_fired: datetime | None, now: datetime
) -> tuple[datetime, datetime] | None:
    """``(after, until)``: the job missed exactly its schedule's fires in ``(after, until]``;
    ``None`` when it missed none.

    The job rules are the scheduler's (``dkron_lab.scheduler.next_run``): disabled jobs, child
    jobs and ``@manually`` never fire; nothing before ``starts_at`` or after ``expires_at``.
    """
    # Restated, not imported: the model must not depend on the scheduler (which will import
    # this module). tests/unit/model/test_planning.py checks both agree, case by case.
    if last_fired is None or job.disabled or job.parent_job or sched.is_manual:
        return None
    after, until = _utc(last_fired, "last_fired"), _utc(now, "now")
    if job.starts_at is not None:
        after = max(after, job.starts_at - _MICRO)
    if job.expires_at is not None:
        until = min(until, job.expires_at)
    return (after, until) if after < until else None


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _skipped(
    sched: Schedule, spans: Sequence[tuple[SkipReason, datetime, datetime]], sample: int
) -> tuple[SkippedFires, ...]:
    found = []
    for reason, after, until in spans:
        count = count_fires(sched, after, until)
        if count:
            found.append(_summary(sched, reason, after, until, count, sample))
    return tuple(found)


def _summary(
    sched: Schedule, reason: SkipReason, after: datetime, until: datetime, count: int, sample: int
) -> SkippedFires:
    if count <= sample:
        listed = _walk(sched, after, until, count)
        head, tail = listed, listed
    else:
        head_size, tail_size = sample // 2, sample - sample // 2
        head = _walk(sched, after, until, max(head_size, 1))
        tail = newest_fires(sched, after, until, max(tail_size, 1), count=count)
        listed = head[:head_size] + tail[len(tail) - tail_size :]
    return SkippedFires(reason=reason, first=head[0], last=tail[-1], count=count, listed=listed)


# ---------------------------------------------------------------------------------------------
# Fires in an interval: counting and the ends, without walking the middle


def count_fires(sched: Schedule, after: datetime, until: datetime) -> int:
    """How many fires ``sched`` has in ``(after, until]`` (aware datetimes), exactly.

    Arithmetic for ``@every``; for cron fields a few steps per day of the interval (every day
    at once when the day fields are all ``*``), whatever the number of fires.
    """
    if until <= after:
        return 0
    if sched.kind == "every":
        assert sched.interval is not None and sched.anchor is not None
        return (until - sched.anchor) // sched.interval - (after - sched.anchor) // sched.interval
    if sched.kind == "cron":
        return _count_cron(sched, _seconds(after) + 1, _seconds(until) + 1)
    return len(_walk(sched, after, until, 2))  # @at fires at most once, @manually never


def newest_fires(
    sched: Schedule, after: datetime, until: datetime, n: int, *, count: int | None = None
) -> tuple[datetime, ...]:
    """The newest ``n`` fires in ``(after, until]``, oldest first (``count``: if known)."""
    total = count_fires(sched, after, until) if count is None else count
    if total <= n:
        return _walk(sched, after, until, total)
    return _walk(sched, _cursor_before_newest(sched, after, until, n), until, n)


def _walk(sched: Schedule, after: datetime, until: datetime, n: int) -> tuple[datetime, ...]:
    """The first ``n`` fires in ``(after, until]``."""
    found: list[datetime] = []
    cursor: datetime | None = after
    while len(found) < n and cursor is not None:
        cursor = schedule.next_fire(sched, cursor)
        if cursor is not None and cursor <= until:
            found.append(cursor)
        else:
            cursor = None
    return tuple(found)


def _cursor_before_newest(sched: Schedule, after: datetime, until: datetime, n: int) -> datetime:
    """A time with exactly ``n`` fires in ``(time, until]``; there are more than ``n`` in
    ``(after, until]``."""
    if sched.kind == "every":
        assert sched.interval is not None and sched.anchor is not None
        last = sched.anchor + (until - sched.anchor) // sched.interval * sched.interval
        return last - n * sched.interval
    # Cron fires fall on whole seconds: find the latest second s with n fires in (s, until].
    # Gallop down from ``until`` first, so the counts stay over short (cheap) intervals.
    top = _seconds(until)
    low, high, step = _seconds(after), top, 1
    while top - step > low:
        if count_fires(sched, _instant(top - step), until) >= n:
            low = top - step
            break
        high, step = top - step, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if count_fires(sched, _instant(middle), until) >= n:
            low = middle
        else:
            high = middle
    return _instant(low)


def _seconds(value: datetime) -> int:
    return (value - _EPOCH) // _SECOND


def _instant(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


# ---------------------------------------------------------------------------------------------
# Counting cron fires. Below, times are whole seconds since the epoch: UTC ones ("instants"),
# or wall-clock readings in the schedule's zone ("walls").


@dataclass(frozen=True, slots=True)
class _Shape:
    """A cron schedule as the product it is: times of day (hours x minutes x seconds) on the
    days its day fields match (``days``: the spec of a schedule firing at midnight UTC of each
    such date; ``""`` for every day)."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: str

    @property
    def per_day(self) -> int:
        return len(self.hours) * len(self.minutes) * len(self.seconds)

    def before(self, time_of_day: int) -> int:
        """Fires in a day earlier than ``time_of_day`` (seconds after midnight, <= 86400)."""
        hour, rest = divmod(time_of_day, 3600)
        minute, second = divmod(rest, 60)
        found = bisect_left(self.hours, hour) * len(self.minutes) * len(self.seconds)
        if hour in self.hours:
            found += bisect_left(self.minutes, minute) * len(self.seconds)
            if minute in self.minutes:
                found += bisect_left(self.seconds, second)
        return found


_STARS = ("*", "?")
_BASE = datetime(2001, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=1024)
def _shape(expression: str) -> _Shape:
    # Each field means the same on its own, so the schedule module reads it for us: a schedule
    # of that one field, walked over one minute / hour / day, lists the values it allows.
    second, minute, hour, dom, month, dow = expression.split()
    every_day = dom in _STARS and month in _STARS and dow in _STARS
    return _Shape(
        seconds=_values(f"{second} 0 0 1 1 *", 60, 1),
        minutes=_values(f"0 {minute} 0 1 1 *", 3600, 60),
        hours=_values(f"0 0 {hour} 1 1 *", _DAY, 3600),
        days="" if every_day else f"0 0 0 {dom} {month} {dow}",
    )


def _values(spec: str, span: int, unit: int) -> tuple[int, ...]:
    fires = _walk(schedule.parse(spec), _BASE - _MICRO, _BASE + timedelta(seconds=span - 1), span)
    return tuple((fire - _BASE) // timedelta(seconds=unit) for fire in fires)


def _count_cron(sched: Schedule, first: int, end: int) -> int:
    """Fires at the instants ``[first, end)``."""
    assert sched.expression
    shape = _shape(sched.expression)
    every_hour = len(shape.hours) == 24
    total = 0
    for start, stop, offset, replayed in _stretches(sched.tzinfo, first, end):
        walls_from = start + offset
        if replayed is not None and not every_hour:
            # Clocks went back: walls before ``replayed`` fired in the first pass already.
            walls_from = max(walls_from, replayed)
        total += _count_walls(shape, walls_from, stop + offset)
    return total


def _count_walls(shape: _Shape, start: int, stop: int) -> int:
    """Fires at the wall times ``[start, stop)``: whole days at once, the two ends by hand."""
    if start >= stop:
        return 0
    first_day, last_day = start // _DAY, (stop - 1) // _DAY
    inner = _matching_days(shape.days, first_day + 1, last_day - 1)
    ends = {first_day, last_day}
    return inner * shape.per_day + sum(
        _day_part(shape, day, start, stop) for day in ends if _matching_days(shape.days, day, day)
    )


def _day_part(shape: _Shape, day: int, start: int, stop: int) -> int:
    midnight = day * _DAY
    return shape.before(min(stop - midnight, _DAY)) - shape.before(max(start - midnight, 0))


def _matching_days(days: str, first: int, last: int) -> int:
    """How many days (since the epoch) in ``[first, last]`` the day fields ``days`` match."""
    if last < first or not days:
        return max(last - first + 1, 0)
    found = 0
    for year in range(_year(first), _year(last) + 1):
        matching = _days_of_year(days, year)
        found += bisect_left(matching, last + 1) - bisect_left(matching, first)
    return found


def _year(day: int) -> int:
    return (_EPOCH + timedelta(days=day)).year


@lru_cache(maxsize=1024)
def _days_of_year(days: str, year: int) -> tuple[int, ...]:
    # At most 366 steps per (day fields, year), once: counting over years stays cheap.
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = start.replace(year=year + 1) - _MICRO
    fires = _walk(schedule.parse(days), start - _MICRO, end, 366)
    return tuple(_seconds(fire) // _DAY for fire in fires)


def _stretches(tz: TZInfo, first: int, end: int) -> Iterator[tuple[int, int, int, int | None]]:
    """Split the instants ``[first, end)`` where the zone's UTC offset changes:
    ``(start, stop, offset, replayed)``, ``replayed`` being, after clocks went back, the wall
    time up to which the walls of this stretch were already shown before the change."""
    if tz is UTC:
        yield first, end, 0, None
        return
    # Start a day early: a change just before ``first`` decides which walls repeat after it.
    cursor = first - _DAY
    offset, replayed = _offset(tz, cursor), None
    while cursor < end:
        change = _next_change(tz, cursor, offset, end)
        if change > first:
            yield max(cursor, first), min(change, end), offset, replayed
        if change >= end:
            return
        new = _offset(tz, change)
        replayed = change + offset if new < offset else None
        cursor, offset = change, new


def _next_change(tz: TZInfo, cursor: int, offset: int, end: int) -> int:
    """The first instant after ``cursor`` whose offset is not ``offset``, or ``end``."""
    probe = cursor
    while probe < end:
        low, probe = probe, min(probe + _DAY, end)
        if _offset(tz, probe) != offset:
            while probe - low > 1:
                middle = (low + probe) // 2
                if _offset(tz, middle) == offset:
                    low = middle
                else:
                    probe = middle
            return probe
    return end


def _offset(tz: TZInfo, instant: int) -> int:
    offset = _instant(instant).astimezone(tz).utcoffset()
    assert offset is not None
    return offset // _SECOND
