"""A job on a calendar, in fake time, against the real ``Leader``/``Scheduler``/``JobState``
(``leader_model``): no excluded instant is claimed, each is recorded skipped (reason
``calendar``) in at most two spans a day, and ``next`` jumps over the excluded days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from leader_model import T0, ModelCluster

from dkron_lab import codec
from dkron_lab.leader import split_by_calendar
from dkron_lab.model.calendar import calendar_from_json
from dkron_lab.model.job import Job, parse_job_schedule
from dkron_lab.state.events import CalendarChanged
from dkron_lab.state.machine import command

DAY = timedelta(days=1)
HOLIDAY = "2026-03-02"  # T0 is 2026-03-01 12:00 UTC


def cluster_with(job: Job, **calendar: Any) -> ModelCluster:
    cluster = ModelCluster([])
    for node in cluster.nodes.values():
        node.index.calendar_of = cluster.state.calendar
    cluster.state.apply(command("set_calendar", calendar={"name": "days", **calendar}))
    assert "error" not in cluster.state.apply(command("set_job", job=codec.job_to_record(job)))
    return cluster


async def run_until(cluster: ModelCluster, until: datetime, step: float = 600) -> None:
    while cluster.clock.now() < until:
        await cluster.advance(step)
        await cluster.commit_all()


def started(cluster: ModelCluster) -> list[datetime]:
    return sorted(at for (_, at), groups in cluster.started.items() if groups)


def spans(cluster: ModelCluster) -> list[tuple[str, str, str, int]]:
    return [(s["reason"], s["first"], s["last"], s["count"]) for _, s in cluster.skipped]


async def test_an_hourly_job_skips_the_holiday_and_records_it_in_two_spans() -> None:
    hourly = Job(name="hourly", schedule="0 0 * * * *", executor="shell", calendar="days")
    cluster = cluster_with(hourly, dates=[HOLIDAY])
    await cluster.elect("s1")
    index = cluster.nodes["s1"].index
    await run_until(cluster, datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    assert index.next_of("hourly") == datetime(2026, 3, 3, tzinfo=UTC)  # the job's next
    await run_until(cluster, datetime(2026, 3, 3, 2, 30, tzinfo=UTC))
    ran = started(cluster)
    assert ran[0] == datetime(2026, 3, 1, 13, tzinfo=UTC)
    assert not [at for at in ran if at.date().isoformat() == HOLIDAY]
    assert ran[-3:] == [datetime(2026, 3, 3, h, tzinfo=UTC) for h in (0, 1, 2)]
    assert len(ran) == 11 + 3
    assert spans(cluster) == [
        ("calendar", "2026-03-02T00:00:00Z", "2026-03-02T00:00:00Z", 1),
        ("calendar", "2026-03-02T01:00:00Z", "2026-03-02T23:00:00Z", 23),
    ]
    assert cluster.nodes["s2"].index.next_of("hourly") == index.next_of("hourly")  # followers
    await cluster.close()


async def test_only_runs_on_the_calendar_days_and_skips_the_others() -> None:
    daily = Job(
        name="daily",
        schedule="0 0 6 * * *",
        executor="shell",
        calendar="days",
        calendar_mode="only",
    )
    cluster = cluster_with(daily, dates=[HOLIDAY])
    await cluster.elect("s1")
    assert cluster.nodes["s1"].index.next_of("daily") == datetime(2026, 3, 2, 6, tzinfo=UTC)
    await run_until(cluster, datetime(2026, 3, 4, 7, tzinfo=UTC), step=3600)
    assert started(cluster) == [datetime(2026, 3, 2, 6, tzinfo=UTC)]
    assert [s[0] for s in spans(cluster)] == ["calendar", "calendar"]  # the 3rd and the 4th
    assert cluster.nodes["s1"].index.next_of("daily") is None  # nothing within five years
    await cluster.close()


async def test_a_calendar_changed_while_scheduled_moves_next() -> None:
    daily = Job(name="daily", schedule="0 0 6 * * *", executor="shell", calendar="days")
    cluster = cluster_with(daily, dates=["2026-03-05"])
    await cluster.elect("s1")
    index = cluster.nodes["s1"].index
    assert index.next_of("daily") == datetime(2026, 3, 2, 6, tzinfo=UTC)

    def changed(event: CalendarChanged) -> None:  # what Leadership does on every server
        index.refresh(cluster.state.jobs_on_calendar(event.name), cluster.clock.now())

    cluster.state.subscribe(changed, CalendarChanged)
    cluster.state.apply(command("set_calendar", calendar={"name": "days", "dates": [HOLIDAY]}))
    assert index.next_of("daily") == datetime(2026, 3, 3, 6, tzinfo=UTC)
    await cluster.close()


def test_a_catch_up_splits_its_instants_by_the_calendar() -> None:
    job = Job(name="j", schedule="@hourly", executor="shell", calendar="days")
    cal = calendar_from_json({"name": "days", "dates": [HOLIDAY]})
    instants = tuple(T0 + timedelta(hours=h) for h in range(0, 40, 6))
    run, skipped = split_by_calendar(job, instants, cal)
    assert [at.isoformat() for at in run] == [
        "2026-03-01T12:00:00+00:00",
        "2026-03-01T18:00:00+00:00",
        "2026-03-03T00:00:00+00:00",
    ]
    assert [(s.first.hour, s.last.hour, s.count) for s in skipped] == [(0, 18, 4)]
    assert parse_job_schedule(job).tzinfo is UTC


async def test_a_leader_elected_after_a_holiday_settles_every_fire_of_it() -> None:
    """s1 records the holiday's first fire, then nobody leads until the next day: s2's
    catch-up settles the rest of the holiday (none of it run) and every instant ends run or
    skipped, once."""
    hourly = Job(name="hourly", schedule="0 0 * * * *", executor="shell", calendar="days")
    cluster = cluster_with(hourly, dates=[HOLIDAY])
    await cluster.elect("s1")
    await run_until(cluster, datetime(2026, 3, 2, 1, 30, tzinfo=UTC))
    await cluster.nodes["s1"].depose()
    await cluster.advance(23 * 3600)  # 2026-03-03 00:30: nobody led through the holiday
    await cluster.elect("s2")
    await cluster.commit_all()
    ran = started(cluster)
    skipped = [at for _, at in cluster.skipped_instants()]
    holiday = [datetime(2026, 3, 2, h, tzinfo=UTC) for h in range(24)]
    assert sorted(skipped) == holiday
    assert not set(ran) & set(holiday)
    assert len(ran) == len(set(ran)) and ran[-1] == datetime(2026, 3, 3, tzinfo=UTC)
    await cluster.close()
