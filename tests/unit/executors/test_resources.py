"""What a shell run's whole process tree used (executors/resources.py), against real processes:
CPU of waited-for and of orphaned descendants, peak memory, cpu_limit_seconds."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping

import pytest

from dkron_lab.errors import InvalidJob
from dkron_lab.executors.notebook import parse_config as parse_notebook
from dkron_lab.executors.shell import ShellExecutor, parse_config
from dkron_lab.model.execution import ResourceUsage
from dkron_lab.plugins import ExecutionRequest, ExecutorResult

MB = 1024 * 1024
PY = shlex.quote(sys.executable)
# Burns {s} seconds of user-mode CPU (a clock read is a system call: one every 100,000 steps).
BURN = (
    "import os\nt = os.times().user + {s}\n"
    "while os.times().user < t:\n    for _ in range(100_000): pass\n"
)
HOLD = "import time\nb = bytearray({n})\nb[::4096] = b'x' * len(b[::4096])\ntime.sleep({s})\n"


def request(config: Mapping[str, str]) -> ExecutionRequest:
    return ExecutionRequest(job_name="j", execution_id="1-node-a", config=config)


async def run(command: str, **config: str) -> ExecutorResult:
    executor = ShellExecutor(poll_interval=0.1)
    return await executor.execute(
        request({"command": command, "shell": "true", **config}), lambda _: None
    )


def python(code: str) -> str:
    return f"{PY} -c {shlex.quote(code)}"


def usage(result: ExecutorResult) -> ResourceUsage:
    assert result.usage is not None
    return result.usage


async def test_cpu_of_a_grandchild_that_is_waited_for_is_counted() -> None:
    result = await run(f"{python(BURN.format(s=0.3))} & wait")
    assert result.success, result
    used = usage(result)
    assert used.cpu_user_seconds >= 0.2
    assert used.cpu_system_seconds >= 0.0
    assert used.cpu_seconds < 5  # one core, well under the run's wall time plus start-ups


async def test_cpu_of_a_grandchild_left_running_by_its_parent_is_counted_from_samples() -> None:
    # sh ends at once; the grandchild, re-parented to init, burns on and keeps the output open.
    result = await run(f"{python(BURN.format(s=0.6))} & exit 0")
    assert result.success, result
    assert usage(result).cpu_user_seconds >= 0.3  # all but the last interval (0.1 s)


async def test_peak_memory_of_a_grandchild_is_at_least_what_it_held() -> None:
    result = await run(f"{python(HOLD.format(n=50 * MB, s=1.5))} & wait")
    assert result.success, result
    assert (usage(result).max_rss_bytes or 0) >= 50 * MB


async def test_peak_memory_sums_the_processes_living_side_by_side() -> None:
    # Two grandchildren of 40 MB at once: 80 MB together, more than either ever held alone.
    hold = python(HOLD.format(n=40 * MB, s=1.0))
    result = await run(f"{hold} & {hold} & wait")
    assert result.success, result
    assert (usage(result).max_rss_bytes or 0) >= 80 * MB


async def test_a_short_run_is_measured_without_sampling() -> None:
    result = await run("true")
    used = usage(result)
    # The node's own image (which the kernel counts in the command's ru_maxrss) is not taken
    # for the command's peak: that is unknown, or what the first look found.
    assert used.max_rss_bytes is None or used.max_rss_bytes < 20 * MB
    assert 0 <= used.cpu_seconds < 1


async def test_the_peak_of_a_command_living_past_the_first_look_is_its_own() -> None:
    result = await run("sleep 0.05")
    assert (peak := usage(result).max_rss_bytes) is not None
    assert 0 < peak < 20 * MB


async def test_a_run_over_its_cpu_limit_is_killed_with_a_clear_error() -> None:
    result = await run(f"{python('while True: pass')} & wait", cpu_limit_seconds="0.3")
    assert not result.success
    assert result.error.startswith("shell: CPU limit hit: the run used ")
    assert result.error.endswith(
        "CPU seconds, over cpu_limit_seconds=0.3; it was killed with all its processes"
    )
    assert usage(result).cpu_seconds > 0.3


async def test_a_run_under_its_cpu_limit_is_left_alone() -> None:
    result = await run(python(BURN.format(s=0.1)), cpu_limit_seconds="30")
    assert result.success, result


async def test_without_accounting_nothing_is_reported() -> None:
    executor = ShellExecutor(account=False)
    result = await executor.execute(request({"command": "true"}), lambda _: None)
    assert result.success and result.usage is None


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "1e999"])
def test_a_bad_cpu_limit_is_refused_naming_the_key(value: str) -> None:
    with pytest.raises(InvalidJob, match='"cpu_limit_seconds" must be a positive number.*"60"'):
        parse_config({"command": "true", "cpu_limit_seconds": value})
    with pytest.raises(InvalidJob, match='notebook executor: "cpu_limit_seconds"'):
        parse_notebook({"path": "/srv/report.ipynb", "cpu_limit_seconds": value})


def test_a_cpu_limit_may_be_a_fraction() -> None:
    assert parse_config({"command": "true", "cpu_limit_seconds": " 2.5 "}).cpu_limit == 2.5
    notebook = parse_notebook({"path": "/srv/report.ipynb", "cpu_limit_seconds": "600"})
    assert notebook.cpu_limit == 600


async def test_a_process_left_running_by_the_command_is_held_to_the_limit() -> None:
    # sh exits at once; its child keeps the output open and spins: it is found, and killed.
    result = await run(f"{python('while True: pass')} & exit 0", cpu_limit_seconds="0.3")
    assert not result.success
    assert result.error.startswith("shell: CPU limit hit: the run used "), result.error
