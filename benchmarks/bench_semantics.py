"""The job-semantics figures of issue 4 on this machine: what ``forbid`` and the global
concurrency limit cost in scheduling lateness, and how fast a 10-step job chain runs.

    python benchmarks/bench_semantics.py            # full size (about 5 minutes)
    python benchmarks/bench_semantics.py --quick    # a short form for CI (under a minute)

1. **lateness**: one real server (``dkron-lab agent`` through ``tests.harness.Cluster``)
   gets N jobs ``@every`` P with a no-op executor, job i anchored (``starts_at``) at i/N of the
   period, so the fires spread evenly over it. The jobs are created once and the server is
   restarted on the same data dir with each configuration's flags: no limit;
   ``--concurrency-limit 50`` (above what runs at once: the bookkeeping alone);
   ``--concurrency-limit 10`` (below it: runs wait in the queue); then every job rewritten with
   ``concurrency: forbid``. During each window ``/v1/busy`` is read every 0.25 s (runs waiting
   under the limit are listed there as ``queued``); after the first, one ``GET /metrics`` is
   timed. The server is then stopped and its DuckDB history read: lateness
   (``started_at - scheduled_at``) of every run scheduled in the window, and runs that started
   before their instant.
2. **chain**: a parent and 10 dependent jobs in a line (``parent_job``), run by hand
   (``POST /v1/jobs/<parent>/run``) R times, once with shell ``true`` and once with the no-op
   executor; from each job's ``GET /v1/jobs/<job>/executions``, the gap between a step's
   ``started_at`` and the ``finished_at`` of the step before it.

The no-op executor is installed as a third-party plugin (see ``bench_cluster.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import RawHTTP
from bench_cluster import CLK_TCK, cpu_ticks, install_noop_plugin, stop_gracefully
from bench_single_node import percentile, print_table

from tests.harness import Cluster

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class Setup:
    """One configuration of the lateness part: server flags and fields added to every job."""

    label: str
    flags: Sequence[str] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    scrape: bool = False  # time one GET /metrics after the window


SETUPS = (
    Setup(label="no limit", scrape=True),
    Setup(label="--concurrency-limit 50", flags=("--concurrency-limit", "50")),
    Setup(label="--concurrency-limit 10 (binding)", flags=("--concurrency-limit", "10")),
    Setup(label='concurrency "forbid"', fields={"concurrency": "forbid"}),
)


@dataclass(frozen=True, kw_only=True)
class Size:
    jobs: int
    period: int  # seconds, the jobs' @every
    window: float  # seconds measured
    warmup: float  # seconds between creating the jobs (or a restart) and the window
    chain_runs: int


FULL = Size(jobs=10_000, period=60, window=50.0, warmup=4.0, chain_runs=20)
QUICK = Size(jobs=1_000, period=10, window=4.0, warmup=2.0, chain_runs=5)


# -- 1. lateness under forbid and the global limit ------------------------------------------------


def phase(i: int, jobs: int, period: int) -> str:
    """An ``@every`` anchor i/jobs into the period: the jobs' fires spread evenly over it."""
    at = ANCHOR + timedelta(microseconds=i * period * 1_000_000 // jobs)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def create_jobs(
    url: str, token: str, size: Size, fields: Mapping[str, Any], connections: int = 8
) -> None:
    pending = iter(range(size.jobs))

    async def worker() -> None:
        http = await RawHTTP.connect(url, token)
        try:
            for i in pending:
                body = {
                    "name": f"sem-{i:05d}",
                    "schedule": f"@every {size.period}s",
                    "starts_at": phase(i, size.jobs, size.period),
                    "executor": "noop",
                    **fields,
                }
                status, text = await http.request("POST", "/v1/jobs", json.dumps(body).encode())
                assert status in (200, 201), text
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


@dataclass(kw_only=True)
class Watch:
    """What ``/v1/busy`` showed during the window."""

    reads: int = 0
    with_queue: int = 0
    queued: int = 0
    longest: int = 0
    running_most: int = 0


def watch(http: httpx.Client, url: str, until: float, every: float = 0.25) -> Watch:
    """Read ``/v1/busy`` every ``every`` seconds until ``until`` (monotonic): runs waiting
    under the concurrency limit are listed there with status ``queued``. (Not ``/metrics``:
    with thousands of jobs one scrape blocks the server for seconds, see ``scrape``.)"""
    seen = Watch()
    while (now := time.monotonic()) < until:
        busy = http.get(url + "/v1/busy").json()
        queued = sum(e.get("status") == "queued" for e in busy)
        seen.reads += 1
        seen.with_queue += queued > 0
        seen.queued += queued
        seen.longest = max(seen.longest, queued)
        seen.running_most = max(seen.running_most, len(busy) - queued)
        time.sleep(max(0.0, every - (time.monotonic() - now)))
    return seen


