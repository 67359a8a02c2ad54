"""A real cluster under faults: servers and agents as ``dkron-lab agent`` subprocesses on
loopback (``tests.harness.Cluster``); leaders killed with SIGKILL or hung with SIGSTOP,
agents killed mid-run and started again under the same name, a node with the wrong key.

"No duplicate, no missed" is checked as in ``reference/measured.md`` §5.2: no
(job, scheduled instant, node) is recorded twice whatever the faults; every scheduled instant
outside the leaderless windows is executed; inside them an instant is executed, recorded as
skipped by the catch-up policy, or (counted and printed) absent.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.dispatch import sign
from dkron_lab.membership import HEARTBEAT_TTL
from dkron_lab.model import schedule as schedules
from dkron_lab.scheduler import CLAIM_AHEAD
from dkron_lab.testing import free_port, wait_for
from tests.harness import Cluster

pytestmark = pytest.mark.slow


WORKERS = [{"role": "worker", "pin": "a1"}, {"role": "worker"}]  # agents a1 and a2
EVERYONE = {"s1", "s2", "s3", "a1", "a2"}


def job(name: str, *, schedule: str = "@every 1s", command: str = "true", **fields: Any) -> Any:
    return {
        "name": name,
        "schedule": schedule,
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
        **fields,
    }


def create(cluster: Cluster, server: str, body: dict[str, Any]) -> None:
    response = cluster.http.post(f"{cluster.url(server)}/v1/jobs", json=body)
    assert response.status_code == 201, response.text


def run(cluster: Cluster, server: str, name: str, *, wait: bool = True) -> httpx.Response:
    params = {"wait": "true"} if wait else {}
    return cluster.http.post(f"{cluster.url(server)}/v1/jobs/{name}/run", params=params)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def by_group(runs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for execution in runs:
        groups[execution["group"]].append(execution)
    return groups


def statuses(cluster: Cluster, server: str) -> dict[str, str]:
    return {name: m["statusText"] for name, m in cluster.members(server).items()}


def keygen() -> str:
    command = [sys.executable, "-m", "dkron_lab.cli", "keygen"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """3 servers and 2 agents of its own, for a test that breaks things."""
    with Cluster(tmp_path, servers=3, agents=2, agent_tags=WORKERS) as started:
        yield started


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 servers and 2 agents for the tests that break nothing."""
    base = tmp_path_factory.mktemp("shared")
    with Cluster(base, servers=3, agents=2, agent_tags=WORKERS) as started:
        yield started


# -- failover: each instant once, none missed outside the leaderless windows ---------------------

KINDS: dict[str, tuple[dict[str, str], set[str]]] = {  # tags, and the nodes they may pick
    "worker": ({"role": "worker:1"}, {"a1", "a2"}),
    "pinned": ({"pin": "a1"}, {"a1"}),  # a tag only one agent has
    "all": ({}, EVERYONE),  # no tags: every node, servers included
    "servers": ({"server": "true"}, {"s1", "s2", "s3"}),  # Dkron's reserved tag
}
_ORDER = list(KINDS)
MIXED = {f"{_ORDER[i % 4]}-{i:02d}": _ORDER[i % 4] for i in range(30)}  # job -> kind


@dataclass(frozen=True, kw_only=True)
class Window:
    """From a leader fault to the first fire by the next leader. It opens 1 s before the fault:
    a fire claimed just before it may die with the leader that claimed it."""

    fault: str
    at: float
    recovered: float

    def holds(self, instant: datetime) -> bool:
        return self.at - 1.0 <= instant.timestamp() <= self.recovered


@dataclass(frozen=True, kw_only=True)
class Recorded:
    runs: dict[str, list[dict[str, Any]]]  # job -> executions
    skipped: dict[str, set[datetime]]  # job -> instants recorded as skipped
    ends: dict[str, float]  # job -> when it was disabled


