"""Write tests/data/datadir-v1: a one-node server's data dir, made with the code on PYTHONPATH."""

import asyncio
import shutil
import sys
from pathlib import Path

from dkron_lab.config import Config
from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.state.machine import command
from dkron_lab.testing import free_port

RAFT_PORT = 47391  # the same address on restart: it names the raft peer
KEY = "q0Hn0vYx3qg1oX6m4V0rjQKq8Qm1b2l3c4d5e6f7g8E="


def shell(name: str, cmd: str, **fields) -> Job:
    config = {"command": cmd, "shell": "true"}
    return Job(name=name, executor="shell", executor_config=config, **fields)


def config(data: Path) -> Config:
    return Config(
        encrypt=KEY,
        server=True,
        bootstrap_expect=1,
        node_name="old1",
        data_dir=data,
        http_addr=f"127.0.0.1:{free_port()}",
        bind_addr=f"127.0.0.1:{RAFT_PORT}",
    )


async def before_snapshot(data: Path) -> None:
    node = Node(config(data), raft_tuning={"compaction_min_entries": 4})
    await node.start()
    try:
        jobs = node.jobs
        await jobs.set_job(shell("parent", "echo parent", schedule="@manually"))
        await jobs.set_job(shell("child", "echo child", schedule="@manually", parent_job="parent"))
        await jobs.set_job(shell("failing", "exit 3", schedule="@manually", retries=1))
        await jobs.set_job(
            shell(
                "hourly",
                "echo hourly",
                schedule="0 0 * * * *",
                concurrency="forbid",
                concurrency_group="etl",
            )
        )
        await jobs.run_job("parent", wait=True)
        await jobs.run_job("failing", wait=True)
        await jobs.toggle_job("hourly")
        await asyncio.sleep(1.0)  # the child's owed run
        for _ in range(6):  # compaction_min_entries=4: a snapshot is taken
            await jobs.run_job("parent", wait=True)
        await asyncio.sleep(1.5)
    finally:
        await node.stop()


async def after_snapshot(data: Path) -> None:
    node = Node(config(data))  # default compaction: what follows stays in the journal
    await node.start()
    try:
        jobs = node.jobs
        await jobs.set_job(shell("late", "echo late", schedule="@every 1h"))
        await jobs.run_job("late", wait=True)
        skip = command(
            "skip",
            job="late",
            spans=[
                {
                    "reason": "catchup",
                    "first": "2026-12-01T10:00:00Z",
                    "last": "2026-12-01T12:00:00Z",
                    "count": 3,
                }
            ],
        )
        await node._submit(skip)
        await node._submit(command("set_limits", overall=4, groups={"etl": 1}))
        await jobs.set_paused(True)
        await asyncio.sleep(0.5)
    finally:
        await node.stop()


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    asyncio.run(before_snapshot(out))
    asyncio.run(after_snapshot(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
