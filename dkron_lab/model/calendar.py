"""Calendars: named sets of days a job skips (Quartz's meaning) or runs only on.

A ``Calendar`` is a frozen value replicated through Raft (``set_calendar``). Its days are
the union of ``dates``, inclusive ``ranges``, ``weekdays`` and the all-day events of an
``ical`` text (VEVENT ``DTSTART;VALUE=DATE`` with an optional exclusive ``DTEND``; no
recurrence rules). ``calendar_from_json`` is the one edge that turns user input into a
calendar; every error is a ``BadRequest`` (400) saying what is wrong and how to fix it.

Days are days **in the job's timezone** (the schedule's ``tzinfo``): a fire at
2026-12-25T03:00 Europe/Paris falls on the 25th there, whatever its UTC date.

Pure: no I/O, no clock. ``calendar_fire`` finds a schedule's next fire on an allowed day by
jumping a day at a time (straight to the next calendar day in ``only`` mode), never minute by
minute, and gives up after ``SEARCH_YEARS``; ``day_skip`` describes the excluded fires the
scheduler settles as one skipped span (reason ``calendar``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from datetime import tzinfo as TZInfo
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import BadRequest
from dkron_lab.model import schedule
from dkron_lab.model.job import GROUP_NAME
from dkron_lab.model.planning import count_fires, newest_fires
from dkron_lab.model.schedule import Schedule

__all__ = [
    "MAX_DAYS",
    "MAX_RANGES",
    "SEARCH_YEARS",
    "WEEKDAYS",
    "Calendar",
    "CalendarSkip",
    "allows",
    "calendar_fire",
    "calendar_fires",
    "calendar_from_json",
    "calendar_to_json",
    "day_of",
    "day_skip",
    "parse_ical",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names as a calendar takes them (``date.weekday()`` order)."""
MAX_DAYS = 10_000
"""The most single days (``dates`` plus iCalendar events) one calendar may list."""
MAX_RANGES = 1_000
"""The most ``ranges`` one calendar may list."""
MAX_ICAL = 1_000_000
"""The longest ``ical`` text accepted, in characters."""
SEARCH_YEARS = 5
"""How far ahead ``calendar_fire`` looks for an allowed fire before answering none."""

