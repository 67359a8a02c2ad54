"""Leader failover on a 3-server cluster: kill -9 the leader, time the new leader's first fire.

    python benchmarks/bench_failover.py             # 20 trials (about 4 minutes)
    python benchmarks/bench_failover.py --quick     # 3 trials
    python benchmarks/bench_failover.py --trials 50 --seed 7

Three `dkron-lab agent --server` processes on loopback (``tests.harness.Cluster``), a few
``@every 1s`` jobs running ``true`` on the servers. Each trial:

1. steady state, then ``kill -9`` the leader at a random phase of the second;
2. **election**: until both survivors name the same new leader (polled over ``/v1/leader``);
3. **first fire**: until the earliest ``started_at`` of an execution, on a survivor, of an
   instant scheduled after the kill (the issue's measure: target median <= 1.5 s, max <= 5 s);
4. restart the killed server on its data dir and ports; **catch-up**: until it is registered
   alive everywhere and has applied the leader's commit index.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dkron_lab.scheduler import CLAIM_AHEAD
from tests.harness import Cluster

JOBS = [f"tick-{i}" for i in range(5)]
TARGET_MEDIAN = 1.5
TARGET_MAX = 5.0


@dataclass(frozen=True, kw_only=True)
class Trial:
    killed: str
    elected: str
    election: float  # seconds from the kill
    first_fire: float
    catch_up: float  # seconds from the restart


def setup(cluster: Cluster) -> None:
    leader = cluster.url(cluster.leader())
    for name in JOBS:
        body = {
            "name": name,
            "schedule": "@every 1s",
            "executor": "shell",
            "executor_config": {"command": "true"},
            "tags": {"server": "true"},
        }
        cluster.http.post(f"{leader}/v1/jobs", json=body).raise_for_status()


def first_fire(cluster: Cluster, server: str, after: float, timeout: float = 15.0) -> float:
    """Earliest start, in ``server``'s history, of a successful run the new leader claimed.

    The old leader claimed every instant up to ``CLAIM_AHEAD`` after the kill and sent those
    runs to the other servers, which start them on time: they are not the new leader's."""
    since = datetime.fromtimestamp(after, UTC) + CLAIM_AHEAD
    deadline = time.monotonic() + timeout
    found: list[float] = []
    while time.monotonic() < deadline:
        starts = [
            datetime.fromisoformat(e["started_at"]).timestamp()
            for name in JOBS
            for e in cluster.history(server, name)
            if e["success"]
            and e["scheduled_at"]
            and datetime.fromisoformat(e["scheduled_at"]) > since
            and datetime.fromisoformat(e["started_at"]) > since
        ]
        if found and starts:
            return min(found + starts)  # read twice: a later run may be recorded first
        found = starts
        time.sleep(0.5)
    raise TimeoutError(f"no fire after the kill within {timeout:g} s")


def caught_up(cluster: Cluster, restarted: str, leader: str, timeout: float = 60.0) -> None:
    """Until ``restarted`` has applied what the leader had committed when this was called."""
    target = int(cluster.get(leader, "/v1")["raft"]["commit_index"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cluster.get(restarted, "/v1")
        if status is not None and int(status["raft"]["applied_index"]) >= target:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{restarted} did not catch up with {leader} within {timeout:g} s")


def trial(cluster: Cluster, rng: random.Random) -> Trial:
    old = cluster.leader()
    time.sleep(2.0 + rng.random())
    killed_at = time.time()
    cluster.kill(old)
    new = cluster.leader(timeout=30)
    election = time.time() - killed_at
    fired = first_fire(cluster, new, killed_at) - killed_at
    restarted_at = time.time()
    cluster.start(old)  # waits until it is registered alive on every server
    caught_up(cluster, old, cluster.leader())
    catch_up = time.time() - restarted_at
    return Trial(killed=old, elected=new, election=election, first_fire=fired, catch_up=catch_up)


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def print_table(trials: Sequence[Trial]) -> None:
    print("| trial | killed | new leader | election s | first fire s | restart caught up s |")
    print("|---|---|---|---|---|---|")
    for i, t in enumerate(trials, 1):
        print(
            f"| {i} | {t.killed} | {t.elected} | {t.election:.2f} | {t.first_fire:.2f} "
            f"| {t.catch_up:.2f} |"
        )
    print()
    print("| measure | median | p90 | max |")
    print("|---|---|---|---|")
    for label, values in (
        ("kill -9 → leader agreed by survivors", [t.election for t in trials]),
        ("kill -9 → first fire by the new leader", [t.first_fire for t in trials]),
        ("restart → caught up", [t.catch_up for t in trials]),
    ):
        print(
            f"| {label} | {statistics.median(values):.2f} s | {p90(values):.2f} s "
            f"| {max(values):.2f} s |"
        )
    fires = [t.first_fire for t in trials]
    verdict = statistics.median(fires) <= TARGET_MEDIAN and max(fires) <= TARGET_MAX
    print(
        f"\ntarget (median <= {TARGET_MEDIAN} s, max <= {TARGET_MAX} s): "
        f"{'met' if verdict else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="kills to measure (default 20)")
    parser.add_argument("--quick", action="store_true", help="3 trials")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill phases")
    args = parser.parse_args()
    trials = 3 if args.quick else args.trials
    rng = random.Random(args.seed)
    print(f"# dkron-lab failover benchmark ({os.cpu_count()} cores, {trials} trials)", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as base, Cluster(base, servers=3) as cluster:
        setup(cluster)
        for i in range(trials):
            results.append(trial(cluster, rng))
            print(f"trial {i + 1}: first fire {results[-1].first_fire:.2f} s", flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
