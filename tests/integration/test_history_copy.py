"""A server added late to a running cluster gets the older history from another server.

The first server compacts its Raft log after every few entries, so the joining server receives
a snapshot (not the entries with the executions) and must copy the history it lacks."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.httpserver import HTTPServer

from dkron_lab.api.app import serve
from dkron_lab.config import Config
from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.state.machine import Event, StateRestored
from dkron_lab.testing import free_port
from tests.harness import new_cluster_key

# pysyncobj 0.3.17 never closed the snapshot file it sends; the adapter closes it now, and
# pytest's filterwarnings=error turns a leaked file (ResourceWarning) into a failure here.
pytestmark = pytest.mark.slow

RUNS = 6
EXECUTIONS = "SELECT job_name, id, started_at, success FROM executions"

KEY = new_cluster_key()  # every node of a cluster holds it


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def rows(node: Node) -> list[tuple[Any, ...]]:
    node.history.flush()
    return sorted(node.history.query(EXECUTIONS))


def shell(name: str, command: str) -> Job:
    config = {"command": command, "shell": "true"}
    return Job(name=name, schedule="@manually", executor="shell", executor_config=config)


async def test_a_late_server_copies_the_history_it_never_applied(tmp_path: Path) -> None:
    first_raft, second_raft = free_port(), free_port()
    first = Node(
        Config(
            encrypt=KEY,
            server=True, bootstrap_expect=1, node_name="s1", data_dir=tmp_path / "s1",
            http_addr=f"127.0.0.1:{free_port()}", bind_addr=f"127.0.0.1:{first_raft}",
        ),
        raft_tuning={"compaction_min_entries": 2},
    )  # fmt: skip
    second_config = Config(
        encrypt=KEY,
        server=True, bootstrap_expect=2, node_name="s2", data_dir=tmp_path / "s2",
        http_addr=f"127.0.0.1:{free_port()}", bind_addr=f"127.0.0.1:{second_raft}",
        join=(f"127.0.0.1:{first_raft}",),
    )  # fmt: skip
    second = Node(second_config)
    restored: list[Event] = []
    second.state.subscribe(lambda e: restored.append(e) if isinstance(e, StateRestored) else None)
    nodes, https = [first], [await serve_after(first)]
    try:
        await first.jobs.set_job(shell("work", "echo hi"))
        for _ in range(RUNS):
            await first.jobs.run_job("work", wait=True)
        expected = rows(first)
        assert len(expected) == RUNS
        joining = asyncio.ensure_future(second.start())  # it knocks, the leader adds it
        nodes.append(second)
        await asyncio.wait_for(joining, 30)
        https.append(await serve(second))
        assert restored, "the joining server got the log, not a snapshot: the test proves nothing"
        assert await eventually(lambda: rows(second) == expected), rows(second)

        # A new run (on both servers now) comes through the log; nothing doubles.
        assert await eventually(lambda: first.liveness.is_alive("s2"))
        await first.jobs.run_job("work", wait=True)
        assert await eventually(lambda: len(rows(second)) == RUNS + 2 == len(rows(first)))
        assert rows(second) == rows(first)

        # The second server restarts and replays its own log: still no duplicate.
        https.pop().stop()
        await second.stop(graceful=False)
        nodes.remove(second)
        second = Node(second_config)
        await second.start()
        nodes.append(second)
        await asyncio.sleep(0.5)  # let any copy it (wrongly) starts run
        assert rows(second) == rows(first)
        assert second.history.count() == len(set(rows(second))) == RUNS + 2
    finally:
        for http in https:
            http.stop()
        for node in reversed(nodes):
            await node.stop(graceful=False)
        gc.collect()


async def serve_after(node: Node) -> HTTPServer:
    await node.start()
    return await serve(node)
