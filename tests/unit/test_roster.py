"""The roster in fake time: heartbeats each second of the clock, and the leases the leader
expires (``services_model``: the real services of s1 around one ``JobState``, no process)."""

from __future__ import annotations

from datetime import timedelta

from services_model import T0, Harness, settle

from dkron_lab import codec
from dkron_lab.membership import HEARTBEAT_TTL, LOST_DISPATCH
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.runs import Run
from dkron_lab.state.commands import Claim
from dkron_lab.state.machine import ExecutionFinished

HEARTBEAT = "/internal/v1/heartbeat"
LONG = Job(name="long", schedule="@manually", executor="shell")


async def started_cluster(*servers: str) -> Harness:
    harness = Harness()
    await harness.roster.register()
    for name in servers:
        harness.register(name, server=True)
    harness.register("a1")
    return harness


async def test_heartbeats_go_to_every_other_server_once_a_second_of_the_clock():
    harness = await started_cluster("s2", "s3")
    harness.spawn(harness.roster.heartbeats())
    await settle()
    await harness.advance(2.5)
    for server in ("s2", "s3"):
        sent = [post.at - T0 for post in harness.peers.to(server, HEARTBEAT)]
        assert sent == [timedelta(seconds=s) for s in range(3)], server
    assert harness.peers.to("a1", HEARTBEAT) == []  # agents do not hear heartbeats
    assert harness.peers.to("s1", HEARTBEAT) == []
    await harness.close()


async def test_a_hung_server_does_not_delay_the_beats_to_the_others():
    """A server that hangs (SIGSTOP: its socket accepts, never answers) gets one beat in
    flight; every other server still hears one each second, so none sees this node failed."""
    harness = await started_cluster("s2", "s3")
    harness.peers.hanging.add("s2.test:8080")
    harness.spawn(harness.roster.heartbeats())
    await settle()
    await harness.advance(HEARTBEAT_TTL + 4)
    assert len(harness.peers.to("s3", HEARTBEAT)) == HEARTBEAT_TTL + 4 + 1
    assert len(harness.peers.to("s2", HEARTBEAT)) == 1
    await harness.close()


# -- leases ------------------------------------------------------------------------------------


async def dispatch_to_a1(harness: Harness) -> int:
    """Claim a run of ``long`` on a1 and send it there, at the clock's now."""
    job = harness.add_job(LONG)
    group = harness.runs.new_group()
    fire = Claim(job=job.name, group=group, targets=("a1",))
    won, _ = await harness.runs.claim([fire])
    assert won == [True]
    harness.runs.start([Run(job, group, ["a1"])])
    await settle()
    assert harness.peers.to("a1", "/internal/v1/run")
    return group


def finished(harness: Harness) -> list[Execution]:
    found: list[Execution] = []
    harness.state.subscribe(lambda event: found.append(event.execution), ExecutionFinished)
    return found


def running(group: int) -> list[dict[str, object]]:
    execution = Execution(
        id=f"{group}-a1", job_name="long", node_name="a1", group=group, started_at=T0
    )
    return [codec.execution_to_json(execution)]


async def beats(harness: Harness, seconds: int, busy: list[dict[str, object]]) -> None:
    """a1 beats now and at each of the next ``seconds`` seconds."""
    for _ in range(seconds):
        harness.liveness.beat("a1", busy)
        await harness.advance(1)
    harness.liveness.beat("a1", busy)


async def test_a_run_on_a_node_that_stops_beating_is_recorded_failed_when_its_lease_expires():
    harness = await started_cluster()
    recorded = finished(harness)
    harness.spawn(harness.roster.leases())
    group = await dispatch_to_a1(harness)
    await beats(harness, 3, running(group))  # then a1 dies: its last beat at T0+3s

    await harness.advance(HEARTBEAT_TTL + 0.9)  # T0+7.9s: alive until T0+7s, seen at T0+8s
    assert recorded == []
    await harness.advance(0.2)
    (lost,) = recorded
    assert (lost.group, lost.node_name, lost.success) == (group, "a1", False)
    assert "node a1 stopped answering heartbeats" in lost.output
    assert lost.finished_at == T0 + timedelta(seconds=8)
    await harness.advance(5)
    assert len(recorded) == 1  # recorded once
    await harness.close()


async def test_a_live_node_that_never_shows_the_run_loses_it_after_the_dispatch_window():
    harness = await started_cluster()
    recorded = finished(harness)
    harness.spawn(harness.roster.leases())
    await dispatch_to_a1(harness)
    await beats(harness, int(LOST_DISPATCH), busy=[])  # alive, never running it
    assert recorded == []
    await beats(harness, 1, busy=[])
    (lost,) = recorded
    assert "never started this execution (lost dispatch)" in lost.output
    await harness.close()


async def test_a_run_its_live_node_shows_running_keeps_its_lease():
    harness = await started_cluster()
    recorded = finished(harness)
    harness.spawn(harness.roster.leases())
    group = await dispatch_to_a1(harness)
    await beats(harness, int(LOST_DISPATCH) + 10, running(group))
    assert recorded == []
    await harness.close()


async def test_only_the_leader_expires_leases():
    harness = await started_cluster()
    recorded = finished(harness)
    harness.leader = False
    harness.spawn(harness.roster.leases())
    await dispatch_to_a1(harness)
    await harness.advance(LOST_DISPATCH + HEARTBEAT_TTL)
    assert recorded == []
    harness.leader = True
    await harness.advance(1)
    assert len(recorded) == 1
    await harness.close()
