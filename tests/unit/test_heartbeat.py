"""Heartbeat checks without processes: which instant a ping covers, the next instant held
(skipping the days a calendar excludes), and the ping keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dkron_lab.errors import BadRequest
from dkron_lab.heartbeat import (
    PingKeys,
    check_heartbeat,
    covered_instant,
    next_instant,
    ping_execution,
)
from dkron_lab.model.calendar import calendar_from_json
from dkron_lab.model.job import Job

NIGHTLY = Job(name="backup", schedule="0 30 2 * * *", executor="heartbeat", max_lateness="15m")
GRACE = timedelta(minutes=1)


def at(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ping", "covers"),
    [
        (at(24, 2, 31), at(24, 2, 30)),  # just after its instant
        (at(24, 2, 44), at(24, 2, 30)),  # within the grace
        (at(24, 2, 29), at(24, 2, 30)),  # a little early (clocks differ)
        (at(24, 2, 46), at(25, 2, 30)),  # after the grace: it stands for the next one
    ],
)
def test_a_ping_covers_the_first_instant_whose_grace_has_not_ended(ping, covers):
    assert covered_instant(NIGHTLY, ping, GRACE) == covers


def test_the_server_default_grace_applies_when_the_job_sets_none():
    job = Job(name="backup", schedule="0 30 2 * * *", executor="heartbeat")
    assert covered_instant(job, at(24, 2, 31), GRACE) == at(24, 2, 30)
    assert covered_instant(job, at(24, 2, 32), GRACE) == at(25, 2, 30)


def test_a_calendar_day_expects_no_ping():
    holidays = calendar_from_json({"name": "holidays", "dates": ["2026-12-25"]})
    job = replace(NIGHTLY, calendar="holidays")
    assert next_instant(job, at(24, 3, 0), holidays) == at(26, 2, 30)
    assert next_instant(job, at(24, 3, 0)) == at(25, 2, 30)  # without it: the 25th
    only = Job(name="x", schedule="0 30 2 * * *", executor="heartbeat", calendar="holidays",
               calendar_mode="only")  # fmt: skip
    assert next_instant(only, at(20, 0, 0), holidays) == at(25, 2, 30)


def test_ping_keys_open_their_own_job_only():
    keys = PingKeys(b"k" * 32)
    key = keys.key("backup")
    assert keys.matches("backup", key)
    assert not keys.matches("other", key) and not keys.matches("backup", "")
    assert not keys.matches("backup", "clé\udc80") and not keys.matches("bäckup", key)
    assert PingKeys(b"j" * 32).key("backup") != key  # another cluster key, another key
    assert len(key) == 24 and key.isascii()


def test_a_ping_is_a_run_of_its_instant_with_its_body_as_output():
    run = ping_execution(
        NIGHTLY, kind="fail", body="disk full", at=at(24, 2, 40), started=at(24, 2, 30),
        node_name="s1", default_grace=GRACE,
    )  # fmt: skip
    assert (run.success, run.output, run.scheduled_at) == (False, "disk full", at(24, 2, 30))
    assert (run.started_at, run.finished_at) == (at(24, 2, 30), at(24, 2, 40))
    with pytest.raises(BadRequest, match="unknown ping 'stop'"):
        ping_execution(NIGHTLY, kind="stop", body="", at=at(24, 2, 40), started=None,
                       node_name="s1", default_grace=GRACE)  # fmt: skip


def test_only_a_heartbeat_check_takes_pings():
    check_heartbeat(NIGHTLY)
    with pytest.raises(BadRequest, match="is not a heartbeat check"):
        check_heartbeat(Job(name="etl", schedule="@daily", executor="shell"))
