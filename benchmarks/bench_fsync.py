"""What each ``--fsync`` mode costs an API write; prints two tables.

    python benchmarks/bench_fsync.py                  # 2000 creates per mode, 16 clients
    python benchmarks/bench_fsync.py -n 500 -c 1      # one client: the latency of one write
    python benchmarks/bench_fsync.py -r 3             # 3 rounds, modes interleaved (busy hosts)

For each mode (``never``, ``batch``, ``always``) it starts a fresh one-node server
(``dkron-lab agent --server --fsync <mode>``) in a temporary data dir under ``--dir`` (default:
the system's temporary directory; point it at the disk you care about) and creates N jobs
through the HTTP API from C concurrent clients after a warm-up. A create is answered once its
Raft entry is applied, hence (``batch``, ``always``) once it is fsynced. Columns: creates/s over
the whole run (median over rounds), and the p50/p99 latency of one create as the client saw it.
A first table measures the raft adapter alone in this process (N commits one after another,
then N in flight at once), where the cost of the fsync itself is not hidden by HTTP and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _http import RawHTTP

from dkron_lab.state.raft import RaftNode, RaftSettings
from dkron_lab.testing import free_port
from tests.harness import new_cluster_key

MODES = ("never", "batch", "always")
TOKEN = "bench-fsync-token-0123456789abcdef"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_server(data_dir: Path, mode: str) -> tuple[subprocess.Popen[bytes], str]:
    http_port, raft_port = free_port(), free_port()
    args = [sys.executable, "-m", "dkron_lab.cli", "agent", "--server", "--bootstrap-expect", "1"]
    args += ["--data-dir", str(data_dir), "--http-addr", f"127.0.0.1:{http_port}"]
    args += ["--bind-addr", f"127.0.0.1:{raft_port}", "--fsync", mode, "--log-level", "warn"]
    args += ["--encrypt", new_cluster_key(), "--api-token", TOKEN]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
    log = open(data_dir.parent / f"{mode}.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(args, stdout=log, stderr=log, env=env)
    log.close()
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {mode} server did not start; see {data_dir.parent / f'{mode}.log'}")


def job(name: str) -> bytes:
    body = {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": "true"},
    }
    return json.dumps(body).encode()


async def create(url: str, names: list[str], latencies: list[float]) -> None:
    http = await RawHTTP.connect(url, TOKEN)
    try:
        for name in names:
            started = time.perf_counter()
            status, text = await http.request("POST", "/v1/jobs", job(name))
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 201:
                raise SystemExit(f"create {name} answered {status}: {text!r}")
    finally:
        http.close()


async def measure(url: str, mode: str, count: int, clients: int) -> tuple[float, list[float]]:
    await create(url, [f"warm-{mode}-{i}" for i in range(50)], [])
    latencies: list[float] = []
    shares = [[f"{mode}-{i}" for i in range(c, count, clients)] for c in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(create(url, share, latencies) for share in shares))
    return count / (time.perf_counter() - started), latencies


class _Noop:
    """A state machine that applies nothing: isolates the raft adapter and its journal."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        return {}

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, data: dict[str, Any]) -> None:
        pass


async def raft_commits(mode: str, count: int, directory: Path | None) -> tuple[list[float], float]:
    """One raft node in this process: latencies of ``count`` commits one after another (ms),
    and commits/s with ``count`` in flight at once."""
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        settings = RaftSettings(
            data_dir=Path(scratch),
            self_address=f"127.0.0.1:{free_port()}",
            password=new_cluster_key(),
            fsync=mode,
        )
        node = RaftNode(settings, _Noop())
        node.start()
        try:
            await node.wait_ready(30)
            latencies = []
            for i in range(count):
                started = time.perf_counter()
                await node.submit({"i": i})
                latencies.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await asyncio.gather(*(node.submit({"i": i}) for i in range(count)))
            return latencies, count / (time.perf_counter() - started)
        finally:
            node.stop()


def run_mode(mode: str, args: argparse.Namespace) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        data_dir = Path(scratch) / "data"
        process, url = start_server(data_dir, mode)
        try:
            return asyncio.run(measure(url, mode, args.count, args.clients))
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=2000, help="creates per mode")
    parser.add_argument("-c", "--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("-r", "--rounds", type=int, default=1, help="rounds, modes interleaved")
    parser.add_argument("--dir", type=Path, default=None, help="where the data dirs go")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):  # interleaved, so that a change of load hits every mode
        for mode in MODES:
            rate, seen = run_mode(mode, args)
            rates[mode].append(rate)
            latencies[mode] += seen
    print("raft adapter alone (one node in this process, no HTTP):")
    print(f"{'fsync':<8} {'sync p50 ms':>12} {'sync p99 ms':>12} {'pipelined/s':>12}")
    for mode in MODES:
        seen, pipelined = asyncio.run(raft_commits(mode, args.count, args.dir))
        p50, p99 = percentile(seen, 0.5), percentile(seen, 0.99)
        print(f"{mode:<8} {p50:>12.3f} {p99:>12.3f} {pipelined:>12.0f}")
    print()
    print(f"{args.count} creates per mode and round, {args.clients} clients, {args.rounds} rounds")
    print(f"{'fsync':<8} {'creates/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for mode in MODES:
        rate = statistics.median(rates[mode])
        p50, p99 = percentile(latencies[mode], 0.5), percentile(latencies[mode], 0.99)
        print(f"{mode:<8} {rate:>10.0f} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()
