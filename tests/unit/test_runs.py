"""Runs in fake time: group ids and send times come from the clock (``services_model``)."""

from __future__ import annotations

from datetime import timedelta

from services_model import T0, Harness, settle

from dkron_lab.model.job import Job
from dkron_lab.runs import Run


async def test_group_ids_are_the_clocks_nanoseconds_and_unique_at_one_instant():
    harness = Harness()
    first = harness.runs.new_group()
    assert first == int(T0.timestamp()) * 1_000_000_000
    assert harness.runs.new_group() == first + 1  # the same instant
    harness.clock.advance(timedelta(microseconds=5))
    assert harness.runs.new_group() == first + 5_000
    await harness.close()


async def test_a_run_is_sent_at_the_clocks_time_which_its_lease_counts_from():
    harness = Harness()
    await harness.roster.register()
    harness.register("a1")
    job = harness.add_job(Job(name="j", schedule="@manually", executor="shell"))
    group = harness.runs.new_group()
    assert harness.runs.sent_at(group, "a1") == T0.timestamp()  # never sent: its group's time
    await harness.advance(2)
    harness.runs.start([Run(job, group, ["a1"])])
    await settle()
    assert harness.runs.sent_at(group, "a1") == (T0 + timedelta(seconds=2)).timestamp()
    (post,) = harness.peers.to("a1", "/internal/v1/run")
    assert post.at == T0 + timedelta(seconds=2)
    await harness.close()