def fault(action: Callable[[str], None], name: str) -> float:
    at = time.time()
    action(name)
    return at


def inflict_faults(cluster: Cluster) -> list[tuple[str, float]]:
    """kill -9 the leader; restart it; kill -9 an agent; SIGSTOP the new leader for 5 s."""
    first = cluster.leader()
    faults = [(f"kill -9 leader {first}", fault(cluster.kill, first))]
    time.sleep(3)
    cluster.start(first)  # back on its data dir, as a follower
    time.sleep(2)
    fault(cluster.kill, "a2")
    time.sleep(6)
    second = cluster.leader()
    faults.append((f"SIGSTOP leader {second}", fault(cluster.stop, second)))
    time.sleep(5)
    cluster.cont(second)
    time.sleep(3)
    return faults


def quiesce(cluster: Cluster) -> Recorded:
    """Disable every job, then wait until every server holds the same history."""
    leader = cluster.leader()
    ends = {}
    for name in MIXED:
        ends[name] = time.time()
        toggled = cluster.http.post(f"{cluster.url(leader)}/v1/jobs/{name}/toggle")
        toggled.raise_for_status()
    time.sleep(2)

    def agreed() -> Recorded | None:
        seen = [recorded(cluster, server, ends) for server in cluster.servers]
        keys = {frozenset(_identity(r)) for r in seen}
        return seen[0] if len(keys) == 1 else None

    return wait_for(agreed, 20, "every server holds the same executions and skipped fires")


def recorded(cluster: Cluster, server: str, ends: dict[str, float]) -> Recorded:
    runs = {name: cluster.history(server, name) for name in MIXED}
    skipped = {}
    for name in MIXED:
        spans = cluster.get(server, f"/v1/jobs/{name}/skipped") or []
        skipped[name] = {at for span in spans for at in _every_second(span)}
    return Recorded(runs=runs, skipped=skipped, ends=ends)


def _identity(found: Recorded) -> set[tuple[Any, ...]]:
    runs = {
        (e["job_name"], e["scheduled_at"], e["node_name"], e["success"])
        for rs in found.runs.values()
        for e in rs
    }
    return runs | {(name, at) for name, ats in found.skipped.items() for at in ats}


def _every_second(span: dict[str, Any]) -> list[datetime]:
    first, last = when(span["first"]), when(span["last"])
    instants = [
        first + timedelta(seconds=s) for s in range(int((last - first).total_seconds()) + 1)
    ]
    assert len(instants) == span["count"], span
    return instants


def expected(name: str, start: float, end: float) -> list[datetime]:
    sched = schedules.parse("@every 1s", job_name=name)
    found: list[datetime] = []
    at = schedules.next_fire(sched, datetime.fromtimestamp(start, UTC))
    while at is not None and at.timestamp() <= end:
        found.append(at)
        at = schedules.next_fire(sched, at)
    return found


def first_fire_after(found: Recorded, at: float) -> float:
    """When the first execution of an instant the NEW leader claimed started. The old leader
    claimed (and sent to the other nodes) every instant up to ``CLAIM_AHEAD`` after the fault,
    so those run on time without any leader: they tell nothing about the failover."""
    after = datetime.fromtimestamp(at, UTC) + CLAIM_AHEAD
    return min(
        when(e["started_at"]).timestamp()
        for rs in found.runs.values()
        for e in rs
        if when(e["scheduled_at"]) > after and when(e["started_at"]) > after
    )


def check_targets(found: Recorded) -> None:
    """Each kind of job ran only where its tags allow (or was recorded as untargeted)."""
    for name, rs in found.runs.items():
        _, allowed = KINDS[MIXED[name]]
        wrong = [
            e
            for e in rs
            if e["node_name"] not in allowed and "no target nodes found" not in e["output"]
        ]
        assert wrong == [], name
        if MIXED[name] == "worker":  # role=worker:1: one node per instant
            per_instant = Counter(e["scheduled_at"] for e in rs)
            assert [at for at, n in per_instant.items() if n > 1] == [], name


