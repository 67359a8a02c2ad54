"""The watch in fake time (``services_model``: no process): a job turns late, missed, overdue or
failing when the facts say so, the change is recorded once in the replicated state and
announced once, and the return to ``ok`` is announced once."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest
from services_model import T0, Harness, settle

from dkron_lab import codec
from dkron_lab.health import Watch
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.state.commands import Claim, Done, Skip

NIGHTLY = Job(name="nightly", schedule="@every 1m", executor="shell", max_lateness="2s")


@dataclass
class Announcements:
    """What the watch asked the notifier to announce: (job, previous, health)."""

    said: list[tuple[str, str, str]] = field(default_factory=list)

    def health_changed(
        self, job: Job, *, health: str, previous: str, since: datetime, reason: str
    ) -> None:
        self.said.append((job.name, previous, health))


@pytest.fixture
async def harness():
    harness = Harness()
    yield harness
    await harness.close()


def watch_on(harness: Harness, announcements: Announcements, missed=None) -> Watch:
    watch = Watch(
        harness.shared,
        notifier=announcements,  # type: ignore[arg-type]
        busy=harness.runner.busy,
        missed_run=missed or (lambda job, instant, why: None),
    )
    watch.leadership_changed()
    return watch


async def claim(harness: Harness, job: str, at: datetime) -> int:
    group = harness.runs.new_group()
    fire = Claim(job=job, group=group, targets=("s1",), scheduled_at=codec.format_time(at))
    assert (await harness.runs.claim([fire]))[0] == [True]
    return group


def ran(job: str, group: int, at: datetime, started: datetime, *, success: bool = True) -> Done:
    execution = Execution(
        id=f"{group}-s1",
        job_name=job,
        node_name="s1",
        group=group,
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        success=success,
        scheduled_at=at,
    )
    return Done(executions=(codec.execution_to_json(execution),))


async def run_watch(harness: Harness, watch: Watch, seconds: float) -> None:
    loop = [watch._deadline_loop(), watch._sweep_loop()]
    for work in loop:
        harness.spawn(work)
    await harness.advance(seconds)


async def test_a_fire_not_started_within_its_grace_makes_the_job_late_once(harness):
    announced = Announcements()
    harness.add_job(NIGHTLY)
    watch = watch_on(harness, announced)
    at = T0 + timedelta(seconds=1)
    group = await claim(harness, "nightly", at)
    await run_watch(harness, watch, 2.9)
    assert harness.state.health_of("nightly")[0] == "ok"  # within its grace
    await harness.advance(0.3)
    health, _, reason = harness.state.health_of("nightly")
    assert health == "late" and "has not started within 2s (max_lateness)" in reason
    await harness.advance(5)
    assert announced.said == [("nightly", "ok", "late")]
    # It finally ran (late): still late, nothing more said.
    await harness.submit(ran("nightly", group, at, at + timedelta(seconds=4)))
    await settle()
    assert harness.state.health_of("nightly")[0] == "late"
    # The next fire starts in time: ok again, said once.
    later = at + timedelta(minutes=1)
    group = await claim(harness, "nightly", later)
    await harness.submit(ran("nightly", group, later, later + timedelta(milliseconds=50)))
    await harness.advance(3)
    assert harness.state.health_of("nightly")[0] == "ok"
    assert announced.said == [("nightly", "ok", "late"), ("nightly", "late", "ok")]


async def test_a_fire_started_in_time_keeps_the_job_ok(harness):
    announced = Announcements()
    harness.add_job(NIGHTLY)
    watch = watch_on(harness, announced)
    at = T0 + timedelta(seconds=1)
    group = await claim(harness, "nightly", at)
    harness.runner.running.append(
        Execution(id="r", job_name="nightly", node_name="s1", group=group, started_at=at,
                  scheduled_at=at)
    )  # fmt: skip
    await run_watch(harness, watch, 4)
    assert harness.state.health_of("nightly")[0] == "ok" and announced.said == []


async def test_fires_the_catch_up_skipped_are_missed_and_said_once_across_a_new_leader(harness):
    announced = Announcements()
    harness.add_job(NIGHTLY)
    watch_on(harness, announced)
    span = {"reason": "policy", "first": "2026-03-01T11:00:00Z", "last": "2026-03-01T11:59:00Z",
            "count": 60}  # fmt: skip
    await harness.submit(Skip(job="nightly", spans=(span,)))
    await harness.advance(0.5)
    health, _, reason = harness.state.health_of("nightly")
    assert health == "missed" and "60 fire(s) up to 2026-03-01T11:59:00Z not run" in reason
    # A new leader (another watch on the same replicated state) finds the same: says nothing.
    again = Announcements()
    watch_on(harness, again)
    await harness.submit(Skip(job="nightly", spans=({**span, "last": "2026-03-01T11:59:30Z"},)))
    await harness.advance(0.5)
    assert announced.said == [("nightly", "ok", "missed")] and again.said == []


async def test_a_superseded_or_calendar_skip_is_not_a_miss(harness):
    announced = Announcements()
    harness.add_job(NIGHTLY)
    watch_on(harness, announced)
    for reason in ("superseded", "calendar", "expired"):
        span = {"reason": reason, "first": "2026-03-01T11:00:00Z",
                "last": f"2026-03-01T11:0{len(reason) % 10}:00Z", "count": 1}  # fmt: skip
        await harness.submit(Skip(job="nightly", spans=(span,)))
    await harness.advance(0.5)
    assert harness.state.health_of("nightly")[0] == "ok" and announced.said == []


async def test_a_run_past_max_duration_is_overdue_until_it_ends(harness):
    announced = Announcements()
    harness.add_job(replace(NIGHTLY, name="etl", max_duration="5s"))
    watch = watch_on(harness, announced)
    running = Execution(id="r", job_name="etl", node_name="s1", group=1, started_at=T0)
    harness.runner.running.append(running)
    await run_watch(harness, watch, 4.5)
    assert harness.state.health_of("etl")[0] == "ok"
    await harness.advance(2)
    health, _, reason = harness.state.health_of("etl")
    assert health == "overdue" and "has gone on for" in reason and "max_duration 5s" in reason
    harness.runner.running.clear()
    await harness.advance(2)
    assert harness.state.health_of("etl")[0] == "ok"
    assert announced.said == [("etl", "ok", "overdue"), ("etl", "overdue", "ok")]


async def test_a_failed_run_makes_the_job_failing_and_disabling_it_pauses(harness):
    announced = Announcements()
    harness.add_job(NIGHTLY)
    watch_on(harness, announced)
    at = T0 + timedelta(seconds=1)
    group = await claim(harness, "nightly", at)
    await harness.submit(ran("nightly", group, at, at, success=False))
    await harness.advance(0.5)
    health, _, reason = harness.state.health_of("nightly")
    assert health == "failing" and "its latest run failed" in reason
    harness.add_job(replace(NIGHTLY, disabled=True))
    await harness.advance(0.5)
    assert harness.state.health_of("nightly")[0] == "paused"
    assert announced.said == [("nightly", "ok", "failing"), ("nightly", "failing", "paused")]


async def test_a_follower_records_nothing(harness):
    announced = Announcements()
    harness.leader = False
    harness.add_job(NIGHTLY)
    watch = watch_on(harness, announced)
    await claim(harness, "nightly", T0)
    await run_watch(harness, watch, 4)
    assert harness.state.health_of("nightly")[0] == "ok" and announced.said == []
