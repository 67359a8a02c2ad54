"""Schedules: Dkron's schedule grammar, parsed once, and the pure ``next_fire(schedule, after)``.

This is the only module that speaks croniter. croniter finds the next *wall-clock* time that
matches the fields (naive datetimes, no zone); this module parses and validates the grammar itself
(robfig/cron's rules, messages that say how to fix a spec) and maps wall times to instants, which
is where croniter's own DST handling differs from robfig's (it moves a skipped 02:30 to 03:00).

Rules (``docs/schedules.md`` has the long version):

* Fields: 6 with seconds first (``sec min hour dom month dow``) or the 5-field unix form
  (seconds = 0). DOM/DOW as robfig: if either field is a star (``*``/``?``, ``*/1``), both must
  match; otherwise either may.
* Every form is evaluated in the schedule's zone: a ``TZ=``/``CRON_TZ=`` prefix, else the job's
  ``timezone``, else UTC. A wall time that does not exist (spring forward) is skipped. A wall time
  that happens twice (fall back) fires once, at its first occurrence, unless the hour field is
  ``*`` (every hour): such schedules fire in both passes, so they keep their real-time rhythm.
  No UTC instant ever fires twice.
* ``@every d`` fires at ``anchor + k*d`` (any integer k), the same instants on every server.
* ``@at t`` fires once at ``t``; ``@manually`` never fires.
* The search for a match stops after 5 years (as robfig): an impossible date never fires.
"""

from __future__ import annotations

import difflib
import re
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from datetime import timezone as _FixedOffset
from datetime import tzinfo as TZInfo
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped]

from dkron_lab.errors import InvalidSchedule
from dkron_lab.model.units import parse_duration

__all__ = ["SEARCH_YEARS", "Schedule", "ScheduleKind", "fires", "next_fire", "parse", "zone"]

SEARCH_YEARS = 5
"""How far ahead a field schedule is searched before it counts as never firing (robfig's limit)."""