def check_instants(found: Recorded, created: float, windows: list[Window]) -> int:
    """Every instant outside the windows executed; returns how many inside were absent."""
    missing, absent = [], 0
    for name, rs in found.runs.items():
        executed = {when(e["scheduled_at"]) for e in rs}
        assert executed.isdisjoint(found.skipped[name]), f"{name}: run and recorded skipped"
        for at in expected(name, created + 2, found.ends[name] - 1):
            inside = any(w.holds(at) for w in windows)
            if at in executed or (inside and at in found.skipped[name]):
                continue
            if inside:
                absent += 1
            else:
                missing.append((name, at.isoformat()))
    assert missing == [], f"instants outside the leaderless windows never ran: {missing[:10]}"
    return absent


@pytest.mark.timeout(150)
def test_failover_runs_each_instant_once_and_misses_none_outside_leaderless_windows(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path, servers=3, agents=2, agent_tags=WORKERS) as cluster:
        leader = cluster.leader()
        for name, kind in MIXED.items():
            create(cluster, leader, job(name, tags=KINDS[kind][0]))
        created = time.time()
        time.sleep(4)
        faults = inflict_faults(cluster)
        found = quiesce(cluster)

    windows = [
        Window(fault=what, at=at, recovered=first_fire_after(found, at)) for what, at in faults
    ]
    for window in windows:
        print(f"{window.fault}: first fire {window.recovered - window.at:.2f} s after")
        assert window.recovered - window.at <= 3.0, window
    runs = [e for rs in found.runs.values() for e in rs]
    twice = Counter((e["job_name"], e["scheduled_at"], e["node_name"]) for e in runs)
    assert [key for key, n in twice.items() if n > 1] == []
    check_targets(found)
    absent = check_instants(found, created, windows)
    # Known: an instant inside a window may be neither run nor recorded skipped (a fire the
    # dead leader had claimed but not yet sent is recorded lost only 30 s later).
    print(f"{len(runs)} executions; {absent} instants inside the windows absent")


# -- reads and runs through a follower -------------------------------------------------------------


def test_a_write_through_a_follower_is_read_from_it_at_once(shared: Cluster) -> None:
    follower = shared.followers()[0]
    url = shared.url(follower)
    for i in range(50):
        create(shared, follower, job(f"rw-{i}", schedule="@manually", command=f"echo {i}"))
        read = shared.http.get(f"{url}/v1/jobs/rw-{i}")
        assert read.status_code == 200, f"write {i} not readable at once (Dkron #1080)"
        assert read.json()["executor_config"]["command"] == f"echo {i}"


def test_a_manual_run_through_a_follower_runs_and_returns(shared: Cluster) -> None:
    follower = shared.followers()[0]
    create(
        shared,
        follower,
        job("by-follower", schedule="@manually", command="echo hello", tags={"pin": "a1"}),
    )
    for _ in range(3):
        response = run(shared, follower, "by-follower")
        assert response.status_code == 200, response.text

    def all_three() -> list[dict[str, Any]] | None:
        runs = shared.history(follower, "by-follower")
        return runs if len(runs) == 3 else None

    runs = wait_for(all_three, 2, "the three runs are in the follower's history")
    assert {(e["node_name"], e["success"], e["output"].strip()) for e in runs} == {
        ("a1", True, "hello")
    }


# -- targeting ---------------------------------------------------------------------------------


