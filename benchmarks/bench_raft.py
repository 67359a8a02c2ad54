"""Benchmark the Raft adapter: ``python benchmarks/bench_raft.py`` prints one table.

Rows: a one-node server with ``fsync="never"`` (the adapter's own cost) with synchronous submits
(one at a time, latency percentiles), pipelined submits (many in flight from one asyncio loop,
commits/s) and idle CPU; synchronous submits with ``fsync="batch"`` (the embedded default, one
fsync per commit when they come one at a time; ``bench_fsync.py`` measures the modes under
load); and a 3-node loopback cluster (this process + two follower
processes) measured on the leader. Payload: a ~200-byte command; the state machine is a counter.
``--quick`` runs fewer commands, ``--no-cluster`` skips the 3-node rows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dkron_lab.state.raft import RaftNode, RaftSettings

KEY = "bench-cluster-key"  # the raft port never runs without one (as in a real node)
PAYLOAD = "x" * 180


class Counter:
    """The cheapest deterministic state machine: counts commands."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.count = 0

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        return {"count": self.count}

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count}

    def restore(self, data: dict[str, Any]) -> None:
        self.count = int(data["count"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    scenario: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    per_second: str = ""
    note: str = ""


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def sync_latencies(node: RaftNode, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await node.submit({"type": "bench", "i": i, "pad": PAYLOAD})
        latencies.append(time.perf_counter() - started)
    return latencies


async def pipelined_rate(node: RaftNode, count: int, window: int) -> tuple[float, float]:
    """(commits per second, CPU microseconds of this process per commit)."""
    gate = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        try:
            await node.submit({"type": "bench", "i": i, "pad": PAYLOAD}, timeout=30)
        finally:
            gate.release()

    started, cpu = time.perf_counter(), time.process_time()
    tasks = []
    for i in range(count):
        await gate.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return count / elapsed, cpu / count * 1e6


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


async def idle_cpu(seconds: float) -> float:
    """Percent of one core this process used while the node idled."""
    before = time.process_time()
    await asyncio.sleep(seconds)
    return (time.process_time() - before) / seconds * 100


async def one_node(args: argparse.Namespace, *, fsync: str) -> list[Row]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = RaftSettings(
            password=KEY, data_dir=Path(data_dir), self_address=free_address(), fsync=fsync
        )
        node = RaftNode(settings, Counter())
        node.start()
        try:
            await node.wait_ready(10)
            synced = fsync != "never"
            latencies = await sync_latencies(node, args.sync_count // (10 if synced else 1))
            label = f"1 node, fsync={fsync}"
            rows = [Row(scenario=f"{label}: sync submit", **_latency(latencies))]
            if synced:
                return rows
            rates = [await pipelined_rate(node, args.pipelined_count, 2000) for _ in range(3)]
            rows.append(_rate_row(f"{label}: pipelined (<=2000 in flight)", rates))
            rows.append(
                Row(scenario=f"{label}: idle CPU", note=f"{await idle_cpu(3):.2f} % of a core")
            )
            return rows
        finally:
            node.stop()


async def three_nodes(args: argparse.Namespace) -> list[Row]:
    addresses = [free_address() for _ in range(3)]
    with tempfile.TemporaryDirectory() as data_dir:
        followers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--follower",
                    str(Path(data_dir) / str(i)),
                    *addresses[i:] + addresses[:i],
                ],
                stdin=subprocess.PIPE,
            )
            for i in (1, 2)
        ]
        # Short election timeouts here, long ones in the followers: this process wins.
        settings = RaftSettings(
            password=KEY,
            data_dir=Path(data_dir) / "0",
            self_address=addresses[0],
            partners=tuple(addresses[1:]),
            election_timeout_min=0.35,
            election_timeout_max=0.4,
        )
        changes: list[tuple[bool, int]] = []
        node = RaftNode(settings, Counter(), on_leadership=lambda *change: changes.append(change))
        node.start()
        try:
            await node.wait_ready(20)
            elected = len(changes)
            where = "leader" if node.is_leader else "follower (forwarded)"
            latencies = await sync_latencies(node, args.sync_count // 3)
            rows = [Row(scenario=f"3 nodes: sync submit on the {where}", **_latency(latencies))]
            rates = [await pipelined_rate(node, args.pipelined_count // 2, 1000) for _ in range(3)]
            rows.append(_rate_row(f"3 nodes: pipelined on the {where} (<=1000 in flight)", rates))
            rows.append(await _idle_cluster_row(followers))
            if len(changes) > elected:
                rows.append(
                    Row(scenario="3 nodes: leadership changed during the runs", note=str(changes))
                )
            return rows
        finally:
            node.stop()
            for follower in followers:
                follower.kill()
                follower.wait()
                if follower.stdin is not None:
                    follower.stdin.close()


async def _idle_cluster_row(followers: list[subprocess.Popen[bytes]]) -> Row:
    processes = [psutil.Process(follower.pid) for follower in followers]
    before = [sum(p.cpu_times()[:2]) for p in processes]
    leader = await idle_cpu(3)
    after = [sum(p.cpu_times()[:2]) for p in processes]
    others = ", ".join(f"{(b - a) / 3 * 100:.2f}" for a, b in zip(before, after, strict=True))
    return Row(scenario="3 nodes: idle CPU", note=f"{leader:.2f} % (this process), {others} %")


def _latency(latencies: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "per_second": f"{len(latencies) / sum(latencies):,.0f}",
        "note": f"{len(latencies)} commands, mean {statistics.mean(latencies) * 1000:.3f} ms",
    }


def _rate_row(scenario: str, results: list[tuple[float, float]]) -> Row:
    rates = [rate for rate, _ in results]
    cpu = statistics.median(cpu for _, cpu in results)
    runs = ", ".join(f"{rate:,.0f}" for rate in rates) + f"; {cpu:.0f} us CPU/commit"
    return Row(
        scenario=scenario, per_second=f"{statistics.median(rates):,.0f}", note=f"3 runs: {runs}"
    )


def print_table(rows: list[Row]) -> None:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    header = ("scenario", "p50 ms", "p99 ms", "commits/s", "notes")
    table = [header] + [
        (r.scenario, ms(r.p50_ms), ms(r.p99_ms), r.per_second, r.note) for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for n, line in enumerate(table):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
        if n == 0:
            print("  ".join("-" * width for width in widths))


def follower(data_dir: str, address: str, partners: list[str]) -> None:
    """Run a follower until the parent closes our stdin (or kills us)."""
    logging.basicConfig(format=f"follower {address}: %(levelname)s %(message)s")
    settings = RaftSettings(
        password=KEY,
        data_dir=Path(data_dir),
        self_address=address,
        partners=tuple(partners),
        election_timeout_min=1.0,
        election_timeout_max=1.4,
    )
    node = RaftNode(settings, Counter())
    node.start()
    sys.stdin.read()
    node.stop()


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(format="bench process: %(levelname)s %(name)s %(message)s")
    rows = await one_node(args, fsync="never")
    rows += await one_node(args, fsync="batch")
    if not args.no_cluster:
        rows += await three_nodes(args)
    print(
        f"dkron-lab raft adapter, pysyncobj 0.3.17, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, 200-byte commands"
    )
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer commands")
    parser.add_argument("--no-cluster", action="store_true", help="skip the 3-node rows")
    parser.add_argument("--follower", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.follower:
        follower(cli.follower[0], cli.follower[1], cli.follower[2:])
    else:
        cli.sync_count = 1000 if cli.quick else 5000
        cli.pipelined_count = 5000 if cli.quick else 20000
        asyncio.run(main(cli))
