"""The single-node figures of issue 2, measured on this machine; prints a table.

    python benchmarks/bench_single_node.py            # full size (about 4 minutes)
    python benchmarks/bench_single_node.py --quick    # a short form for CI (about 40 s)

What it measures (each part starts a fresh one-node server in a temporary data dir):

1. lateness (started_at - scheduled_at) of N jobs spread over a minute, no-op executor;
2. a herd of M jobs due in the same second: how long until the last one started;
3. J job definitions created through the HTTP API by concurrent clients: creates/s, server RSS,
   and GET /v1/jobs?_start=0&_end=50 latency;
4. one client creating jobs one after another through the API: latency per create;
5. shell executions end to end (scheduled -> exited -> in DuckDB), against this machine's
   process-spawn rate measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from _http import RawHTTP

from dkron_lab.agent import tune_interpreter
from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.plugins import ExecutionRequest, ExecutorResult
from dkron_lab.registry import PluginRegistry
from dkron_lab.testing import free_port, server_config


class NoopExecutor:
    """Does nothing, successfully: isolates the scheduler from process spawning."""

    async def execute(self, request: ExecutionRequest, emit: object) -> ExecutorResult:
        return ExecutorResult(success=True, output=b"")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def in_process_node(data_dir: Path) -> AsyncIterator[Node]:
    registry = PluginRegistry(executors={"noop": NoopExecutor()})
    config = server_config(data_dir, node_name="bench")
    node = Node(config, registry=registry)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def create_jobs(node: Node, jobs: list[Job]) -> None:
    for chunk in range(0, len(jobs), 200):
        await asyncio.gather(*(node.jobs.set_job(job) for job in jobs[chunk : chunk + 200]))


def lateness_ms(node: Node, since: datetime) -> list[float]:
    node.history.flush()
    rows = node.history.query(
        "SELECT epoch_us(started_at) - epoch_us(scheduled_at) FROM executions "
        "WHERE scheduled_at >= ?",
        [since],
    )
    return [row[0] / 1000.0 for row in rows]


async def bench_lateness(jobs: int, seconds: int, results: dict[str, str]) -> None:
    """N jobs, job i firing at second i % seconds of every minute; lateness of every fire."""
    with tempfile.TemporaryDirectory() as tmp:
        async with in_process_node(Path(tmp)) as node:
            await create_jobs(
                node,
                [
                    Job(name=f"late-{i}", schedule=f"{i % seconds} * * * * *", executor="noop")
                    for i in range(jobs)
                ],
            )
            start = datetime.now(UTC)
            await asyncio.sleep(62)
            values = lateness_ms(node, start)
    results["lateness: runs measured"] = f"{len(values)} ({jobs} jobs over {seconds} s)"
    results["lateness: median"] = f"{statistics.median(values):.2f} ms"
    results["lateness: p99"] = f"{percentile(values, 0.99):.2f} ms"
    results["lateness: max"] = f"{max(values):.2f} ms"


async def bench_herd(jobs: int, results: dict[str, str]) -> None:
    """M jobs due in the same second: time from the instant to the last start."""
    with tempfile.TemporaryDirectory() as tmp:
        async with in_process_node(Path(tmp)) as node:
            when = (datetime.now(UTC) + timedelta(seconds=max(5, jobs // 500 + 3))).replace(
                microsecond=0
            )
            at = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            await create_jobs(
                node,
                [Job(name=f"herd-{i}", schedule=f"@at {at}", executor="noop") for i in range(jobs)],
            )
            await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()) + 2)
            values = lateness_ms(node, when - timedelta(seconds=2))
    results["herd: runs started"] = f"{len(values)} of {jobs} due in the same second"
    results["herd: last start after the instant"] = f"{max(values):.1f} ms"
    results["herd: median start after the instant"] = f"{statistics.median(values):.1f} ms"


@contextlib.contextmanager
def server_process(data_dir: Path, token: str) -> Iterator[tuple[str, int]]:
    """A ``dkron-lab agent --server`` child whose admin token is ``token``: (its URL, its pid)."""
    http_port, raft_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "dkron_lab.cli", "agent", "--server", "--bootstrap-expect", "1",
        "--node-name", "bench", "--data-dir", str(data_dir), "--log-level", "warn",
        "--http-addr", f"127.0.0.1:{http_port}", "--bind-addr", f"127.0.0.1:{raft_port}",
        "--api-token", token,
    ]  # fmt: skip
    # The defaults are measured, not whatever DKRON_* the caller's shell sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def job_body(i: int, hour: int) -> Mapping[str, object]:
    return {
        "name": f"job-{i:06d}",
        "schedule": f"0 {i % 60} {hour} * * *",
        "executor": "shell",
        "executor_config": {"command": "/bin/true"},
        "metadata": {"team": f"t{i % 10}"},
    }


async def bench_api(count: int, clients: int, results: dict[str, str]) -> None:
    hour = (datetime.now(UTC).hour + 12) % 24  # far from now: nothing fires meanwhile
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp), token) as (url, pid):
        connections = [await RawHTTP.connect(url, token) for _ in range(clients)]
        queue = iter(range(count))

        async def post(http: RawHTTP, i: int) -> None:
            status, text = await http.request(
                "POST", "/v1/jobs", json.dumps(job_body(i, hour)).encode()
            )
            assert status == 201, text

        async def worker(http: RawHTTP) -> None:
            for i in queue:
                await post(http, i)

        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for http in connections))
        elapsed = time.perf_counter() - start
        results["api: creates/s (concurrent)"] = (
            f"{count / elapsed:,.0f} ({count:,} jobs, {clients} connections)"
        )
        results[f"api: server RSS with {count:,} jobs"] = f"{rss_mb(pid):.0f} MB"
        http = connections[0]
        pages = []
        for _ in range(50):
            t = time.perf_counter()
            status, text = await http.request("GET", "/v1/jobs?_start=0&_end=50")
            pages.append((time.perf_counter() - t) * 1000)
            assert status == 200 and len(json.loads(text)) == 50
        results["api: GET /v1/jobs?_start=0&_end=50"] = (
            f"median {statistics.median(pages):.1f} ms, p99 {percentile(pages, 0.99):.1f} ms"
        )
        sequential = []
        for i in range(count, count + 300):
            t = time.perf_counter()
            await post(http, i)
            sequential.append((time.perf_counter() - t) * 1000)
        results["api: one client, one create after another"] = (
            f"median {statistics.median(sequential):.2f} ms, "
            f"p99 {percentile(sequential, 0.99):.2f} ms"
        )
        for connection in connections:
            connection.close()


async def spawn_rate(count: int) -> float:
    """This machine's rate of /bin/true spawns with asyncio, 16 at a time."""
    semaphore = asyncio.Semaphore(16)

    async def one() -> None:
        async with semaphore:
            process = await asyncio.create_subprocess_exec("/bin/true")
            await process.wait()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - start)


