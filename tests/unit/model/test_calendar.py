"""Calendars as values: what a calendar accepts (and the 400 it answers otherwise), which days
it holds, and a schedule's next fire on an allowed day, in the job's timezone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dkron_lab.errors import BadRequest
from dkron_lab.model import schedule
from dkron_lab.model.calendar import (
    MAX_DAYS,
    calendar_fire,
    calendar_from_json,
    calendar_to_json,
    day_skip,
    parse_ical,
)

ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:May\r\n"
    "DTSTART;VALUE=DATE:20270501\r\nDTEND;VALUE=DATE:20270503\r\nEND:VEVENT\r\n"
    "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:2027\r\n 0714\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def holidays(**fields: object) -> object:
    return calendar_from_json({"name": "holidays", **fields})


def test_every_kind_of_day_is_held_and_the_json_round_trips() -> None:
    cal = calendar_from_json(
        {
            "name": "h",
            "description": "bank holidays",
            "dates": ["2026-12-25", "2026-01-01"],
            "ranges": [{"from": "2026-12-30", "to": "2027-01-02"}],
            "weekdays": ["Sunday", "sat"],
            "ical": ICS,
        }
    )
    held = [date(2026, 12, 25), date(2026, 12, 31), date(2027, 1, 2), date(2026, 12, 27)]
    held += [date(2027, 5, 1), date(2027, 5, 2), date(2027, 7, 14)]
    assert all(cal.contains(day) for day in held)
    not_held = [date(2026, 12, 24), date(2027, 1, 4), date(2027, 5, 3), date(2027, 7, 15)]
    assert not any(cal.contains(day) for day in not_held)
    shown = calendar_to_json(cal)
    assert shown["dates"] == ["2026-01-01", "2026-12-25"]
    assert shown["weekdays"] == ["sat", "sun"]
    assert calendar_from_json(shown) == cal
    assert cal.next_day(date(2026, 12, 21)) == date(2026, 12, 25)
    assert cal.next_day(date(2027, 1, 4)) == date(2027, 1, 9)  # the next Saturday


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"dates": ["2026-13-01"]}, "'2026-13-01' is not a date: write YYYY-MM-DD"),
        ({"dates": ["25/12/2026"]}, "is not a date"),
        ({"dates": "2026-12-25"}, "dates must be a list"),
        ({"ranges": [{"from": "2026-12-31", "to": "2026-12-24"}]}, "is reversed"),
        ({"ranges": [{"from": "2026-12-24"}]}, 'a range must be {"from"'),
        ({"weekdays": ["funday"]}, "unknown weekday 'funday': use mon, tue"),
        ({"dates": ["2026-01-01"] * (MAX_DAYS + 1)}, f"at most {MAX_DAYS} dates"),
        ({"colour": "red"}, "unknown calendar field(s) colour"),
        ({"ical": "BEGIN:VCALENDAR\nEND:VCALENDAR"}, "has no VEVENT"),
        ({"ical": "BEGIN:VEVENT\nDTSTART:20261225T100000Z\nEND:VEVENT"}, "not an all-day"),
        (
            {"ical": "BEGIN:VEVENT\nDTSTART;VALUE=DATE:20261225\nRRULE:FREQ=YEARLY\nEND:VEVENT"},
            "RRULE",
        ),
    ],
)
def test_bad_input_is_a_400_that_says_what_to_fix(fields: dict[str, object], says: str) -> None:
    with pytest.raises(BadRequest) as raised:
        holidays(**fields)
    assert says in raised.value.message


def test_a_bad_name_and_a_url_name_that_disagrees_are_refused() -> None:
    with pytest.raises(BadRequest, match="invalid calendar name 'a b'"):
        calendar_from_json({"name": "a b"})
    with pytest.raises(BadRequest, match="the URL names 'x'"):
        calendar_from_json({"name": "y"}, name="x")
    assert calendar_from_json({}, name="x").name == "x"


def test_an_ical_event_without_an_end_is_one_day() -> None:
    assert parse_ical("BEGIN:VEVENT\nDTSTART;VALUE=DATE:20261225\nEND:VEVENT") == (
        (date(2026, 12, 25), date(2026, 12, 25)),
    )


def test_days_are_days_in_the_schedules_timezone() -> None:
    """00:30 in Paris on the 25th is 23:30 UTC on the 24th, yet the 25th there: skipped. 00:30
    Paris on the 26th is 23:30 UTC on the 25th, yet the 26th there: it runs."""
    cal = calendar_from_json({"name": "h", "dates": ["2026-12-25"]})
    paris = schedule.parse("30 0 * * *", timezone="Europe/Paris")
    after = datetime(2026, 12, 24, 0, 0, tzinfo=UTC)
    assert calendar_fire(paris, after, cal, "") == datetime(2026, 12, 25, 23, 30, tzinfo=UTC)
    assert calendar_fire(paris, after, cal, "only") == datetime(2026, 12, 24, 23, 30, tzinfo=UTC)
    utc = schedule.parse("30 0 * * *")
    assert calendar_fire(utc, after, cal, "") == datetime(2026, 12, 24, 0, 30, tzinfo=UTC)
    assert calendar_fire(utc, datetime(2026, 12, 24, 1, tzinfo=UTC), cal, "") == datetime(
        2026, 12, 26, 0, 30, tzinfo=UTC
    )


def test_only_jumps_straight_to_the_next_calendar_day_and_gives_up_after_five_years() -> None:
    cal = calendar_from_json({"name": "h", "dates": ["2029-06-01", "2040-01-01"]})
    every_minute = schedule.parse("* * * * *")
    after = datetime(2026, 12, 8, tzinfo=UTC)
    assert calendar_fire(every_minute, after, cal, "only") == datetime(2029, 6, 1, tzinfo=UTC)
    later = datetime(2029, 6, 2, tzinfo=UTC)
    assert calendar_fire(every_minute, later, cal, "only") is None  # 2040 is past the search
    empty = calendar_from_json({"name": "empty"})
    assert calendar_fire(every_minute, after, empty, "only") is None


def test_a_calendar_excluding_every_weekday_finds_no_fire() -> None:
    week = calendar_from_json({"name": "w", "weekdays": ["mon", "tue", "wed", "thu", "fri"]})
    weekend = calendar_from_json({"name": "e", "weekdays": ["sat", "sun"]})
    hourly = schedule.parse("@hourly")
    friday = datetime(2026, 12, 11, 23, 30, tzinfo=UTC)
    assert calendar_fire(hourly, friday, weekend, "") == datetime(2026, 12, 14, tzinfo=UTC)
    assert calendar_fire(hourly, friday, week, "only") == datetime(2026, 12, 14, tzinfo=UTC)
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    every = calendar_from_json({"name": "x", "weekdays": days})
    assert calendar_fire(hourly, friday, every, "") is None


def test_a_days_excluded_fires_settle_in_two_spans() -> None:
    every_minute = schedule.parse("* * * * *")
    eve = datetime(2026, 12, 24, 23, 59, tzinfo=UTC)
    first = day_skip(every_minute, eve, datetime(2026, 12, 25, tzinfo=UTC), eve + timedelta(days=3))
    assert (first.first, first.last, first.count) == (eve + timedelta(minutes=1),) * 2 + (1,)
    rest = day_skip(
        every_minute, first.last, first.last + timedelta(minutes=1), eve + timedelta(days=3)
    )
    assert rest.first == datetime(2026, 12, 25, 0, 1, tzinfo=UTC)
    assert rest.last == datetime(2026, 12, 25, 23, 59, tzinfo=UTC)
    assert rest.count == 1439
