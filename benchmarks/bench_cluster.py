"""The cluster figures of issue 3 on this machine: creates through a follower, and throughput.

    python benchmarks/bench_cluster.py            # 5-minute throughput window (about 6 minutes)
    python benchmarks/bench_cluster.py --quick    # 45 s window (1.5 to 4 minutes)
    python benchmarks/bench_cluster.py --jobs 300 --duration 60

One cluster of 3 servers + 2 agents (``tests.harness.Cluster``, real ``dkron-lab agent``
subprocesses on loopback), every node tagged ``dc=dc1``:

1. **creates**: 300 jobs created one after another on one keep-alive connection to a follower
   (forwarded to the leader, applied locally before the answer), then 300 on the leader;
2. **throughput**: N jobs ``@every 1s`` with the tag ``dc: dc1:1`` (each fire runs on exactly
   one of the 5 nodes) and a no-op executor; all due on the whole second, as ``@every`` anchors
   at the Unix epoch (``--spread`` anchors job i at i/N of a second through ``starts_at``
   instead); after a warm-up, a measured window. Then every node
   is stopped gracefully and each server's DuckDB history is read directly: executions whose
   ``scheduled_at`` lies in the window (per second, and the slowest 10 s of the window), whether
   the three servers hold the same rows, lateness (``started_at - scheduled_at``) of every one of
   them, Raft entries per execution (the leader's commit index over the window), and the CPU of
   each process over the window (``/proc/<pid>/stat``).

The no-op executor is not part of the product: the benchmark writes a module and a
``.dist-info`` with a ``dkron_lab.executors`` entry point into a temporary directory and puts
it on the nodes' ``PYTHONPATH``, as a third-party plugin would be installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import RawHTTP
from bench_single_node import percentile, print_table

from dkron_lab.testing import install_plugin
from tests.harness import Cluster

CLK_TCK = os.sysconf("SC_CLK_TCK")
NOOP_MODULE = '''
"""A no-op executor for benchmarks: succeeds at once, spawns nothing."""

from dkron_lab.plugins import ExecutorResult


class NoopExecutor:
    async def execute(self, request, emit):
        return ExecutorResult(success=True, output=b"")
'''


def install_noop_plugin(directory: Path) -> None:
    """``noop`` in ``dkron_lab.executors``, found by the nodes through ``PYTHONPATH``."""
    install_plugin(
        directory,
        "dkron_lab_bench_noop",
        NOOP_MODULE,
        {"dkron_lab.executors": {"noop": "dkron_lab_bench_noop:NoopExecutor"}},
    )


# -- 1. sequential creates -------------------------------------------------------------------------


async def sequential_creates(url: str, token: str, prefix: str, count: int) -> list[float]:
    """Milliseconds per create, one after another on one keep-alive connection."""
    hour = (datetime.now(UTC).hour + 12) % 24  # far from now: nothing fires meanwhile
    http = await RawHTTP.connect(url, token)
    times = []
    try:
        for i in range(count):
            body = {
                "name": f"{prefix}-{i:04d}",
                "schedule": f"0 {i % 60} {hour} * * *",
                "executor": "noop",
                "tags": {"dc": "dc1:1"},
            }
            start = time.perf_counter()
            status, text = await http.request("POST", "/v1/jobs", json.dumps(body).encode())
            times.append((time.perf_counter() - start) * 1000)
            assert status == 201, text
    finally:
        http.close()
    return times


def bench_creates(cluster: Cluster, count: int, results: dict[str, str]) -> None:
    follower = cluster.followers()[0]
    leader = cluster.leader()
    for label, name in (("follower", follower), ("leader", leader)):
        url, token = cluster.url(name), cluster.api_token
        asyncio.run(sequential_creates(url, token, f"warm-{name}", 20))
        times = asyncio.run(sequential_creates(url, token, f"seq-{name}", count))
        results[f"creates one after another through the {label} ({name})"] = (
            f"median {statistics.median(times):.2f} ms, p99 {percentile(times, 0.99):.2f} ms "
            f"({count} creates)"
        )


# -- 2. throughput ---------------------------------------------------------------------------------


def phase(i: int, jobs: int) -> str:
    """An ``@every`` anchor i/jobs into a second: the jobs' fires spread evenly over it."""
    return f"2026-01-01T00:00:00.{i * 1_000_000 // jobs:06d}Z"


