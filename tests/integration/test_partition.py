"""A real network partition of a 3-server cluster: each ``dkron-lab agent`` runs in a network
namespace of its own (``tests.harness.NamespacedCluster``), and cutting a node's link
silences every packet between it and the others, Raft and HTTP, in both directions.

What must hold (issue 3): the minority side never fires (the claim of a fire goes through Raft
before anything runs, and a partitioned leader steps down, B8), the majority elects a leader
and keeps firing, and once healed the cut-off node rejoins without divergence: every server
holds the same history and the same job definitions.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dkron_lab.scheduler import CLAIM_AHEAD
from dkron_lab.testing import wait_for
from tests.harness import NamespacedCluster, network_namespaces_unavailable

pytestmark = pytest.mark.slow

EVERYWHERE: dict[str, dict[str, str]] = {
    "everywhere-1": {},
    "everywhere-2": {},
}  # no tags: every node runs each fire
ON_SERVERS: dict[str, dict[str, str]] = {
    "servers-1": {"server": "true"},
    "servers-2": {"server": "true"},
}
JOBS: dict[str, dict[str, str]] = EVERYWHERE | ON_SERVERS

# A fire claimed (committed) just before the cut is due at most CLAIM_AHEAD later and may run
# anywhere; anything the cut-off node runs for a later instant it must have claimed itself.
SETTLED = CLAIM_AHEAD + timedelta(milliseconds=300)
RESETTLED = timedelta(seconds=3)  # after a heal: the election it causes is over
ANY = {"s1", "s2", "s3"}


def keygen() -> str:
    command = [sys.executable, "-m", "dkron_lab.cli", "keygen"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NamespacedCluster]:
    unavailable = network_namespaces_unavailable()
    if unavailable is not None:
        pytest.skip(unavailable)
    with NamespacedCluster(tmp_path, servers=3, encrypt=keygen(), log_level="info") as started:
        yield started


def job(name: str, *, command: str = "true") -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1s",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
        "tags": JOBS.get(name, {}),
    }


def create(cluster: NamespacedCluster, server: str, body: dict[str, Any]) -> None:
    response = cluster.http.post(f"{cluster.url(server)}/v1/jobs", json=body)
    assert response.status_code == 201, response.text


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def leader_among(cluster: NamespacedCluster, servers: list[str]) -> str | None:
    """The leader every one of ``servers`` names, if it is one of them."""
    named = {(cluster.get(server, "/v1/leader") or {}).get("Name") for server in servers}
    leader = named.pop() if len(named) == 1 else None
    return leader if leader in servers else None


def is_leader(cluster: NamespacedCluster, server: str) -> bool:
    return cluster.http.get(f"{cluster.url(server)}/v1/isleader").status_code == 200


def ran_since(
    cluster: NamespacedCluster, server: str, job_name: str, nodes: set[str], since: datetime
) -> bool:
    """Whether ``server`` holds a successful run on one of ``nodes`` of an instant after
    ``since``."""
    return any(
        e["success"] and e["node_name"] in nodes and when(e["scheduled_at"]) > since
        for e in cluster.history(server, job_name)
    )


def wait_ran(
    cluster: NamespacedCluster,
    server: str,
    job_name: str,
    nodes: set[str],
    since: datetime,
    what: str,
) -> None:
    """Wait (generously: the machine is shared) until ``ran_since`` holds."""

    def ran() -> bool:
        return ran_since(cluster, server, job_name, nodes, since)

    wait_for(ran, 30, what)


def keeps_firing(cluster: NamespacedCluster, healed: datetime) -> None:
    """Every job fires again well after the heal. The heal itself causes an election: the
    rejoining node's term rose while it campaigned alone, so it deposes the leader (pysyncobj
    has no pre-vote), and a leader deposed and re-elected between claiming a fire and its
    instant must not lose the job's schedule."""
    later = healed + RESETTLED
    for name in JOBS:
        wait_ran(
            cluster,
            cluster.servers[0],
            name,
            ANY,
            later,
            f"the cluster fires {name} again after the heal",
        )


