"""A server and an agent in one process (each with its own Raft, HTTP and DuckDB): the agent
registers, gets the runs its tags match, shows its live output through the server, and its
runs are failed by the leader's lease when it goes silent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dkron_lab.api.app import serve
from dkron_lab.config import Config
from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.testing import free_port
from tests.harness import new_cluster_key

pytestmark = pytest.mark.slow

KEY = new_cluster_key()  # every node of a cluster holds it


async def eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    raft = free_port()
    server = Node(
        Config(
            encrypt=KEY,
            server=True, bootstrap_expect=1, node_name="s1", data_dir=tmp_path / "s1",
            http_addr=f"127.0.0.1:{free_port()}", bind_addr=f"127.0.0.1:{raft}",
        )
    )  # fmt: skip
    agent = Node(
        Config(
            encrypt=KEY,
            node_name="a1", data_dir=tmp_path / "a1", http_addr=f"127.0.0.1:{free_port()}",
            join=(f"127.0.0.1:{raft}",), tags={"role": "worker"},
        )
    )  # fmt: skip
    await server.start()
    servers = [await serve(server)]
    await agent.start()
    servers.append(await serve(agent))
    await eventually(lambda: server.liveness.is_alive("a1"))
    try:
        yield server, agent
    finally:
        for http in servers:
            http.stop()
        for node in (agent, server):
            if node._ready:
                await node.stop(graceful=False)


def shell(name: str, command: str, **fields: object) -> Job:
    config = {"command": command, "shell": "true"}
    return Job(name=name, schedule="@manually", executor="shell", executor_config=config, **fields)  # type: ignore[arg-type]


async def test_tags_choose_the_agent_and_its_output_is_live(pair: tuple[Node, Node]) -> None:
    server, agent = pair
    members = {m["Name"]: m["statusText"] for m in server.jobs.members()}
    assert members == {"s1": "alive", "a1": "alive"}
    await server.jobs.set_job(
        shell("work", "echo step1; sleep 1.5; echo step2", tags={"role": "worker"})
    )
    assert await eventually(lambda: "work" in agent.state.jobs)  # the agent holds a replica
    await server.jobs.run_job("work")
    busy = await eventually(lambda: [e for e in server.jobs.busy() if "step1" in e.output], 5)
    assert busy and busy[0].node_name == "a1" and busy[0].finished_at is None
    await eventually(lambda: server.state.stats["work"].success_count == 1)
    server.history.flush()
    runs, _, _ = await server.jobs.list_executions("work")
    assert [(e.node_name, e.success, e.output) for e in runs] == [("a1", True, "step1\nstep2\n")]


async def test_no_tags_means_every_node(pair: tuple[Node, Node]) -> None:
    server, _ = pair
    await server.jobs.set_job(shell("all", "echo hi"))
    await server.jobs.run_job("all", wait=True)
    runs, _, _ = await server.jobs.list_executions("all")
    assert sorted(e.node_name for e in runs) == ["a1", "s1"]


async def test_a_silent_agent_has_its_runs_failed_and_a_leaving_one_shows_left(
    pair: tuple[Node, Node],
) -> None:
    server, agent = pair
    job = shell("long", "sleep 30", tags={"role": "worker"}, concurrency="forbid")
    await server.jobs.set_job(job)
    await server.jobs.run_job("long")
    await eventually(lambda: agent.runner.running == 1)
    for task in list(agent._loops):  # the agent goes silent (as if its machine froze)
        task.cancel()
    failed = await eventually(lambda: server.state.stats["long"].error_count == 1, 15)
    assert failed, "the lease did not fail the run of a silent agent"
    assert {m["Name"]: m["statusText"] for m in server.jobs.members()}["a1"] == "failed"
    assert server.jobs.info()["serf"] | {"encrypted": "-"} == {
        "members": "2", "failed": "1", "left": "0", "encrypted": "-"
    }  # fmt: skip
    server.history.flush()
    runs, _, _ = await server.jobs.list_executions("long")
    assert "stopped answering heartbeats" in runs[0].output
    await agent.stop(graceful=False)
    agent._ready = False


async def test_graceful_stop_marks_the_node_left(pair: tuple[Node, Node]) -> None:
    server, agent = pair
    await agent.stop(graceful=True)
    agent._ready = False
    status = await eventually(
        lambda: {m["Name"]: m["statusText"] for m in server.jobs.members()}["a1"] == "left"
    )
    assert status
    assert (server.jobs.info()["serf"]["failed"], server.jobs.info()["serf"]["left"]) == ("0", "1")


async def test_a_server_is_added_to_a_running_cluster(tmp_path: Path) -> None:
    """A one-server cluster grows to two: the new server starts, knocks, is added by the
    leader, catches up."""
    first_raft, second_raft = free_port(), free_port()
    first = Node(
        Config(
            encrypt=KEY,
            server=True, bootstrap_expect=1, node_name="s1", data_dir=tmp_path / "s1",
            http_addr=f"127.0.0.1:{free_port()}", bind_addr=f"127.0.0.1:{first_raft}",
        )
    )  # fmt: skip
    second = Node(
        Config(
            encrypt=KEY,
            server=True, bootstrap_expect=2, node_name="s2", data_dir=tmp_path / "s2",
            http_addr=f"127.0.0.1:{free_port()}", bind_addr=f"127.0.0.1:{second_raft}",
            join=(f"127.0.0.1:{first_raft}",),
        )
    )  # fmt: skip
    await first.start()
    https = [await serve(first)]
    try:
        await first.jobs.set_job(shell("before", "true"))
        joining = asyncio.ensure_future(second.start())
        await asyncio.sleep(0.5)
        assert not joining.done()  # it waits to be added, then asks (raft.KNOCK_AFTER)
        await asyncio.wait_for(joining, 30)
        https.append(await serve(second))
        assert "before" in second.state.jobs
        assert sorted(p["address"] for p in first.jobs.raft_peers()) == sorted(
            [f"127.0.0.1:{first_raft}", f"127.0.0.1:{second_raft}"]
        )
        members = await eventually(
            lambda: {m["Name"] for m in first.jobs.members()} == {"s1", "s2"}
        )
        assert members
        await first.jobs.set_job(shell("after", "true"))  # commits with both voters
        assert await eventually(lambda: "after" in second.state.jobs)
    finally:
        for http in https:
            http.stop()
        for node in (second, first):
            if node._ready:
                await node.stop(graceful=False)
