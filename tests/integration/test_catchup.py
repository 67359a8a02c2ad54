"""Fires missed while no leader was running are handled by each job's catch-up policy:
a one-node server stopped for ten minutes of fake time, then started again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.plugins import ExecutionRequest, ExecutorResult
from dkron_lab.registry import PluginRegistry
from dkron_lab.testing import FakeClock, server_config

T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


class Noop:
    async def execute(self, request: ExecutionRequest, emit: object) -> ExecutorResult:
        return ExecutorResult(success=True, output=b"")


def make_node(data_dir: Path, clock: FakeClock, **config: object) -> Node:
    return Node(
        server_config(data_dir, node_name="n1", **config),
        clock=clock,
        registry=PluginRegistry(executors={"noop": Noop()}, entry_points=False),
    )


async def run_for(node: Node, clock: FakeClock, seconds: int) -> None:
    import asyncio

    for _ in range(seconds * 10):
        clock.advance(timedelta(milliseconds=100))
        await asyncio.sleep(0.005)
    await node.outcomes.done.drain()
    await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("policy", "fired", "skipped"),
    [("skip", 0, [("policy", 10)]), ("once", 1, [("superseded", 9)]), ("all", 10, [])],
)
async def test_policies_after_ten_minutes_down(
    tmp_path: Path, policy: str, fired: int, skipped: list[tuple[str, int]]
) -> None:
    clock = FakeClock(T0)
    node = make_node(tmp_path, clock)
    await node.start()
    job = Job(name="minutely", schedule="0 * * * * *", executor="noop", catchup=policy)
    await node.jobs.set_job(job)
    await run_for(node, clock, 31)  # fires at 12:01:00
    await node.stop()
    assert node.state.stats["minutely"].success_count == 1

    clock.advance(timedelta(minutes=10))  # 12:11:01: 12:02 .. 12:11 were missed
    node = make_node(tmp_path, clock)
    await node.start()
    await run_for(node, clock, 2)
    runs, _, total = await node.jobs.list_executions("minutely")
    late = sorted(
        e.scheduled_at
        for e in runs
        if e.scheduled_at and e.scheduled_at > T0 + timedelta(minutes=1)
    )
    assert len(late) == fired
    if fired:
        assert late[-1] == datetime(2026, 3, 1, 12, 11, tzinfo=UTC)
    spans = await node.jobs.skipped("minutely")
    assert [(s["reason"], s["count"]) for s in spans] == skipped
    # the schedule goes on from now, and nothing ran twice
    assert node.index.next_of("minutely") == datetime(2026, 3, 1, 12, 12, tzinfo=UTC)
    instants = [e.scheduled_at for e in runs]
    assert len(instants) == len(set(instants)) == total
    await node.stop()


async def test_server_default_applies_when_the_job_says_nothing(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    node = make_node(tmp_path, clock, catchup="skip")
    await node.start()
    await node.jobs.set_job(Job(name="m", schedule="0 * * * * *", executor="noop"))
    await run_for(node, clock, 31)
    await node.stop()
    clock.advance(timedelta(minutes=3))
    node = make_node(tmp_path, clock, catchup="skip")
    await node.start()
    await run_for(node, clock, 1)
    assert [(s["reason"], s["count"]) for s in await node.jobs.skipped("m")] == [("policy", 3)]
    await node.stop()
