"""Benchmark what resource accounting (issue 13) adds to a shell run.

    .venv/bin/python benchmarks/bench_resources.py              # 400 runs of `true` per mode
    .venv/bin/python benchmarks/bench_resources.py --runs 1000 --long 5

Runs the shell executor in this process, as a node does, with accounting on (the default) and
off (``ShellExecutor(account=False)``, which only the benchmark uses), alternating the two run
by run (which one goes first swaps every round) so that load on a shared machine hits both
alike:

- a trivial run, ``true``: the wall time from ``execute`` to its result, median and p90; the
  node's own CPU per run (``time.process_time``); and that plus the command's (fork, exec,
  ``true``: ``RUSAGE_CHILDREN``), the whole CPU cost of the run;
- ``--long`` runs of ``sleep 1.2`` (looked at 10, 20 ... 320 ms, sampled at 0.5 and 1.0 s and
  once more at the end): the node's CPU per run, what accounting costs a job that lives
  longer than one interval.

Target: accounting adds at most 5 % to a trivial run's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from collections.abc import Callable

from dkron_lab.executors.shell import ShellExecutor
from dkron_lab.plugins import ExecutionRequest


def request(command: str) -> ExecutionRequest:
    return ExecutionRequest(job_name="bench", execution_id="1-bench", config={"command": command})


def ignore(_chunk: bytes) -> None:
    pass


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def one(executor: ShellExecutor, command: str) -> tuple[float, float, float]:
    """Wall seconds, this process's CPU seconds and the command's CPU seconds of one run."""
    cpu, child, wall = time.process_time(), children_cpu(), time.perf_counter()
    result = await executor.execute(request(command), ignore)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not result.success:
        raise SystemExit(f"{command!r} failed: {result.error}")
    return wall, cpu, children_cpu() - child


async def measure(command: str, runs: int) -> dict[bool, list[tuple[float, float, float]]]:
    executors = {True: ShellExecutor(), False: ShellExecutor(account=False)}
    samples: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for mode in executors:  # warm-up: imports, first fork
        await one(executors[mode], command)
    for i in range(runs):
        for mode in (True, False) if i % 2 else (False, True):
            samples[mode].append(await one(executors[mode], command))
    return samples


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def row(label: str, on: list[float], off: list[float], stat: Callable[[list[float]], float]) -> str:
    a, b = stat(on), stat(off)
    return f"| {label} | {b * 1000:.3f} ms | {a * 1000:.3f} ms | {(a - b) / b * 100:+.1f} % |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="trivial runs per mode")
    parser.add_argument("--long", type=int, default=5, help="`sleep 1.2` runs per mode")
    args = parser.parse_args()

    short = await measure("true", args.runs)
    walls = {mode: [w for w, _, _ in short[mode]] for mode in short}
    cpus = {mode: [c for _, c, _ in short[mode]] for mode in short}
    total = {mode: [c + child for _, c, child in short[mode]] for mode in short}
    print(f"`true`, {args.runs} runs per mode; `sleep 1.2`, {args.long} runs per mode\n")
    print("| figure | accounting off | accounting on | added |")
    print("|---|---|---|---|")
    print(row("`true`: wall, median", walls[True], walls[False], statistics.median))
    print(row("`true`: wall, p90", walls[True], walls[False], p90))
    print(row("`true`: node CPU, mean", cpus[True], cpus[False], statistics.mean))
    print(row("`true`: node + command CPU, mean", total[True], total[False], statistics.mean))
    if args.long:
        long = await measure("sleep 1.2", args.long)
        spent = {mode: [c for _, c, _ in long[mode]] for mode in long}
        on, off = statistics.mean(spent[True]), statistics.mean(spent[False])
        print(
            f"| `sleep 1.2`: node CPU, mean | {off * 1000:.3f} ms | {on * 1000:.3f} ms |"
            f" +{(on - off) * 1000:.1f} ms: 6 looks, 3 samples |"
        )


if __name__ == "__main__":
    asyncio.run(main())