async def create_ticking_jobs(
    url: str, token: str, jobs: int, *, burst: bool, connections: int = 8
) -> None:
    pending = iter(range(jobs))

    async def worker() -> None:
        http = await RawHTTP.connect(url, token)
        try:
            for i in pending:
                body = {
                    "name": f"tick-{i:05d}",
                    "schedule": "@every 1s",
                    "executor": "noop",
                    "tags": {"dc": "dc1:1"},
                } | ({} if burst else {"starts_at": phase(i, jobs)})
                status, text = await http.request("POST", "/v1/jobs", json.dumps(body).encode())
                assert status == 201, text
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


@dataclass(frozen=True, kw_only=True)
class Sample:
    at: datetime
    commit_index: int
    term: int
    cpu_ticks: Mapping[str, int]


def cpu_ticks(pid: int) -> int:
    # Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def raft_status(cluster: Cluster, name: str) -> dict[str, int]:
    """``/v1``'s Raft indexes; a loaded server may take seconds to answer, so wait for it."""
    response = cluster.http.get(cluster.url(name) + "/v1", timeout=60.0)
    response.raise_for_status()
    raft = response.json()["raft"]
    return {key: int(raft[key]) for key in ("commit_index", "applied_index", "term")}


def sample(cluster: Cluster) -> Sample:
    ticks = {name: cpu_ticks(cluster.pid(name)) for name in cluster.nodes}
    ticks["benchmark"] = cpu_ticks(os.getpid())
    raft = [raft_status(cluster, name) for name in cluster.servers]
    commit, term = max(r["commit_index"] for r in raft), max(r["term"] for r in raft)
    return Sample(at=datetime.now(UTC), commit_index=commit, term=term, cpu_ticks=ticks)


def stop_gracefully(cluster: Cluster, timeout: float = 20.0) -> list[str]:
    """SIGTERM each node by pid, so every DuckDB batch is written; kill -9 (by pid) those still
    there after ``timeout``. Returns the names that had to be killed."""
    for name in cluster.nodes:
        os.kill(cluster.pid(name), signal.SIGTERM)
    killed = []
    deadline = time.monotonic() + timeout
    for name in cluster.nodes:
        process = cluster.node(name).process
        assert process is not None
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            cluster.kill(name)
            killed.append(name)
    return killed


def open_history(path: Path) -> duckdb.DuckDBPyConnection:
    """A copy of a stopped node's history (with its WAL, replayed on open: a killed node's
    last transactions live there)."""
    copy = path.parent / "history-copy.duckdb"
    shutil.copyfile(path, copy)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    return duckdb.connect(str(copy))


WINDOW_SQL = """
SELECT count(*), coalesce(bit_xor(hash(id)), 0), coalesce(quantile_cont(lat, 0.5), 'nan'),
       coalesce(quantile_cont(lat, 0.99), 'nan'), coalesce(max(lat), 'nan'),
       count(*) FILTER (lat > 100)
FROM (SELECT id, (epoch_us(started_at) - epoch_us(scheduled_at)) / 1000.0 AS lat
      FROM executions WHERE scheduled_at >= ? AND scheduled_at < ?)
"""
SLOWEST_SQL = """
SELECT count(*) FROM executions WHERE scheduled_at >= ? AND scheduled_at < ?
GROUP BY floor((epoch(scheduled_at) - epoch(?::TIMESTAMPTZ)) / 10) ORDER BY 1 LIMIT 1
"""