_MICRO = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_ICAL_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Calendar:
    """A named set of days. ``dates`` sorted; ``ranges`` inclusive ``(from, to)`` pairs;
    ``weekdays`` as ``date.weekday()`` numbers; ``ical`` the source text of ``ical_days``."""

    name: str
    description: str = ""
    dates: tuple[date, ...] = ()
    ranges: tuple[tuple[date, date], ...] = ()
    weekdays: frozenset[int] = frozenset()
    ical: str = ""
    ical_days: tuple[tuple[date, date], ...] = field(default=(), compare=False)

    def contains(self, day: date) -> bool:
        """Whether ``day`` is one of the calendar's days."""
        if day.weekday() in self.weekdays:
            return True
        i = bisect.bisect_left(self.dates, day)
        if i < len(self.dates) and self.dates[i] == day:
            return True
        return any(start <= day <= end for start, end in (*self.ranges, *self.ical_days))

    def next_day(self, day: date) -> date | None:
        """The first of the calendar's days at or after ``day``; None when there is none."""
        found: list[date] = []
        i = bisect.bisect_left(self.dates, day)
        if i < len(self.dates):
            found.append(self.dates[i])
        found += [max(start, day) for start, end in (*self.ranges, *self.ical_days) if end >= day]
        found += [day + timedelta(days=(wd - day.weekday()) % 7) for wd in self.weekdays]
        return min(found, default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarSkip:
    """Fires a calendar excludes, settled as one skipped span: every fire of the schedule from
    ``first`` to ``last`` (both included), ``count`` of them, all on one day."""

    first: datetime
    last: datetime
    count: int

    def to_span(self) -> dict[str, Any]:
        """The span as a ``skip`` command carries it."""
        return {
            "reason": "calendar",
            "first": codec.format_time(self.first),
            "last": codec.format_time(self.last),
            "count": self.count,
        }


# -- matching ---------------------------------------------------------------------------------


def allows(calendar: Calendar, mode: str, day: date) -> bool:
    """Whether a job on ``calendar`` in ``mode`` (``"only"``, else exclude) runs on ``day``."""
    inside = calendar.contains(day)
    return inside if mode == "only" else not inside


def day_of(instant: datetime, tz: TZInfo) -> date:
    """The day ``instant`` falls on in ``tz``."""
    return instant.astimezone(tz).date()


def _start_of(day: date, tz: TZInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def _next_allowed_day(calendar: Calendar, mode: str, day: date, last: date) -> date | None:
    """The first day at or after ``day`` (and at or before ``last``) the job may run on."""
    if mode == "only":
        found = calendar.next_day(day)
        return found if found is not None and found <= last else None
    while day <= last:
        if not calendar.contains(day):
            return day
        day += _DAY
    return None


def calendar_fire(
    sched: Schedule, after: datetime, calendar: Calendar, mode: str
) -> datetime | None:
    """The first fire of ``sched`` strictly after ``after`` on a day ``calendar`` allows
    (days in the schedule's timezone); None when there is none within ``SEARCH_YEARS``.

    Costs one schedule step per allowed-day candidate: excluded days are jumped over whole."""
    tz = sched.tzinfo
    horizon = after + timedelta(days=366 * SEARCH_YEARS)
    cursor = after
    while True:
        fire = schedule.next_fire(sched, cursor)
        if fire is None or fire > horizon:
            return None
        day = day_of(fire, tz)
        if allows(calendar, mode, day):
            return fire
        allowed = _next_allowed_day(calendar, mode, day + _DAY, day_of(horizon, tz))
        if allowed is None:
            return None
        cursor = max(cursor, _start_of(allowed, tz) - _MICRO)


def calendar_fires(
    sched: Schedule, after: datetime, count: int, calendar: Calendar, mode: str
) -> list[datetime]:
    """The next ``count`` fires after ``after`` that ``calendar`` allows (fewer if none)."""
    found: list[datetime] = []
    cursor: datetime | None = after
    while cursor is not None and len(found) < count:
        cursor = calendar_fire(sched, cursor, calendar, mode)
        if cursor is not None:
            found.append(cursor)
    return found


def day_skip(sched: Schedule, after: datetime, fire: datetime, until: datetime) -> CalendarSkip:
    """The span settled for the excluded ``fire`` (the schedule's first fire after ``after``):
    ``fire`` alone when it is the first fire of its day after ``after`` was on another day;
    else every fire of its day from ``fire`` to the day's last one (at or before ``until``)."""
    tz = sched.tzinfo
    day = day_of(fire, tz)
    if day_of(after, tz) != day:
        return CalendarSkip(first=fire, last=fire, count=1)
    end = min(_start_of(day + _DAY, tz) - _MICRO, until)
    count = count_fires(sched, after, end)
    last = newest_fires(sched, after, end, 1, count=count)
    return CalendarSkip(first=fire, last=last[-1] if last else fire, count=max(count, 1))


# -- the JSON edge ----------------------------------------------------------------------------


def calendar_to_json(calendar: Calendar) -> dict[str, Any]:
    """What the API shows and the Raft log holds (``calendar_from_json`` reads it back)."""
    shown: dict[str, Any] = {
        "name": calendar.name,
        "description": calendar.description,
        "dates": [d.isoformat() for d in calendar.dates],
        "ranges": [{"from": a.isoformat(), "to": b.isoformat()} for a, b in calendar.ranges],
        "weekdays": [WEEKDAYS[wd] for wd in sorted(calendar.weekdays)],
    }
    if calendar.ical:
        shown["ical"] = calendar.ical
    return shown


_FIELDS = ("name", "description", "dates", "ranges", "weekdays", "ical")


def calendar_from_json(data: Any, *, name: str | None = None) -> Calendar:
    """A calendar from its JSON (``name`` from the URL wins over the body's, which must then
    agree or be absent). Raises ``BadRequest``, saying what to fix."""
    if not isinstance(data, Mapping):
        raise BadRequest(
            'a calendar must be a JSON object, e.g. {"name": "holidays", "dates": ["2026-12-25"]}'
        )
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown calendar field(s) {', '.join(unknown)}: a calendar has {', '.join(_FIELDS)}"
        )
    name = _name(data.get("name"), name)
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise BadRequest("description must be a string")
    dates = _dates(data.get("dates") or [])
    ranges = _ranges(data.get("ranges") or [])
    weekdays = _weekdays(data.get("weekdays") or [])
    ical = data.get("ical") or ""
    if not isinstance(ical, str):
        raise BadRequest("ical must be the text of an iCalendar (.ics) file")
    ical_days = parse_ical(ical) if ical else ()
    if len(dates) + len(ical_days) > MAX_DAYS:
        raise BadRequest(
            f"a calendar may list at most {MAX_DAYS} dates and events; this one has "
            f"{len(dates) + len(ical_days)}: use ranges or weekdays for long stretches"
        )
    return Calendar(
        name=name,
        description=description,
        dates=dates,
        ranges=ranges,
        weekdays=weekdays,
        ical=ical,
        ical_days=ical_days,
    )


def _name(given: Any, from_url: str | None) -> str:
    if from_url is not None and given not in (None, "", from_url):
        raise BadRequest(
            f"the body names calendar {given!r} but the URL names {from_url!r}: "
            "rename by creating the new calendar and deleting the old one"
        )
    name = from_url if from_url is not None else given
    if not isinstance(name, str) or not GROUP_NAME.match(name):
        raise BadRequest(
            f"invalid calendar name {name!r}: use 1 to 64 letters, digits, '_', '-' or '.', "
            "e.g. 'holidays'"
        )
    return name


def _list(value: Any, what: str, example: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{what} must be a list, e.g. {example}")
    return value


def _date(value: Any, what: str) -> date:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise BadRequest(f"{what} {value!r} is not a date: write YYYY-MM-DD, e.g. 2026-12-25")


def _dates(value: Any) -> tuple[date, ...]:
    items = _list(value, "dates", '["2026-12-25", "2027-01-01"]')
    if len(items) > MAX_DAYS:
        raise BadRequest(
            f"a calendar may list at most {MAX_DAYS} dates; this one has {len(items)}: use "
            "ranges or weekdays for long stretches"
        )
    return tuple(sorted({_date(item, "date") for item in items}))


def _ranges(value: Any) -> tuple[tuple[date, date], ...]:
    items = _list(value, "ranges", '[{"from": "2026-12-24", "to": "2026-12-31"}]')
    if len(items) > MAX_RANGES:
        raise BadRequest(
            f"a calendar may list at most {MAX_RANGES} ranges; this one has {len(items)}"
        )
    found = []
    for item in items:
        if not isinstance(item, Mapping) or set(item) != {"from", "to"}:
            raise BadRequest(
                f'a range must be {{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}} (both days '
                f"included), not {item!r}"
            )
        start, end = _date(item["from"], "range from"), _date(item["to"], "range to")
        if end < start:
            raise BadRequest(
                f"range from {start} to {end} is reversed: 'from' must be on or before 'to'"
            )
        found.append((start, end))
    return tuple(sorted(found))


def _weekdays(value: Any) -> frozenset[int]:
    items = _list(value, "weekdays", '["sat", "sun"]')
    found = set()
    for item in items:
        number = _WEEKDAY_NAMES.get(item.lower()) if isinstance(item, str) else None
        if number is None:
            raise BadRequest(
                f"unknown weekday {item!r}: use {', '.join(WEEKDAYS)} (or full English names)"
            )
        found.add(number)
    return frozenset(found)


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_NAMES = {name: i for names in (WEEKDAYS, _FULL_NAMES) for i, name in enumerate(names)}


# -- iCalendar --------------------------------------------------------------------------------


def _unfolded(text: str) -> list[str]:
    """The content lines of an iCalendar text (RFC 5545 3.1: a line starting with a space or
    a tab continues the one before)."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw.strip():
            lines.append(raw)
    return lines


def parse_ical(text: str) -> tuple[tuple[date, date], ...]:
    """The all-day events of an iCalendar text as inclusive ``(first, last)`` day pairs.

    Takes each VEVENT's ``DTSTART;VALUE=DATE:YYYYMMDD`` and optional ``DTEND`` (exclusive, as
    RFC 5545 says; absent: one day). Refuses timed events and recurrence rules, which a set
    of days cannot hold: list such days as dates or weekdays instead."""
    if len(text) > MAX_ICAL:
        raise BadRequest(f"the ical text is {len(text)} characters; the limit is {MAX_ICAL}")
    events: list[tuple[date, date]] = []
    event: dict[str, str] | None = None
    for line in _unfolded(text):
        key, _, value = line.partition(":")
        prop = key.split(";")[0].upper()
        if prop == "BEGIN" and value.strip().upper() == "VEVENT":
            event = {}
        elif prop == "END" and value.strip().upper() == "VEVENT" and event is not None:
            events.append(_ical_event(event))
            event = None
        elif event is not None and prop in ("DTSTART", "DTEND", "RRULE", "RDATE"):
            event[prop] = value.strip()
        if len(events) > MAX_DAYS:
            raise BadRequest(f"the ical text has more than {MAX_DAYS} events")
    if not events:
        raise BadRequest(
            "the ical text has no VEVENT: send an iCalendar (.ics) text with all-day events "
            "(DTSTART;VALUE=DATE:20261225)"
        )
    return tuple(sorted(events))


def _ical_event(event: Mapping[str, str]) -> tuple[date, date]:
    if "RRULE" in event or "RDATE" in event:
        raise BadRequest(
            "an ical event repeats (RRULE/RDATE), which is not supported: list its days as "
            "dates, or use weekdays"
        )
    if "DTSTART" not in event:
        raise BadRequest("an ical VEVENT has no DTSTART")
    first = _ical_date(event["DTSTART"])
    end = _ical_date(event["DTEND"]) if "DTEND" in event else first + _DAY
    if end <= first:
        raise BadRequest(f"an ical event ends ({end}) before it starts ({first})")
    return first, end - _DAY


def _ical_date(value: str) -> date:
    match = _ICAL_DATE.match(value)
    if match is None:
        raise BadRequest(
            f"ical date {value!r} is not an all-day date: calendars take all-day events "
            "(DTSTART;VALUE=DATE:20261225), not timed ones"
        )
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError:
        raise BadRequest(f"ical date {value!r} is not a real day") from None