ScheduleKind = Literal["cron", "every", "at", "manual"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_HORIZON = timedelta(days=366 * SEARCH_YEARS)
# croniter objects keep the last search position in themselves; one lock keeps concurrent
# callers (the Raft thread, the event loop) from reading each other's position.
_ENGINE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Cron:
    engine: croniter
    hour_full: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A parsed schedule, ready to compute fires. Build it with ``parse``.

    ``spec`` is the text as written; ``timezone`` the zone it runs in (``"UTC"`` when none was
    given); ``expression`` the field form actually evaluated (6 fields, seconds first, ``~``
    replaced; ``""`` for ``@every``, ``@at`` and ``@manually``).
    """

    spec: str
    timezone: str
    kind: ScheduleKind
    tzinfo: TZInfo = UTC
    expression: str = ""
    interval: timedelta | None = None
    anchor: datetime | None = None
    at: datetime | None = None
    _cron: _Cron | None = field(default=None, repr=False, compare=False)

    @property
    def is_manual(self) -> bool:
        """True for ``@manually``: runs only when asked (API, UI, parent job)."""
        return self.kind == "manual"

    @property
    def one_shot(self) -> bool:
        """True for ``@at``: fires at most once."""
        return self.kind == "at"


# ---------------------------------------------------------------------------------------------
# Time zones


_UTC_NAMES = frozenset({"", "UTC", "Etc/UTC"})


@lru_cache(maxsize=1024)
def zone(name: str) -> TZInfo:
    """The zone called ``name`` (IANA, e.g. ``"Europe/Berlin"``); ``""`` means UTC.

    Raises ``InvalidSchedule`` for an unknown name, with the closest known name when there is one.
    """
    if name in _UTC_NAMES:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(_zone_error(name)) from None


def _zone_error(name: str) -> str:
    if name in ("Local", "localtime"):
        return (
            f"time zone {name!r} (the server's local zone) is not accepted: servers in different "
            "zones would fire at different instants; name the zone, e.g. 'Europe/Berlin', "
            "or leave it empty for UTC"
        )
    hint = ""
    known = _known_zones()
    by_case = {key.lower(): key for key in known}
    guess = by_case.get(name.lower()) or next(
        iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None
    )
    if guess:
        hint = f"; did you mean {guess!r}?"
    return (
        f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or "
        f"'America/New_York', or leave it empty for UTC{hint}"
    )


@lru_cache(maxsize=1)
def _known_zones() -> list[str]:
    return sorted(available_timezones())


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    low: int
    high: int  # what '*' and 'N/step' run up to
    names: dict[str, int]
    hint: str
    largest: int = -1  # the largest value accepted, when above ``high``

    @property
    def top(self) -> int:
        return max(self.high, self.largest)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS = (
    _FieldSpec("second", 0, 59, {}, "0-59"),
    _FieldSpec("minute", 0, 59, {}, "0-59"),
    _FieldSpec("hour", 0, 23, {}, "0-23"),
    _FieldSpec("day-of-month", 1, 31, {}, "1-31"),
    _FieldSpec("month", 1, 12, _MONTHS, "1-12 or JAN-DEC"),
    # 7 is Sunday too, as in crontab(5); robfig would reject it.
    _FieldSpec("day-of-week", 0, 6, _DAYS, "0-6 or SUN-SAT (7 is Sunday too)", largest=7),
)
_SEC, _MIN, _HOUR, _DOM, _MONTH, _DOW = range(6)
_FIELD_USAGE = (
    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 fields with seconds "
    "first (second minute hour day-of-month month day-of-week), e.g. '0 30 6 * * MON-FRI'"
)
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
}
_DESCRIPTOR_USAGE = (
    "use one of " + ", ".join(_DESCRIPTORS) + ", @every <duration>, @at <time>, @manually"
)
_HASHERS = (
    lambda h: h % 60,
    lambda h: h % 60,
    lambda h: h % 24,
    lambda h: h % 28 + 1,
    lambda h: h % 12 + 1,
    lambda h: h % 7,
)
_TZ_PREFIXES = ("TZ=", "CRON_TZ=")


def parse(
    spec: str, *, timezone: str = "", job_name: str = "", anchor: datetime | None = None
) -> Schedule:
    """Parse a Dkron schedule ``spec`` for a job.

    ``timezone`` is the job's zone (``""`` = UTC; a ``TZ=`` prefix in the spec wins);
    ``job_name`` feeds the ``~`` hash; ``anchor`` (aware) anchors ``@every``, default the Unix
    epoch. Raises ``InvalidSchedule`` naming the part that is wrong and how to fix it.
    """
    try:
        # The name matters only to the ~ hash; leaving it out of the key lets jobs share parses.
        return _parse(spec, timezone, job_name if "~" in spec else "", anchor)
    except InvalidSchedule as exc:
        raise InvalidSchedule(f"can't parse job schedule {spec!r}: {exc}") from None


@lru_cache(maxsize=16384)
def _parse(spec: str, timezone: str, job_name: str, anchor: datetime | None) -> Schedule:
    text = spec.strip()
    if not text:
        raise InvalidSchedule(f"the schedule is empty; {_FIELD_USAGE}, or a descriptor")
    zone_name, body = _split_zone_prefix(text, timezone)
    tz = zone(zone_name)
    # A @manually schedule until the form below says otherwise.
    base = Schedule(spec=spec, timezone=zone_name or "UTC", kind="manual", tzinfo=tz)
    if body.startswith("@"):
        return _parse_descriptor(base, body, anchor)
    fields = _hash_fields(_split_fields(body), job_name)
    return _cron_schedule(base, fields)


def _split_zone_prefix(text: str, timezone: str) -> tuple[str, str]:
    for prefix in _TZ_PREFIXES:
        if text.startswith(prefix):
            name, *rest = text[len(prefix) :].split(None, 1)
            if not rest:
                raise InvalidSchedule(
                    f"nothing follows the {prefix} prefix: write e.g. '{prefix}Europe/Berlin "
                    f"0 0 6 * * *' or '{prefix}Europe/Berlin @daily'"
                )
            return name, rest[0].strip()
    return timezone, text


def _split_fields(body: str) -> tuple[str, ...]:
    fields = tuple(body.split())
    if len(fields) == 5:
        return ("0", *fields)
    if len(fields) != 6:
        raise InvalidSchedule(f"{_FIELD_USAGE}; got {len(fields)} fields")
    return fields


def _hash_fields(fields: tuple[str, ...], job_name: str) -> tuple[str, ...]:
    """Replace each ``~`` field with a value spread by the job name (Dkron's name hash)."""
    if "~" not in fields:
        return fields
    value = sum(map(ord, job_name))
    return tuple(
        str(_HASHERS[index](value)) if text == "~" else text for index, text in enumerate(fields)
    )


def _cron_schedule(base: Schedule, fields: tuple[str, ...]) -> Schedule:
    return replace(base, kind="cron", expression=" ".join(fields), _cron=_compile(fields))


def _parse_descriptor(base: Schedule, body: str, anchor: datetime | None) -> Schedule:
    word, *rest = body.split(None, 1)
    word, argument = word.lower(), (rest[0].strip() if rest else "")
    if word == "@every":
        return _every_schedule(base, argument, anchor)
    if word == "@at":
        return replace(base, kind="at", at=_parse_at(argument, base.tzinfo))
    if word not in _DESCRIPTORS and word != "@manually":
        guess = difflib.get_close_matches(word, [*_DESCRIPTORS, "@manually", "@every", "@at"], 1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        raise InvalidSchedule(f"unknown descriptor {word!r}: {hint}{_DESCRIPTOR_USAGE}")
    if argument:
        raise InvalidSchedule(f"{word} takes nothing after it, got {argument!r}")
    if word == "@manually":
        return base
    return _cron_schedule(base, tuple(_DESCRIPTORS[word].split()))


def _every_schedule(base: Schedule, argument: str, anchor: datetime | None) -> Schedule:
    if not argument:
        raise InvalidSchedule("@every needs a duration, e.g. '@every 30s' or '@every 1h30m'")
    interval = parse_duration(argument)
    whole = timedelta(seconds=interval // _SECOND)
    if whole < _SECOND:
        raise InvalidSchedule(
            f"@every needs an interval of at least 1s, got {argument!r}; e.g. '@every 1s'"
        )
    start = _EPOCH if anchor is None else _aware_utc(anchor, "anchor")
    return replace(base, kind="every", interval=whole, anchor=start)


_AT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?"
)
_AT_USAGE = (
    "@at needs an RFC3339 time such as '2030-05-01T09:30:00Z' or '2030-05-01T09:30:00+02:00', "
    "or a local '2030-05-01T09:30' read in the job's time zone"
)


def _parse_at(argument: str, tz: TZInfo) -> datetime:
    match = _AT.fullmatch(argument)
    if match is None:
        raise InvalidSchedule(f"{_AT_USAGE}; got {argument!r}")
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups()[:6])
    micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
    try:
        wall = datetime(year, month, day, hour, minute, second, micro)
        offset = _at_offset(match, tz)
    except ValueError as exc:
        raise InvalidSchedule(f"{argument!r} is not a valid time ({exc}); {_AT_USAGE}") from None
    # A local time in a DST gap reads with the offset before the jump (02:30 -> 03:30 EDT);
    # a repeated one as its first occurrence.
    try:
        return wall.replace(tzinfo=offset).astimezone(UTC)
    except OverflowError:
        raise InvalidSchedule(f"{argument!r} is out of range; {_AT_USAGE}") from None


def _at_offset(match: re.Match[str], tz: TZInfo) -> TZInfo:
    if match.group(8):
        return UTC
    if match.group(9) is None:
        return tz
    hours, minutes = int(match.group(10)), int(match.group(11))
    sign = -1 if match.group(9) == "-" else 1
    return _FixedOffset(sign * timedelta(hours=hours, minutes=minutes))


def _aware_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Fields


@lru_cache(maxsize=16384)
def _compile(fields: tuple[str, ...]) -> _Cron:
    """Parse 6 field texts (seconds first) into a croniter engine over plain value lists."""
    values = [_parse_field(text, spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    sets = [found for found, _ in values]
    dom_star, dow_star = values[_DOM][1], values[_DOW][1]
    texts = [_as_list(found, spec) for found, spec in zip(sets, _FIELDS, strict=True)]
    # robfig: a star in either day field means both must match; otherwise either may.
    day_or = not (dom_star or dow_star)
    if day_or and (texts[_DOM] == "*" or texts[_DOW] == "*"):
        texts[_DOM] = texts[_DOW] = "*"  # OR with a whole field is every day
    engine = croniter(
        " ".join(texts),
        datetime(2000, 1, 1),
        ret_type=datetime,
        day_or=day_or,
        second_at_beginning=True,
        max_years_between_matches=SEARCH_YEARS,
    )
    return _Cron(engine=engine, hour_full=len(sets[_HOUR]) == 24)


def _as_list(found: frozenset[int], spec: _FieldSpec) -> str:
    full = spec.high - spec.low + 1
    return "*" if len(found) == full else ",".join(map(str, sorted(found)))


def _parse_field(text: str, spec: _FieldSpec) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it is a star in robfig's sense."""
    found: set[int] = set()
    star = False
    try:
        for part in text.split(","):
            values, part_star = _parse_range(part, spec)
            found |= values
            star = star or part_star
    except InvalidSchedule as exc:
        raise InvalidSchedule(f"{spec.name} field {text!r}: {exc}") from None
    if spec.largest in found:  # day-of-week 7 is Sunday
        found = (found - {spec.largest}) | {spec.low}
    return frozenset(found), star


def _parse_range(part: str, spec: _FieldSpec) -> tuple[set[int], bool]:
    if "~" in part:
        raise InvalidSchedule("'~' (the name hash) must be a whole field on its own")
    range_text, slash, step_text = part.partition("/")
    step = _parse_step(step_text) if slash else 1
    if range_text in ("*", "?"):
        low, high, star = spec.low, spec.high, step == 1
    else:
        low_text, dash, high_text = range_text.partition("-")
        low = _parse_value(low_text, spec)
        high = _parse_value(high_text, spec) if dash else (spec.high if slash else low)
        star = False
        if low > high:
            raise InvalidSchedule(f"range {range_text!r} runs backwards: write the smaller first")
    return set(range(low, high + 1, step)), star


def _parse_step(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise InvalidSchedule(f"step {text!r} must be a whole number of at least 1, e.g. '*/5'")
    return int(text)


def _parse_value(text: str, spec: _FieldSpec) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
    elif text.lower() in spec.names:
        value = spec.names[text.lower()]
    else:
        what = "a number or a name" if spec.names else "a number"
        shown = repr(text) if text else "a missing value"
        raise InvalidSchedule(f"{shown} is not {what}; write {spec.hint}")
    if not spec.low <= value <= spec.top:
        raise InvalidSchedule(f"{value} is out of range {spec.hint}")
    return value


# ---------------------------------------------------------------------------------------------
# Fires


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire instant strictly after ``after`` (aware, any zone), as aware UTC.

    ``None`` means never: ``@manually``, an ``@at`` not after ``after``, or no match within
    ``SEARCH_YEARS`` (e.g. 30 February).
    """
    now = _aware_utc(after, "after")
    try:
        return _next_after(schedule, now)
    except OverflowError:  # the next instant would be past year 9999: there is none
        return None


def _next_after(schedule: Schedule, now: datetime) -> datetime | None:
    if schedule.kind == "every":
        assert schedule.interval is not None and schedule.anchor is not None
        steps = (now - schedule.anchor) // schedule.interval + 1
        return schedule.anchor + steps * schedule.interval
    if schedule.kind == "at":
        assert schedule.at is not None
        return schedule.at if schedule.at > now else None
    if schedule._cron is None:  # @manually
        return None
    if schedule.tzinfo is UTC:
        found = _match(schedule._cron.engine, now.replace(tzinfo=None))
        return None if found is None else found.replace(tzinfo=UTC)
    return _next_zoned(schedule._cron, schedule.tzinfo, now.replace(tzinfo=None))


def fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants after ``after`` (fewer if the schedule ends)."""
    found: list[datetime] = []
    cursor: datetime | None = after
    while cursor is not None and len(found) < count:
        cursor = next_fire(schedule, cursor)
        if cursor is not None:
            found.append(cursor)
    return found


def _match(engine: croniter, cursor: datetime) -> datetime | None:
    """The first wall time strictly after the naive ``cursor`` that the fields match."""
    with _ENGINE_LOCK:
        try:
            found: datetime = engine.get_next(datetime, start_time=cursor, update_current=False)
        except CroniterBadDateError:
            return None
    return found


# Below, every datetime is naive: "wall" ones are local clock readings, the others UTC.


def _next_zoned(cron: _Cron, tz: TZInfo, now: datetime) -> datetime | None:
    local = now.replace(tzinfo=UTC).astimezone(tz)
    wall = local.replace(tzinfo=None)
    found = _first_fire(cron, tz, wall, now, wall + _HORIZON)
    if cron.hour_full and local.fold == 0:
        repeat = _first_repeated_fire(cron, tz, local, now)
        if repeat is not None and (found is None or repeat < found):
            found = repeat
    return None if found is None else found.replace(tzinfo=UTC)


def _first_fire(
    cron: _Cron, tz: TZInfo, cursor: datetime, now: datetime, horizon: datetime
) -> datetime | None:
    """Walk matching wall times after ``cursor``; the first that maps to an instant > now."""
    while True:
        wall = _match(cron.engine, cursor)
        if wall is None or wall > horizon:
            return None
        aware = wall.replace(tzinfo=tz)
        early = aware.utcoffset()
        late = aware.replace(fold=1).utcoffset()
        assert early is not None and late is not None
        if early == late:
            return wall - early
        first, second = wall - early, wall - late
        if early > late:  # repeated (fall back): first pass, or both passes for '*' hours
            if first > now:
                return first
            if cron.hour_full and second > now:
                return second
            cursor = _transition(tz, first, second) + early - _SECOND
        else:  # skipped (spring forward): no instant shows this wall time
            cursor = _transition(tz, second, first) + late - _SECOND


def _first_repeated_fire(
    cron: _Cron, tz: TZInfo, local: datetime, now: datetime
) -> datetime | None:
    """While in the first pass of a repeated hour, the first fire in its second pass."""
    early, late = local.utcoffset(), local.replace(fold=1).utcoffset()
    assert early is not None and late is not None
    if late >= early:
        return None
    shift = early - late
    whole = now.replace(microsecond=0)
    change = _transition(tz, whole, whole + shift)
    start = change + late
    wall = _match(cron.engine, start - _SECOND)
    if wall is None or wall >= start + shift:
        return None
    return wall - late


def _transition(tz: TZInfo, before: datetime, after: datetime) -> datetime:
    """The first second in ``(before, after]`` (naive UTC) no longer at ``before``'s offset."""
    old = _offset(tz, before)
    low, high = before, after
    while high - low > _SECOND:
        middle = low + timedelta(seconds=((high - low) // _SECOND) // 2)
        if _offset(tz, middle) == old:
            low = middle
        else:
            high = middle
    return high


def _offset(tz: TZInfo, instant: datetime) -> timedelta:
    offset = instant.replace(tzinfo=UTC).astimezone(tz).utcoffset()
    assert offset is not None
    return offset
