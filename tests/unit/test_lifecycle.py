"""The services' lifecycle: one AsyncExitStack, unwound in reverse; a graceful stop waits for
running executions, a hurried one (or a failed start) cancels them."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from dkron_lab.clock import SystemClock
from dkron_lab.lifecycle import Hurry, hurried, unwind
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.registry import PluginRegistry
from dkron_lab.runner import Runner


def _shell(command: str) -> Job:
    return Job(
        name="lifecycle",
        schedule="@manually",
        executor="shell",
        executor_config={"command": command, "shell": "true"},
    )


@pytest.mark.parametrize("hurry", [False, True])
async def test_the_stack_unwinds_in_reverse_and_says_whether_it_hurries(hurry: bool) -> None:
    seen: list[tuple[str, bool]] = []

    async def exit_callback(exc_type: type[BaseException] | None, *_: object) -> bool:
        seen.append(("exit", hurried(exc_type)))
        return False

    stack = AsyncExitStack()
    stack.callback(lambda: seen.append(("first pushed", False)))
    stack.push_async_exit(exit_callback)
    stack.push_async_callback(asyncio.sleep, 0)
    stack.callback(lambda: seen.append(("last pushed", False)))
    await unwind(stack, hurry=hurry)
    assert seen == [("last pushed", False), ("exit", hurry), ("first pushed", False)]


async def _runner_with(reports: list[Execution]) -> tuple[Runner, AsyncExitStack]:
    runner = Runner(
        node_name="n1", registry=PluginRegistry(), clock=SystemClock(), report=reports.append
    )
    stack = AsyncExitStack()
    await runner.start(stack)
    return runner, stack


async def test_a_graceful_stop_lets_the_running_execution_finish() -> None:
    reports: list[Execution] = []
    runner, stack = await _runner_with(reports)
    task = runner.execute(_shell("sleep 0.3; echo finished"), group=1)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(unwind(stack, hurry=False), timeout=30)
    assert task.done()
    [execution] = reports
    assert execution.success and execution.output.strip() == "finished"


async def test_a_hurried_stop_cancels_the_running_execution() -> None:
    reports: list[Execution] = []
    runner, stack = await _runner_with(reports)
    task = runner.execute(_shell("sleep 60; echo never"), group=1)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(unwind(stack, hurry=True), timeout=30)  # not 60 s
    assert task.done()
    assert all("never" not in execution.output for execution in reports)


async def test_hurry_is_what_a_failed_start_unwinds_with() -> None:
    assert hurried(Hurry) and hurried(RuntimeError) and not hurried(None)
