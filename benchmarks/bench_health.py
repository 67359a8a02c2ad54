"""Benchmark the health watch of issue 13 on a real server: what idle heartbeat checks cost, and
how soon a missed ping is announced. Prints a table.

    .venv/bin/python benchmarks/bench_health.py            # about 8 minutes
    .venv/bin/python benchmarks/bench_health.py --quick    # about 4 minutes
    .venv/bin/python benchmarks/bench_health.py --only alarms --checks 100

1. **Idle cost**: a fresh one-node ``dkron-lab agent --server`` per row, holding no job, 10,000
   ``@manually`` shell jobs, or 10,000 heartbeat checks (``@every 1h`` anchored half an hour
   from now, ``max_lateness: 5m``: nothing is due while it is measured). The jobs are created
   through the API (16 connections); after a pause to settle, the server process's CPU time
   (``psutil``, user + system) over ``--idle`` seconds of idleness is given as % of one core.
   Target: 10,000 heartbeat checks cost at most 5 % of one core.
2. **Alarm latency**: ``--checks`` heartbeat checks (``@every 2s``, ``max_lateness: 1s``) that
   nobody pings, on a server whose webhook posts ``{{.JobName}}|{{.Health}}|{{.StartTime}}|
   {{.Output}}`` to a receiver in this process (keep-alive, a backlog a burst fits in). Each
   ``missed`` arrival is timed against the end of the grace of the instant its ``Output`` names
   (``no ping for <instant> within 1s``): arrival − (instant + 1 s), the same machine's clock on
   both sides; ``StartTime`` (when the watch decided the change, before committing it) splits
   that into deciding and delivering. A missed check stays missed, so once every check has
   given a round's alarm each is pinged once (it recovers: that announcement is ignored) and
   misses again, ``--alarms`` rounds. The checks share their instants (``@every`` is anchored at
   the Unix epoch): the worst case. Target: every alarm at most 1 s after the grace ends.

The load average is printed before and after: the server shares the machine with everything
else on it.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import re
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from _http import RawHTTP

from dkron_lab.testing import auth_headers, free_port, one_node

JOBS = 10_000
PAYLOAD = "{{.JobName}}|{{.Health}}|{{.StartTime}}|{{.Output}}"
_INSTANT = re.compile(r"no ping for (\S+) within")


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


# -- 1. idle cost ----------------------------------------------------------------------------------


def bodies(kind: str, count: int) -> list[dict[str, Any]]:
    """``count`` jobs of ``kind``: ``shell`` (``@manually``) or ``heartbeat`` (nothing due for
    half an hour)."""
    if kind == "shell":
        return [
            {
                "name": f"shell-{i:05d}",
                "schedule": "@manually",
                "executor": "shell",
                "executor_config": {"command": "/bin/true"},
            }
            for i in range(count)
        ]
    anchor = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    return [
        {
            "name": f"check-{i:05d}",
            "schedule": "@every 1h",
            "starts_at": anchor.isoformat().replace("+00:00", "Z"),
            "executor": "heartbeat",
            "max_lateness": "5m",
        }
        for i in range(count)
    ]


async def create(url: str, token: str, jobs: list[dict[str, Any]], clients: int = 16) -> float:
    """Create ``jobs`` through ``POST /v1/jobs``; the seconds it took."""
    connections = [await RawHTTP.connect(url, token) for _ in range(clients)]
    queue = iter(jobs)

    async def worker(http: RawHTTP) -> None:
        for body in queue:
            status, text = await http.request("POST", "/v1/jobs", json.dumps(body).encode())
            assert status == 201, text

    started = time.perf_counter()
    await asyncio.gather(*(worker(http) for http in connections))
    for connection in connections:
        connection.close()
    return time.perf_counter() - started


def idle_cost(kind: str, count: int, seconds: float, settle: float) -> dict[str, float]:
    """A fresh server holding ``count`` jobs of ``kind``: its CPU over ``seconds`` of idleness
    (% of one core), its RSS, and how long creating the jobs took."""
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp, one_node(Path(tmp)) as node:
        made = asyncio.run(create(node.url, node.token, bodies(kind, count))) if count else 0.0
        time.sleep(settle)
        process = psutil.Process(node.pid)
        before, wall = process.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, wall = process.cpu_times(), time.monotonic() - wall
        cpu = (after.user - before.user) + (after.system - before.system)
        return {
            "cpu": cpu / wall * 100,
            "rss": process.memory_info().rss / 2**20,
            "create": made,
            "load": os.getloadavg()[0],
        }


# -- 2. alarm latency ------------------------------------------------------------------------------


class Hooks:
    """The webhook's arrivals: (arrival time, body), in order."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def since(self, seen: int) -> list[tuple[float, str]]:
        with self.lock:
            return self.arrivals[seen:]


class _Server(http.server.ThreadingHTTPServer):
    # The default backlog (5) drops the connections of a burst of alarms beyond it, and a
    # dropped SYN is sent again a second later: the receiver must not add that second.
    request_queue_size = 256

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the server killed at the end resets its keep-alive connections: not news