@dataclass(frozen=True, kw_only=True)
class Scrape:
    """One ``GET /metrics`` after the window: the runs scheduled meanwhile show what it cost."""

    start: datetime
    end: datetime
    size: str


def scrape(http: httpx.Client, url: str) -> Scrape:
    start = datetime.now(UTC)
    response = http.get(url + "/metrics", timeout=120.0)
    lines = sum(1 for line in response.text.splitlines() if not line.startswith("#"))
    size = f"{len(response.content) / 1e6:.1f} MB, {lines:,} samples"
    return Scrape(start=start, end=datetime.now(UTC), size=size)


LATENESS_SQL = """
SELECT count(*), count(*) FILTER (NOT success),
       quantile_cont(lat, 0.5), quantile_cont(lat, 0.99), max(lat), min(lat),
       count(*) FILTER (lat > 50), count(DISTINCT second) FILTER (lat > 50),
       count(*) FILTER (lat < 0)
FROM (SELECT success, floor(epoch(scheduled_at)) AS second,
             (epoch_us(started_at) - epoch_us(scheduled_at)) / 1000.0 AS lat
      FROM executions WHERE scheduled_at >= ? AND scheduled_at < ?)
"""


def read_lateness(path: Path, start: datetime, end: datetime) -> tuple[Any, ...]:
    """Lateness figures of the runs scheduled in [start, end), from a copy of the stopped
    server's history (removed afterwards, so the next copy gets no stale WAL)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "history.duckdb"
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        with duckdb.connect(str(copy)) as con:
            row = con.execute(LATENESS_SQL, [start, end]).fetchone()
    assert row is not None
    return tuple(row)


def measure(cluster: Cluster, setup: Setup, size: Size, results: dict[str, str]) -> None:
    """One window on the running server, then stop it and read its history."""
    url, pid = cluster.url("s1"), cluster.pid("s1")
    start = datetime.now(UTC) + timedelta(seconds=size.warmup)
    time.sleep(size.warmup)
    ticks = cpu_ticks(pid)
    seen = watch(cluster.http, url, time.monotonic() + size.window)
    cpu = (cpu_ticks(pid) - ticks) / CLK_TCK / size.window
    end = start + timedelta(seconds=size.window)
    metrics = scrape(cluster.http, url) if setup.scrape else None
    time.sleep(2.0)  # the window's last runs finish and are written
    killed = stop_gracefully(cluster)
    history = cluster.node("s1").data_dir / "history.duckdb"
    row = read_lateness(history, start, end)
    count, failed, p50, p99, worst, least, over50, seconds, early = row
    expected = round(size.jobs * size.window / size.period)
    note = f" (KILLED after SIGTERM: {killed})" if killed else ""
    results[f"{setup.label}: runs in the window"] = (
        f"{count:,} of {expected:,} due, {failed} failed{note}"
    )
    results[f"{setup.label}: lateness"] = (
        f"median {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.1f} ms, "
        f"{over50:,} over 50 ms (in {seconds} of the window's seconds), "
        f"{early:,} started early (min {least:.1f} ms)"
    )
    results[f"{setup.label}: queued in /v1/busy (read every 0.25 s)"] = (
        f"in {seen.with_queue} of {seen.reads} reads, longest queue {seen.longest}, "
        f"most running at once {seen.running_most}"
    )
    results[f"{setup.label}: server CPU over the window"] = f"{cpu:.2f} cores"
    if metrics is not None:
        during = read_lateness(history, metrics.start, metrics.end)
        took = (metrics.end - metrics.start).total_seconds()
        results[f"{setup.label}: one GET /metrics after the window"] = (
            f"{took * 1000:,.0f} ms for {metrics.size}; the {during[0]:,} runs due meanwhile: "
            f"lateness median {during[2]:.0f} ms, max {during[4]:.0f} ms"
        )
    print(f"{setup.label}: measured", flush=True)


def bench_lateness(base: Path, size: Size, results: dict[str, str]) -> None:
    """One data dir for every configuration: the jobs are created once (creating 10,000
    costs tens of seconds on a loaded machine) and the server restarted with each one's flags;
    ``--catchup skip``, so the fires missed during a restart do not arrive as a burst."""
    common = ("--enable-prometheus", "--catchup", "skip")
    with Cluster(base, servers=1, extra_args=common) as cluster:
        written: Mapping[str, Any] | None = None  # the fields the jobs were last written with
        for setup in SETUPS:
            if cluster.node("s1").exited:
                cluster.extra_args = (*common, *setup.flags)
                cluster.start("s1")
            if setup.fields != written:
                took = time.perf_counter()
                url = cluster.url("s1")
                asyncio.run(create_jobs(url, cluster.api_token, size, setup.fields))
                took = time.perf_counter() - took
                written = setup.fields
                results[f"{setup.label}: jobs written through the API"] = (
                    f"{size.jobs:,} in {took:.1f} s"
                )
            measure(cluster, setup, size, results)


# -- 2. a 10-step chain ---------------------------------------------------------------------------


def create_chain(http: httpx.Client, url: str, prefix: str, executor: str, steps: int) -> list[str]:
    config = {"command": "true"} if executor == "shell" else {}
    names = [f"{prefix}-{i:02d}" for i in range(steps + 1)]
    for i, name in enumerate(names):
        body: dict[str, Any] = {"name": name, "executor": executor, "executor_config": config}
        body |= {"parent_job": names[i - 1]} if i else {"schedule": "@manually"}
        response = http.post(url + "/v1/jobs", json=body)
        assert response.status_code == 201, response.text
    return names


def executions(http: httpx.Client, url: str, job: str) -> list[dict[str, Any]]:
    response = http.get(f"{url}/v1/jobs/{job}/executions", params={"_start": 0, "_end": 10_000})
    response.raise_for_status()
    return sorted(response.json(), key=lambda e: when(e["started_at"]))


def run_count(http: httpx.Client, url: str, job: str) -> int:
    response = http.get(f"{url}/v1/jobs/{job}/executions", params={"_start": 0, "_end": 1})
    response.raise_for_status()
    return int(response.headers["X-Total-Count"])


def run_chain(http: httpx.Client, url: str, names: list[str], runs: int) -> None:
    """Run the chain ``runs`` times, one after another (each waits for its last step)."""
    for done in range(1, runs + 1):
        http.post(f"{url}/v1/jobs/{names[0]}/run").raise_for_status()
        deadline = time.monotonic() + 30
        while run_count(http, url, names[-1]) < done:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the chain's last step did not run {done} times within 30 s")
            time.sleep(0.05)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def chain_gaps(
    http: httpx.Client, url: str, names: list[str], runs: int
) -> tuple[list[float], list[float]]:
    """Milliseconds from each step's end to the next step's start, and per run from the
    parent's end to the last step's end."""
    history = [executions(http, url, name) for name in names]
    for name, runs_of in zip(names, history, strict=True):
        assert len(runs_of) == runs, f"{name}: {len(runs_of)} executions, expected {runs}"
        assert all(e["success"] for e in runs_of), f"{name}: a run failed"
    gaps: list[float] = []
    totals: list[float] = []
    for r in range(runs):
        steps = [runs_of[r] for runs_of in history]
        for before, after in zip(steps, steps[1:], strict=False):
            gap = when(after["started_at"]) - when(before["finished_at"])
            gaps.append(gap / timedelta(milliseconds=1))
        total = when(steps[-1]["finished_at"]) - when(steps[0]["finished_at"])
        totals.append(total / timedelta(milliseconds=1))
    return gaps, totals


def bench_chain(base: Path, size: Size, results: dict[str, str], steps: int = 10) -> None:
    with Cluster(base, servers=1) as cluster:
        url = cluster.url("s1")
        for executor in ("shell", "noop"):
            names = create_chain(cluster.http, url, f"chain-{executor}", executor, steps)
            run_chain(cluster.http, url, names, size.chain_runs)
            gaps, totals = chain_gaps(cluster.http, url, names, size.chain_runs)
            label = f"chain of {steps} ({executor}{' true' if executor == 'shell' else ''})"
            results[f"{label}: step start after the previous step finished"] = (
                f"median {statistics.median(gaps):.1f} ms, p99 {percentile(gaps, 0.99):.1f} ms, "
                f"max {max(gaps):.1f} ms, {sum(g > 50 for g in gaps)} of {len(gaps)} over 50 ms"
            )
            results[f"{label}: parent finished -> last step finished"] = (
                f"median {statistics.median(totals):.0f} ms, max {max(totals):.0f} ms "
                f"({size.chain_runs} runs)"
            )
    print("chain: measured", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short form for CI")
    parser.add_argument("--only", help="comma list of parts: lateness,chain")
    args = parser.parse_args()
    parts = set((args.only or "lateness,chain").split(","))
    size = QUICK if args.quick else FULL
    results: dict[str, str] = {}
    print(
        f"# dkron-lab job-semantics benchmark ({os.cpu_count()} cores, {size.jobs:,} jobs "
        f"@every {size.period}s, window {size.window:g} s, quick={args.quick})",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        plugin = base / "plugin"
        plugin.mkdir()
        install_noop_plugin(plugin)
        if "lateness" in parts:
            bench_lateness(base / "lateness", size, results)
        if "chain" in parts:
            bench_chain(base / "chain", size, results)
    print_table(results)


if __name__ == "__main__":
    main()
