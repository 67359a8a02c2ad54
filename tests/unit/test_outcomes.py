"""Outcomes in fake time: runs that can never report are recorded failed, at the clock's
time, never silently (``services_model``: no process)."""

from __future__ import annotations

from datetime import timedelta

from services_model import T0, Harness, settle

from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.state.commands import Claim
from dkron_lab.state.machine import ExecutionFinished

SLOW = Job(name="slow", schedule="@manually", executor="shell")


def finished(harness: Harness) -> list[Execution]:
    found: list[Execution] = []
    harness.state.subscribe(lambda event: found.append(event.execution), ExecutionFinished)
    return found


async def test_a_run_this_node_had_in_flight_when_it_stopped_is_recorded_failed_at_restart():
    """A server killed mid-run restarts: the run it had can never report, so its forbid job
    would wait for ever; it is recorded failed (unknown outcome), started at its trigger."""
    harness = Harness()
    await harness.roster.register()
    harness.add_job(SLOW)
    group = harness.runs.new_group()
    fire = Claim(job="slow", group=group, targets=("s1",))
    assert (await harness.runs.claim([fire]))[0] == [True]
    recorded = finished(harness)
    await harness.advance(3)  # killed, then restarted 3 s later
    await harness.outcomes.fail_orphans()
    (lost,) = recorded
    assert (lost.group, lost.node_name, lost.success) == (group, "s1", False)
    assert "node s1 stopped while this execution was running" in lost.output
    assert "the outcome of this execution is unknown" in lost.output
    assert (lost.started_at, lost.finished_at) == (T0, T0 + timedelta(seconds=3))
    await harness.outcomes.fail_orphans()  # once only: the group has its result now
    await settle()
    assert len(recorded) == 1
    await harness.close()


async def test_a_run_no_node_can_take_is_recorded_failed_for_the_claimer():
    harness = Harness()
    await harness.roster.register()
    job = harness.add_job(Job(name="nowhere", schedule="@every 1s", executor="shell",
                              tags={"role": "ghost"}))  # fmt: skip
    recorded = finished(harness)
    await harness.advance(1.5)
    group = harness.runs.new_group()
    assert harness.runs.targets(job) == ()
    fire = Claim(job="nowhere", group=group, targets=("s1",), untargeted=True)
    assert (await harness.runs.claim([fire]))[0] == [True]
    harness.outcomes.untargeted(job, group, None)
    await settle()
    (failed,) = recorded
    assert not failed.success and failed.node_name == "s1"
    assert "no target nodes found to run job 'nowhere'" in failed.output
    assert failed.started_at == failed.finished_at == T0 + timedelta(seconds=1.5)
    await harness.close()