async def bench_shell(jobs: int, results: dict[str, str]) -> None:
    raw = await spawn_rate(jobs)
    with tempfile.TemporaryDirectory() as tmp:
        async with in_process_node(Path(tmp)) as node:
            when = (datetime.now(UTC) + timedelta(seconds=max(5, jobs // 500 + 3))).replace(
                microsecond=0
            )
            at = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            await create_jobs(
                node,
                [
                    Job(
                        name=f"sh-{i}",
                        schedule=f"@at {at}",
                        executor="shell",
                        executor_config={"command": "/bin/true"},
                    )
                    for i in range(jobs)
                ],
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if node.history.count() >= jobs and node.state.running == {}:
                    break
            node.history.flush()
            (last,) = node.history.query(
                "SELECT max(epoch_us(finished_at)) FROM executions WHERE job_name LIKE 'sh-%'"
            )[0:1]
    elapsed = last[0] / 1e6 - when.timestamp()
    rate = jobs / elapsed
    results["shell: raw spawn rate (asyncio, 16 at a time)"] = f"{raw:,.0f} /s"
    results["shell: executions end to end"] = (
        f"{rate:,.0f} /s ({jobs} due at once; {raw / rate:.2f}x slower than raw spawns)"
    )


def print_table(results: Mapping[str, str]) -> None:
    width = max(len(key) for key in results)
    print(f"| {'measure':<{width}} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for key, value in results.items():
        print(f"| {key:<{width}} | {value} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short form for CI")
    parser.add_argument("--only", help="comma list of parts: lateness,herd,api,shell")
    args = parser.parse_args()
    parts = set((args.only or "lateness,herd,api,shell").split(","))
    tune_interpreter()  # as `dkron-lab agent` does
    quick = args.quick
    results: dict[str, str] = {}
    print(f"# dkron-lab single-node benchmark ({os.cpu_count()} cores, quick={quick})", flush=True)
    if "lateness" in parts:
        await bench_lateness(1_000 if quick else 10_000, 60, results)
    if "herd" in parts:
        await bench_herd(200 if quick else 1_000, results)
    if "api" in parts:
        await bench_api(2_000 if quick else 100_000, 16, results)
    if "shell" in parts:
        await bench_shell(200 if quick else 1_000, results)
    print_table(results)


if __name__ == "__main__":
    asyncio.run(main())