def serve_hooks(hooks: Hooks) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a webhook receiver in production would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            arrived = time.time()
            with hooks.lock:
                hooks.arrivals.append((arrived, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def alarm_latency(checks: int, alarms: int) -> tuple[list[tuple[float, float]], float]:
    """For each ``missed`` webhook: seconds from the end of its instant's grace to the change
    being decided (``{{.StartTime}}``, taken just before the change is committed) and to the
    webhook arriving; and the highest 1-minute load average seen meanwhile."""
    hooks = Hooks()
    server = serve_hooks(hooks)
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    args = ["--webhook-endpoint", hook, "--webhook-payload", PAYLOAD]
    samples: list[tuple[float, float]] = []
    peak = os.getloadavg()[0]
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-health-") as tmp,
            one_node(Path(tmp), args=args) as node,
            httpx.Client(base_url=node.url, headers=auth_headers(node.token), trust_env=False) as h,
        ):
            names = [f"beat-{i:03d}" for i in range(checks)]
            for name in names:
                body = {"name": name, "schedule": "@every 2s", "executor": "heartbeat"}
                answer = h.post("/v1/jobs", json={**body, "max_lateness": "1s"})
                assert answer.status_code == 201, answer.text
            got = dict.fromkeys(names, 0)
            seen, rounds = 0, 0
            deadline = time.monotonic() + 30 + alarms * 10
            while rounds < alarms:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"alarms so far: {got}; server log: {node.log}")
                fresh = hooks.since(seen)
                seen += len(fresh)
                for arrived, text in fresh:
                    name, health, since, output = text.split("|", 3)
                    if health != "missed" or got[name] > rounds:
                        continue  # a run's notification, a recovery, or a later round's
                    found = _INSTANT.search(output)
                    assert found, output
                    end = _parse(found.group(1)) + 1.0
                    samples.append((_parse_go(since) - end, arrived - end))
                    got[name] += 1
                if min(got.values()) > rounds:
                    # Every check gave this round's alarm: ping each once, so that it recovers
                    # and misses again (after the alarms: the pings do not slow them).
                    rounds += 1
                    for name in names if rounds < alarms else ():
                        ping = h.post(f"/v1/jobs/{name}/ping")
                        assert ping.status_code == 200, ping.text
                peak = max(peak, os.getloadavg()[0])
                time.sleep(0.02)
            assert h.get("/v1/leader").status_code == 200, f"server log: {node.log}"
    finally:
        server.shutdown()
        server.server_close()
    return samples, peak


def _parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _parse_go(text: str) -> float:
    """A Go ``time.Time`` as printed (``2006-01-02 15:04:05.999 +0000 UTC``), in UTC."""
    day, clock, offset, _ = text.split(" ")
    return datetime.fromisoformat(f"{day}T{clock}{offset[:3]}:{offset[3:]}").timestamp()


# -- the table -------------------------------------------------------------------------------------


def idle_table(idle: float, settle: float) -> None:
    rows = {}
    for label, kind, count in (
        ("no job", "shell", 0),
        (f"{JOBS:,} `@manually` shell jobs", "shell", JOBS),
        (f"{JOBS:,} heartbeat checks (`@every 1h`, `max_lateness: 5m`)", "heartbeat", JOBS),
    ):
        rows[kind if count else "none"] = (label, idle_cost(kind, count, idle, settle))
        print(f"  measured: {label} (load {load()})", flush=True)
    print(f"\nidle: {idle:g} s measured after {settle:g} s of settling, a fresh server per row\n")
    print("| server holding | CPU, % of one core | RSS | created in | load (1 min) |")
    print("|---|---|---|---|---|")
    for label, row in rows.values():
        made = f"{row['create']:.1f} s" if row["create"] else "–"
        print(
            f"| {label} | {row['cpu']:.2f} % | {row['rss']:.0f} MiB | {made} | {row['load']:.1f} |"
        )
    added = rows["heartbeat"][1]["cpu"] - rows["shell"][1]["cpu"]
    print(f"\nheartbeat checks over as many shell jobs: {added:+.2f} % of one core (target ≤ 5 %)")


def alarm_table(checks: int, alarms: int) -> None:
    samples, peak = alarm_latency(checks, alarms)
    print(
        f"\nalarm latency: {checks} checks × {alarms} alarms = {len(samples)} `missed` webhooks, "
        f"from the end of the instant's grace; peak load {peak:.1f}\n"
    )
    print("| from the grace's end to | median | p99 | max | target |")
    print("|---|---|---|---|---|")
    for label, values, target in (
        ("the change decided (`{{.StartTime}}`)", [d for d, _ in samples], ""),
        ("the webhook arrived (**the alarm**)", [a for _, a in samples], "≤ 1,000 ms"),
        ("… of which delivery", [a - d for d, a in samples], ""),
    ):
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(
            f"| {label} | {statistics.median(ordered) * 1000:.0f} ms | {p99 * 1000:.0f} ms "
            f"| {ordered[-1] * 1000:.0f} ms | {target} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s idle, 20 checks × 3 alarms")
    parser.add_argument("--idle", type=float, help="seconds of idleness measured (default 60)")
    parser.add_argument("--checks", type=int, help="heartbeat checks never pinged (default 50)")
    parser.add_argument("--alarms", type=int, help="alarms taken from each check (default 4)")
    parser.add_argument("--only", choices=("idle", "alarms"), help="one part only")
    args = parser.parse_args()
    idle = args.idle or (15.0 if args.quick else 60.0)
    checks = args.checks or (20 if args.quick else 50)
    alarms = args.alarms or (3 if args.quick else 4)
    settle = 5.0 if args.quick else 10.0
    print(f"load average before: {load()}")

    if args.only != "alarms":
        idle_table(idle, settle)
    if args.only != "idle":
        alarm_table(checks, alarms)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