def quiesce(cluster: NamespacedCluster, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Disable every job, then wait until every server holds the same finished executions;
    returns them (job -> executions)."""
    leader = cluster.leader(timeout=30)
    for name in names:
        toggled = cluster.http.post(f"{cluster.url(leader)}/v1/jobs/{name}/toggle")
        assert toggled.status_code == 200 and toggled.json()["disabled"], toggled.text

    def agreed() -> dict[str, list[dict[str, Any]]] | None:
        seen = [{name: cluster.history(s, name) for name in names} for s in cluster.servers]
        views = {frozenset(_rows(found)) for found in seen}
        finished = all(e["finished_at"] for rows in seen[0].values() for e in rows)
        return seen[0] if len(views) == 1 and finished else None

    return wait_for(agreed, 45, "every server holds the same finished executions")


def _rows(found: dict[str, list[dict[str, Any]]]) -> set[tuple[Any, ...]]:
    keys = ("id", "job_name", "node_name", "group", "scheduled_at", "success", "finished_at")
    return {tuple(e[key] for key in keys) for rows in found.values() for e in rows}


def definitions(cluster: NamespacedCluster, server: str) -> dict[str, dict[str, Any]]:
    response = cluster.http.get(f"{cluster.url(server)}/v1/jobs")
    response.raise_for_status()
    return {j["name"]: j for j in response.json()}


def check_fired_once(runs: list[dict[str, Any]]) -> None:
    """Each (job, instant) was claimed once: one group; and ran at most once per node."""
    twice = Counter((e["job_name"], e["scheduled_at"], e["node_name"]) for e in runs)
    assert [key for key, n in twice.items() if n > 1] == []
    groups: dict[tuple[str, str], set[int]] = defaultdict(set)
    for e in runs:
        assert e["scheduled_at"], e
        groups[e["job_name"], e["scheduled_at"]].add(e["group"])
    assert {key: g for key, g in groups.items() if len(g) > 1} == {}


def check_cut_off_ran_nothing(
    runs: list[dict[str, Any]], node: str, cut: datetime, healed: datetime
) -> None:
    """While cut off, ``node`` ran nothing of an instant claimed after the cut: nobody could
    reach it, so such a run would be one it fired itself. (Runs the others recorded for it
    as failed, because it did not answer, are not runs it made.)"""
    own = [
        e
        for e in runs
        if e["node_name"] == node
        and e["success"]
        and when(e["scheduled_at"]) > cut + SETTLED
        and when(e["started_at"]) < healed
    ]
    assert own == [], f"{node} fired while cut off from the cluster"


def check_same_definitions(cluster: NamespacedCluster) -> None:
    views = [definitions(cluster, server) for server in cluster.servers]
    for server, view in zip(cluster.servers[1:], views[1:], strict=True):
        assert view == views[0], f"{server} and {cluster.servers[0]} hold different jobs"


def test_a_cut_off_leader_never_fires_and_rejoins_without_divergence(
    cluster: NamespacedCluster,
) -> None:
    old = cluster.leader()
    majority = [server for server in cluster.servers if server != old]
    for name in JOBS:
        create(cluster, old, job(name))
    started = datetime.now().astimezone()
    for name in JOBS:  # the cluster fires before the cut, everywhere it should
        wait_ran(cluster, old, name, {old}, started, f"{name} runs on the leader {old}")

    cluster.isolate(old)
    cut = datetime.now().astimezone()
    new = wait_for(lambda: leader_among(cluster, majority), 30, f"a leader among {majority}")
    elected = datetime.now().astimezone()
    wait_for(lambda: not is_leader(cluster, old), 15, f"the cut-off leader {old} steps down")
    stepped_down = datetime.now().astimezone()
    for name in JOBS:
        wait_ran(cluster, new, name, set(majority), elected, f"the majority keeps firing {name}")
    time.sleep(max(0.0, 7.0 - (datetime.now().astimezone() - cut).total_seconds()))  # the cut
    healed = datetime.now().astimezone()
    own_view = [e for name in JOBS for e in cluster.history(old, name)]
    cluster.heal()
    check_cut_off_ran_nothing(own_view, old, cut, healed)  # not even in its own history
    print(
        f"cut {old} off; {new} elected after {(elected - cut).total_seconds():.2f} s, "
        f"{old} stepped down within {(stepped_down - cut).total_seconds():.2f} s; "
        f"healed after {(healed - cut).total_seconds():.2f} s"
    )

    cluster.leader(timeout=30)  # every server, the rejoined one too, names the same leader
    keeps_firing(cluster, healed)
    for name in EVERYWHERE:
        wait_ran(cluster, old, name, {old}, healed, f"{old} runs {name} again once healed")
    found = quiesce(cluster, list(JOBS))
    runs = [e for rows in found.values() for e in rows]
    check_fired_once(runs)
    check_cut_off_ran_nothing(runs, old, cut, healed)
    check_same_definitions(cluster)
    on_old = [e for e in runs if e["node_name"] == old and cut < when(e["started_at"]) < healed]
    print(f"{len(runs)} executions; {len(on_old)} recorded for {old} while it was cut off")


def test_a_cut_off_follower_gets_the_jobs_made_meanwhile_and_the_same_history(
    cluster: NamespacedCluster,
) -> None:
    leader = cluster.leader()
    follower = cluster.followers()[0]
    create(cluster, leader, job("everywhere-1"))
    create(cluster, leader, job("servers-1"))
    begun = datetime.now().astimezone()
    wait_ran(
        cluster, follower, "everywhere-1", {follower}, begun, f"everywhere-1 runs on {follower}"
    )

    cluster.isolate(follower)
    cut = datetime.now().astimezone()
    create(cluster, leader, job("everywhere-2"))
    create(cluster, leader, job("servers-2", command="echo made while cut"))
    create(cluster, leader, job("servers-1", command="echo changed while cut"))
    majority = {s for s in cluster.servers if s != follower}
    for name in ("everywhere-2", "servers-2"):
        wait_ran(cluster, leader, name, majority, cut, f"the majority fires {name}")
    assert not is_leader(cluster, follower)
    time.sleep(max(0.0, 5.0 - (datetime.now().astimezone() - cut).total_seconds()))  # the cut
    healed = datetime.now().astimezone()
    cluster.heal()

    cluster.leader(timeout=30)
    keeps_firing(cluster, healed)

    def caught_up() -> bool:
        jobs = definitions(cluster, follower)
        changed = jobs.get("servers-1", {}).get("executor_config", {}).get("command")
        return {"everywhere-2", "servers-2"} <= set(jobs) and changed == "echo changed while cut"

    wait_for(caught_up, 30, f"{follower} holds the jobs made and changed while it was cut off")
    wait_ran(
        cluster,
        follower,
        "everywhere-2",
        {follower},
        healed,
        f"{follower} runs everywhere-2, made while it was cut off",
    )
    found = quiesce(cluster, list(JOBS))
    runs = [e for rows in found.values() for e in rows]
    check_fired_once(runs)
    check_cut_off_ran_nothing(runs, follower, cut, healed)
    check_same_definitions(cluster)
