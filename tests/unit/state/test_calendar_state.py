"""Calendars in the replicated state: the commands round trip, a job names only a calendar
that exists, a calendar in use is not deleted, and snapshots carry calendars."""

from __future__ import annotations

from typing import Any

from dkron_lab import codec
from dkron_lab.model.calendar import calendar_from_json
from dkron_lab.model.job import Job
from dkron_lab.state.commands import DeleteCalendar, SetCalendar, decode
from dkron_lab.state.events import CalendarChanged
from dkron_lab.state.machine import JobState, command

HOLIDAYS = {"name": "holidays", "dates": ["2026-12-25"], "weekdays": ["sun"]}


def job(**fields: Any) -> dict[str, Any]:
    made = Job(name="nightly", schedule="@daily", executor="shell", **fields)
    return codec.job_to_record(made)


def test_the_commands_round_trip_through_their_wire_form() -> None:
    cal = calendar_from_json(HOLIDAYS | {"ranges": [{"from": "2027-01-01", "to": "2027-01-02"}]})
    assert decode(SetCalendar(calendar=cal).encode()) == SetCalendar(calendar=cal)
    assert decode(DeleteCalendar(name="holidays").encode()) == DeleteCalendar(name="holidays")
    assert SetCalendar(calendar=cal).encode()["type"] == "set_calendar"


def test_a_job_on_a_missing_calendar_is_refused_and_a_used_one_is_not_deleted() -> None:
    state = JobState()
    changes: list[CalendarChanged] = []
    state.subscribe(changes.append, CalendarChanged)
    refused = state.apply(command("set_job", job=job(calendar="holidays")))
    assert refused["error"]["type"] == "InvalidJob"
    assert (
        "calendar 'holidays' does not exist: create it with POST /v1/calendars"
        in (refused["error"]["message"])
    )
    assert state.apply(command("set_calendar", calendar=HOLIDAYS)) == {"created": True}
    assert state.apply(command("set_job", job=job(calendar="holidays"))) == {"created": True}
    in_use = state.apply(command("delete_calendar", name="holidays"))
    assert in_use["error"]["type"] == "ConflictError"
    assert "used by job(s) nightly" in in_use["error"]["message"]
    state.apply(command("set_job", job=job()))
    assert state.apply(command("delete_calendar", name="holidays")) == {}
    assert state.calendar("holidays") is None
    missing = state.apply(command("delete_calendar", name="holidays"))
    assert missing["error"]["type"] == "NotFoundError"
    assert [(c.name, c.calendar is None) for c in changes] == [
        ("holidays", False),
        ("holidays", True),
    ]


def test_calendars_survive_a_snapshot_and_old_snapshots_have_none() -> None:
    state = JobState()
    state.apply(command("set_calendar", calendar=HOLIDAYS))
    state.apply(command("set_job", job=job(calendar="holidays", calendar_mode="only")))
    data = state.snapshot()
    restored = JobState()
    restored.restore(data)
    assert restored.all_calendars() == state.all_calendars()
    assert [j.name for j in restored.jobs_on_calendar("holidays")] == ["nightly"]
    assert restored.snapshot() == data
    empty = JobState()
    assert "calendars" not in empty.snapshot()
    old = {k: v for k, v in data.items() if k != "calendars"}
    empty.restore(old)
    assert empty.all_calendars() == []