def read_history(path: Path, start: datetime, end: datetime) -> dict[str, object]:
    with open_history(path) as con:
        count, digest, p50, p99, worst, late = con.execute(WINDOW_SQL, [start, end]).fetchone()
        whole = end - start
        end10 = start + timedelta(seconds=int(whole.total_seconds()) // 10 * 10)
        slowest = con.execute(SLOWEST_SQL, [start, end10, start]).fetchone()
        by_node = dict(
            con.execute(
                "SELECT node_name, format('{:,} (lateness p50 {:.0f} ms)', count(*), "
                "median(epoch_us(started_at) - epoch_us(scheduled_at)) / 1000) FROM executions "
                "WHERE scheduled_at >= ? AND scheduled_at < ? GROUP BY 1 ORDER BY 1",
                [start, end],
            ).fetchall()
        )
        failed = con.execute(
            "SELECT count(*) FROM executions WHERE scheduled_at >= ? AND scheduled_at < ? "
            "AND NOT success",
            [start, end],
        ).fetchone()[0]
    return {
        "count": count, "digest": digest, "p50": p50, "p99": p99, "max": worst, "late": late,
        "slowest10": slowest[0] if slowest else 0, "by_node": by_node, "failed": failed,
    }  # fmt: skip


def bench_throughput(
    cluster: Cluster,
    base: Path,
    jobs: int,
    warmup: float,
    duration: float,
    results: dict[str, str],
    *,
    burst: bool,
) -> None:
    leader = cluster.leader()
    created = time.perf_counter()
    asyncio.run(create_ticking_jobs(cluster.url(leader), cluster.api_token, jobs, burst=burst))
    results["throughput: jobs created"] = (
        f"{jobs} x @every 1s, noop, tag dc: dc1:1, "
        f"{'all due on the whole second' if burst else 'phases spread over the second'} "
        f"({time.perf_counter() - created:.1f} s)"
    )
    time.sleep(warmup)
    first = sample(cluster)
    time.sleep(duration)
    last = sample(cluster)
    time.sleep(5.0)  # results of the window's last fires reach every server
    killed = stop_gracefully(cluster)
    if killed:
        results["throughput: NOTE"] = f"did not stop within 20 s of SIGTERM, killed: {killed}"
    window = (last.at - first.at).total_seconds()
    report_throughput(cluster, base, first, last, window, results)


def report_throughput(
    cluster: Cluster,
    base: Path,
    first: Sample,
    last: Sample,
    window: float,
    results: dict[str, str],
) -> None:
    histories = {
        name: read_history(base / name / "history.duckdb", first.at, last.at)
        for name in cluster.servers
    }
    counts = {name: h["count"] for name, h in histories.items()}
    same = len({(h["count"], h["digest"]) for h in histories.values()}) == 1
    ref = histories[cluster.servers[0]]
    entries = last.commit_index - first.commit_index
    results["throughput: window"] = (
        f"{window:.1f} s (Raft term {first.term} -> {last.term}: "
        f"{'no election' if first.term == last.term else 'ELECTIONS during the window'})"
    )
    results["throughput: executions recorded per second"] = (
        f"{ref['count'] / window:,.1f} /s ({ref['count']:,} in the window; "
        f"slowest 10 s: {ref['slowest10'] / 10:,.1f} /s)"
    )
    results["throughput: same rows on all three servers"] = (
        f"{'yes' if same else 'NO'} ({', '.join(f'{n} {c:,}' for n, c in counts.items())})"
    )
    results["throughput: runs by node"] = ", ".join(f"{n} {c}" for n, c in ref["by_node"].items())
    results["throughput: failed executions"] = str(ref["failed"])
    results["throughput: lateness"] = (
        f"median {ref['p50']:.1f} ms, p99 {ref['p99']:.1f} ms, max {ref['max']:.0f} ms, "
        f"{ref['late']:,} over 100 ms"
    )
    results["throughput: Raft entries per execution"] = (
        f"{entries / max(1, ref['count']):.2f} ({entries:,} entries over the window)"
    )
    results["throughput: CPU over the window (cores)"] = ", ".join(
        f"{name} {(last.cpu_ticks[name] - first.cpu_ticks[name]) / CLK_TCK / window:.2f}"
        for name in last.cpu_ticks
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 45-second throughput window")
    parser.add_argument("--jobs", type=int, default=500, help="@every 1s jobs (default 500)")
    parser.add_argument("--duration", type=float, default=None, help="window in seconds")
    parser.add_argument("--creates", type=int, default=300, help="sequential creates per server")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="anchor job i at i/N of a second (default: all due on the whole second)",
    )
    parser.add_argument("--keep", help="run in a new directory under this one and keep it")
    args = parser.parse_args()
    duration = args.duration or (45.0 if args.quick else 300.0)
    warmup = 10.0 if args.quick else 20.0
    results: dict[str, str] = {}
    print(
        f"# dkron-lab cluster benchmark ({os.cpu_count()} cores, 3 servers + 2 agents, "
        f"{args.jobs} jobs, window {duration:g} s)",
        flush=True,
    )
    keep = contextlib.nullcontext(tempfile.mkdtemp(dir=args.keep)) if args.keep else None
    with keep or tempfile.TemporaryDirectory() as base:
        plugin = Path(base) / "plugin"
        plugin.mkdir()
        install_noop_plugin(plugin)
        tags = [{"dc": "dc1"}] * 5
        with Cluster(base, servers=3, agents=2, server_tags=tags, agent_tags=tags) as cluster:
            bench_creates(cluster, args.creates, results)
            print("creates measured", flush=True)
            bench_throughput(
                cluster, Path(base), args.jobs, warmup, duration, results, burst=not args.spread
            )
    print_table(results)


if __name__ == "__main__":
    main()