def test_value_n_picks_n_live_nodes(shared: Cluster) -> None:
    leader = shared.leader()
    create(shared, leader, job("two-of-five", schedule="@manually", tags={"dc": "dc1:2"}))
    create(shared, leader, job("one-worker", schedule="@manually", tags={"role": "worker:1"}))
    for _ in range(4):
        assert run(shared, leader, "two-of-five").status_code == 200
        assert run(shared, leader, "one-worker").status_code == 200
    for name, count, among in (("two-of-five", 2, EVERYONE), ("one-worker", 1, {"a1", "a2"})):
        groups = by_group(shared.history(leader, name))
        assert len(groups) == 4
        for runs in groups.values():
            nodes = [e["node_name"] for e in runs]
            assert len(set(nodes)) == len(nodes) == count and set(nodes) <= among, nodes
            assert all(e["success"] for e in runs)


def test_a_job_without_tags_runs_on_every_node_servers_included(shared: Cluster) -> None:
    follower = shared.followers()[0]
    create(shared, follower, job("everywhere", schedule="@manually"))
    assert run(shared, follower, "everywhere").status_code == 200
    (runs,) = by_group(shared.history(shared.leader(), "everywhere")).values()
    assert sorted(e["node_name"] for e in runs) == sorted(EVERYONE)
    assert all(e["success"] for e in runs)


def test_a_job_whose_tags_match_no_node_records_a_failed_execution(shared: Cluster) -> None:
    leader = shared.leader()
    create(shared, leader, job("nowhere", tags={"role": "ghost"}))
    try:
        runs = wait_for(lambda: shared.history(leader, "nowhere"), 5, "a recorded execution")
    finally:
        shared.http.delete(f"{shared.url(leader)}/v1/jobs/nowhere").raise_for_status()
    assert runs[0]["success"] is False
    assert "no target nodes found to run job 'nowhere'" in runs[0]["output"]
    assert runs[0]["scheduled_at"]


def test_a_manual_run_that_matches_no_node_is_refused_as_in_dkron(shared: Cluster) -> None:
    follower = shared.followers()[0]
    create(shared, follower, job("ghost-manual", schedule="@manually", tags={"role": "ghost"}))
    refused = run(shared, follower, "ghost-manual")
    assert refused.status_code == 404
    assert "no target nodes found to run job 'ghost-manual'" in refused.json()["error"]


# -- nodes that die, hang or come back ---------------------------------------------------------


