"""Follow-ups in fake time: a retry starts once its backoff has passed on the clock, not
before; a claim that failed is made again a second later; a new leader takes over the
retries its predecessor left (``services_model``: no process)."""

from __future__ import annotations

from datetime import datetime, timedelta

from services_model import T0, Harness, settle

from dkron_lab import codec
from dkron_lab.errors import NotLeaderError
from dkron_lab.followups import AGAIN_AFTER
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.runs import Run
from dkron_lab.state.commands import Claim
from dkron_lab.state.machine import command

RUN = "/internal/v1/run"


async def failed_on_a1(job: Job, *, ran: timedelta, leader: bool = True) -> tuple[Harness, int]:
    """``job`` ran on a1 from T0 for ``ran`` and failed; the clock is at its end."""
    harness = Harness(leader=leader)
    await harness.roster.register()
    harness.register("a1")
    harness.add_job(job)
    group = harness.runs.new_group()
    fire = Claim(job=job.name, group=group, targets=("a1",))
    assert (await harness.runs.claim([fire]))[0] == [True]
    harness.runs.start([Run(job, group, ["a1"])])
    await settle()
    await harness.advance(ran.total_seconds())
    failure = Execution(
        id=f"{group}-a1",
        job_name=job.name,
        node_name="a1",
        group=group,
        started_at=T0,
        finished_at=harness.clock.now(),
        output="boom",
    )
    harness.state.apply(command("done", executions=[codec.execution_to_json(failure)]))
    await settle()
    return harness, group


def attempts(harness: Harness) -> list[tuple[datetime, int]]:
    """When each run was sent to a1, and which attempt."""
    return [
        (post.at, run["attempt"])
        for post in harness.peers.to("a1", RUN)
        for run in post.payload["runs"]
    ]


async def until(harness: Harness, at: datetime) -> None:
    """Advance to just before ``at`` (a1 beating, so it is alive for the retry)."""
    harness.liveness.beat("a1", [])
    await harness.advance((at - harness.clock.now()).total_seconds() - 0.1)
    harness.liveness.beat("a1", [])


async def test_a_retry_waits_its_retry_interval_on_the_clock():
    job = Job(name="flaky", schedule="@manually", executor="shell", retries=2, retry_interval="10s")
    harness, _ = await failed_on_a1(job, ran=timedelta(seconds=2))
    due = T0 + timedelta(seconds=12)
    await until(harness, due)
    assert attempts(harness) == [(T0, 1)]
    await harness.advance(0.2)
    assert attempts(harness) == [(T0, 1), (due, 2)]
    await harness.close()


async def test_a_retry_waits_dkrons_backoff_on_the_clock():
    """No ``retry_interval``: floor(log2(2 s / 500 ms) + 2) x 500 ms = 2 s after the failure."""
    job = Job(name="flaky", schedule="@manually", executor="shell", retries=1)
    harness, _ = await failed_on_a1(job, ran=timedelta(seconds=2))
    due = T0 + timedelta(seconds=4)
    await until(harness, due)
    assert attempts(harness) == [(T0, 1)]
    await harness.advance(0.2)
    assert attempts(harness) == [(T0, 1), (due, 2)]
    await harness.close()


async def test_a_retry_whose_claim_failed_is_claimed_again_a_second_later():
    job = Job(name="flaky", schedule="@manually", executor="shell", retries=1, retry_interval="1s")
    harness, _ = await failed_on_a1(job, ran=timedelta(seconds=1))
    harness.refuse["retry"] = NotLeaderError("an election")
    due = T0 + timedelta(seconds=2)
    await until(harness, due)
    await harness.advance(0.2)
    assert attempts(harness) == [(T0, 1)]  # refused at T0+2s
    await until(harness, due + AGAIN_AFTER)
    assert attempts(harness) == [(T0, 1)]
    await harness.advance(0.2)
    assert attempts(harness) == [(T0, 1), (due + AGAIN_AFTER, 2)]
    await harness.close()


async def test_a_new_leader_takes_over_the_retry_its_predecessor_left():
    job = Job(name="flaky", schedule="@manually", executor="shell", retries=1, retry_interval="10s")
    harness, _ = await failed_on_a1(job, ran=timedelta(seconds=1), leader=False)
    await harness.advance(3)
    harness.leader = True  # elected at T0+4s: the retry is due at T0+11s
    harness.followups.resume()
    due = T0 + timedelta(seconds=11)
    await until(harness, due)
    assert attempts(harness) == [(T0, 1)]
    await harness.advance(0.2)
    assert attempts(harness) == [(T0, 1), (due, 2)]
    await harness.close()