def test_an_agent_killed_mid_run_is_recorded_failed_and_its_forbid_job_runs_again(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    body = job("long", schedule="@manually", command="echo started; sleep 20", tags={"pin": "a1"})
    create(cluster, leader, body | {"concurrency": "forbid"})
    assert run(cluster, leader, "long", wait=False).status_code == 202

    def live() -> list[dict[str, Any]] | None:
        busy = cluster.get(cluster.followers()[0], "/v1/busy") or []
        return [e for e in busy if e["node_name"] == "a1" and "started" in e["output"]] or None

    (running,) = wait_for(live, 5, "the run on a1 is live in /v1/busy, with its output")
    killed = time.monotonic()
    cluster.kill("a1")
    (lost,) = wait_for(lambda: cluster.history(leader, "long"), HEARTBEAT_TTL + 3, "recorded")
    print(f"recorded failed {time.monotonic() - killed:.1f} s after the kill")
    assert lost["success"] is False and lost["group"] == running["group"]
    assert "node a1 stopped answering heartbeats" in lost["output"]
    assert "outcome of this execution is unknown" in lost["output"]

    cluster.start("a1")  # its own orphan report must not record the run a second time
    create(
        cluster,
        leader,
        job("long", schedule="@manually", command="echo again", tags={"pin": "a1"})
        | {"concurrency": "forbid"},
    )
    again = run(cluster, leader, "long")
    assert again.status_code == 200, again.text

    def both() -> list[dict[str, Any]] | None:
        runs = cluster.history(leader, "long")
        return runs if len(runs) >= 2 else None

    runs = wait_for(both, 2, "the second run is recorded")
    outcomes = sorted((e["success"], e["output"].strip()) for e in runs)
    assert len(runs) == 2 and outcomes[-1] == (True, "again"), runs


def test_members_and_leader_agree_on_every_server_after_a_kill(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = cluster.followers()[0]
    cluster.kill(follower)
    cluster.kill("a2")
    survivors = [s for s in cluster.servers if s != follower]
    expected = dict.fromkeys(EVERYONE, "alive") | {follower: "failed", "a2": "failed"}

    def all_agree() -> bool:
        return all(statuses(cluster, server) == expected for server in survivors)

    wait_for(all_agree, HEARTBEAT_TTL + 3, f"every server shows {expected}")
    leaders = {cluster.get(server, "/v1/leader")["Name"] for server in survivors}
    assert leaders == {leader}
    assert cluster.get(leader, "/v1/isleader") == "I am a leader"

    cluster.start(follower)
    cluster.start("a2")
    leader = cluster.leader()  # every server names it
    for server in cluster.servers:
        assert statuses(cluster, server) == dict.fromkeys(EVERYONE, "alive")


def test_a_stale_name_rejoining_on_a_new_address_gets_the_runs(cluster: Cluster) -> None:
    leader = cluster.leader()
    old = cluster.members(leader)["a1"]["Port"]
    cluster.kill("a1")
    new = free_port()
    cluster.start("a1", http_port=new)

    def moved() -> bool:
        views = [cluster.members(server)["a1"] for server in cluster.servers]
        return all((m["Port"], m["statusText"]) == (new, "alive") for m in views)

    wait_for(moved, 15, f"every server shows a1 alive on port {new}, not {old}")
    create(
        cluster,
        leader,
        job("pinned", schedule="@manually", command="echo here", tags={"pin": "a1"}),
    )
    assert run(cluster, cluster.followers()[0], "pinned").status_code == 200
    (execution,) = cluster.history(leader, "pinned")
    assert (execution["node_name"], execution["success"]) == ("a1", True)
    assert execution["output"].strip() == "here"


# A hung server (SIGSTOP) does not make the other nodes look failed: each beat goes to each
# server on its own, in fake time in tests/unit/test_roster.py
# (test_a_hung_server_does_not_delay_the_beats_to_the_others).


# -- the cluster key -------------------------------------------------------------------------------


def test_a_node_with_another_key_never_joins_nor_runs_anything(tmp_path: Path) -> None:
    key = keygen()
    with Cluster(
        tmp_path, servers=3, agents=1, agent_tags=[{"role": "worker"}], encrypt=key
    ) as cluster:
        leader = cluster.leader()
        cluster.add_agent("intruder", tags={"role": "worker"}, encrypt=keygen(), wait=False)
        create(cluster, leader, job("everywhere", schedule="@manually"))
        create(cluster, leader, job("workers", tags={"role": "worker"}))
        wait_for(lambda: len(cluster.history(leader, "workers")) >= 4, 15, "4 runs of workers")
        assert run(cluster, cluster.followers()[0], "everywhere").status_code == 200
        for server in cluster.servers:
            assert statuses(cluster, server) == dict.fromkeys(["a1", "s1", "s2", "s3"], "alive")
            assert cluster.get(server, "/v1/leader")["Name"] == leader
        (everywhere,) = by_group(cluster.history(leader, "everywhere")).values()
        assert sorted(e["node_name"] for e in everywhere) == ["a1", "s1", "s2", "s3"]
        workers = cluster.history(leader, "workers")
        assert len(workers) >= 4 and {e["node_name"] for e in workers} == {"a1"}
        assert all(e["success"] for e in workers)

        url = f"{cluster.url('a1')}/internal/v1/run"
        body = b'{"job":{},"group":1,"term":99}'
        forged = sign(
            b"not the cluster key",
            method="POST",
            path="/internal/v1/run",
            target="a1",
            body=body,
            now=time.time(),
        )
        json_type = {"Content-Type": "application/json"}
        for headers in (json_type, json_type | forged):
            refused = cluster.http.post(url, content=body, headers=headers)
            assert refused.status_code == 401, refused.text
