"""One partition-heal trial (issue 15): cut the leader of a namespaced cluster off, heal it, and
account for every instant of every job.

Shared by ``test_partition_heal.py`` (one short trial) and ``benchmarks/bench_partition.py``
(many long ones). It lives beside the tests because it is test code, not part of the package;
``tests`` has no ``__init__.py``, so pytest's default ``prepend`` import mode puts this folder on
``sys.path`` and the test imports it as ``partition_trial`` (as the Raft tests import
``raft_child``); the benchmark puts ``tests/integration`` on ``sys.path`` itself.

The workload: 3 servers and 2 agents tagged ``role=worker``, each in a network namespace of its
own (``tests.harness.NamespacedCluster``); jobs ``@every 1s`` with ``role: worker:1`` (each
fire on one of the workers) and ``role: worker`` (on both). Every run appends
``<job> <execution id>`` to a ledger file in the trial's directory (the namespaces share the
filesystem); the execution id (``<started ns>-<node>``) leads to the run's scheduled instant and
group in the servers' histories. The ledger is the truth of what ran: a history row says what a
server believes.

The trial: steady state, the leader's link down for ``cut`` seconds, heal, ``after`` seconds
more, disable every job, wait until every server holds the same finished history. Then for each
job, every instant from its first run to the disable is *run* (a ledger line), *skipped* (in a
``/v1/jobs/<job>/skipped`` span), or *missed*. Misses are allowed only while no leader could
claim: from ``CLAIM_AHEAD`` before the cut (a claim made just before may not reach its agent)
until the majority's new leader was seen, plus ``CLAIM_AHEAD`` and ``margin``.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dkron_lab.scheduler import CLAIM_AHEAD
from dkron_lab.testing import wait_for
from tests.harness import NamespacedCluster, new_cluster_key

__all__ = ["ALL_WORKERS", "ONE_WORKER", "Miss", "TrialResult", "run_trial"]

WORKERS = {"a1", "a2"}
ONE_WORKER = ("one-1", "one-2")  # tags role: worker:1
ALL_WORKERS = ("all-1", "all-2")  # tags role: worker
AHEAD = CLAIM_AHEAD.total_seconds()


@dataclass(frozen=True, kw_only=True)
class Miss:
    """An instant of a job that should have run on ``nodes`` and did not."""

    job: str
    instant: int  # Unix seconds
    nodes: tuple[str, ...]  # where it is missing ("any" for a one-worker job)
    recorded: str  # what the history says about it, if anything

    def describe(self, cut: float) -> str:
        return (
            f"{self.job} @{self.instant} (cut{self.instant - cut:+.1f} s) "
            f"on {','.join(self.nodes)}: {self.recorded or 'no record'}"
        )


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    """What one trial found. Times are Unix seconds; ``cut`` is when the link went down."""

    seed: int
    base_dir: str
    old_leader: str
    new_leader: str
    cut: float
    elected: float  # when the majority was first seen agreeing on a leader
    healed: float
    instants: int  # (job, instant) pairs checked
    runs: int  # ledger lines
    missed_in_window: tuple[Miss, ...]
    missed_outside: tuple[Miss, ...]
    skipped: int
    skipped_outside: int
    doubled: tuple[str, ...]
    unrecorded: int  # ledger lines whose execution no history holds
    identical: bool
    terms_at_heal: Mapping[str, int]
    terms_after: Mapping[str, int]
    samples: tuple[tuple[float, str, int, str], ...] = ()  # (time, server, term, state) changes

    @property
    def term_changes(self) -> list[str]:
        """Each change of a server's term or state from the cut on, timed from the heal."""
        return [
            f"{when - self.healed:+.2f} s {server} term {term} ({state})"
            for when, server, term, state in self.samples
        ]

    @property
    def leaderless(self) -> float:
        return self.elected - self.cut

    @property
    def majority(self) -> list[str]:
        return sorted(s for s in self.terms_at_heal if s != self.old_leader)

    @property
    def term_rise(self) -> int:
        """How far the heal raised the majority's term (0: its leader was left alone)."""
        before = max(self.terms_at_heal[s] for s in self.majority)
        return max(self.terms_after.get(s, before) for s in self.majority) - before

    @property
    def elections_after_heal(self) -> int:
        """New terms seen on the majority after the heal (sampled every 0.2 s: rounds in quick
        succession count once; ``term_rise`` bounds them from above)."""
        before = max(self.terms_at_heal[s] for s in self.majority)
        return len({t for _, s, t, _ in self.samples if s in self.majority and t > before})

    @property
    def terms_unchanged(self) -> bool:
        return self.term_rise == 0

    @property
    def ok(self) -> bool:
        return (
            not self.missed_outside and not self.doubled and self.identical and self.terms_unchanged
        )

    def summary(self) -> str:
        return (
            f"seed {self.seed}: cut {self.old_leader}, {self.new_leader} elected after "
            f"{self.leaderless:.2f} s; {self.instants} instants, {self.runs} runs; missed "
            f"{len(self.missed_in_window)} in window, {len(self.missed_outside)} outside; "
            f"skipped {self.skipped} ({self.skipped_outside} outside); doubled "
            f"{len(self.doubled)}; identical {self.identical}; elections after heal "
            f"{self.elections_after_heal} (term +{self.term_rise}); terms at heal "
            f"{dict(self.terms_at_heal)} -> {dict(self.terms_after)}"
        )


def job_body(name: str, ledger: Path) -> dict[str, Any]:
    worker = "worker:1" if name in ONE_WORKER else "worker"
    return {
        "name": name,
        "schedule": "@every 1s",
        "executor": "shell",
        "executor_config": {
            "command": f'echo "$DKRON_JOB_NAME $DKRON_EXECUTION_ID" >> "{ledger}"',
            "shell": "true",
        },
        "tags": {"role": worker},
    }


# -- driving the cluster -------------------------------------------------------------------------


def raft_view(cluster: NamespacedCluster, server: str) -> tuple[int, str] | None:
    """(term, state) as ``server`` reports them on ``GET /v1``."""
    status = cluster.get(server, "/v1")
    if not isinstance(status, dict):
        return None
    return int(status["raft"]["term"]), str(status["raft"]["state"])


def terms(cluster: NamespacedCluster) -> dict[str, int]:
    return {s: view[0] for s in cluster.servers if (view := raft_view(cluster, s)) is not None}


def leader_among(cluster: NamespacedCluster, servers: list[str]) -> str | None:
    """The leader every one of ``servers`` names, if it is one of them."""
    named = {(cluster.get(server, "/v1/leader") or {}).get("Name") for server in servers}
    leader = named.pop() if len(named) == 1 else None
    return leader if leader in servers else None


class TermWatch:
    """Samples every server's term and state on a thread, keeping each change."""

    def __init__(self, cluster: NamespacedCluster) -> None:
        self._cluster = cluster
        self._stop = threading.Event()
        self._last: dict[str, tuple[int, str]] = {}
        self.changes: list[tuple[float, str, int, str]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for server in self._cluster.servers:
                view = raft_view(self._cluster, server)
                if view is not None and view != self._last.get(server):
                    self._last[server] = view
                    self.changes.append((time.time(), server, *view))

    @contextlib.contextmanager
    def running(self) -> Iterator[TermWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)


def sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()))


def read_ledger(ledger: Path) -> list[tuple[str, str]]:
    if not ledger.exists():
        return []
    lines = ledger.read_text().splitlines()
    return [(parts[0], parts[1]) for line in lines if len(parts := line.split()) == 2]


def disable(cluster: NamespacedCluster, names: tuple[str, ...]) -> float:
    """Disable every job through the leader; returns when the first toggle was sent."""
    leader = cluster.leader(timeout=30)
    sent = time.time()
    for name in names:
        toggled = cluster.http.post(f"{cluster.url(leader)}/v1/jobs/{name}/toggle")
        toggled.raise_for_status()
        if not toggled.json()["disabled"]:
            raise RuntimeError(f"toggling {name} enabled it: {toggled.text}")
    return sent


def quiesce(
    cluster: NamespacedCluster, names: tuple[str, ...], timeout: float
) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """Wait until every server holds the same finished executions; returns one server's view,
    and whether they agreed within ``timeout``."""
    keys = ("id", "job_name", "node_name", "group", "scheduled_at", "success", "finished_at")
    seen: list[dict[str, list[dict[str, Any]]]] = []

    def agreed() -> bool:
        seen[:] = [{n: cluster.history(s, n) for n in names} for s in cluster.servers]
        views = {
            frozenset(tuple(e[k] for k in keys) for rows in found.values() for e in rows)
            for found in seen
        }
        finished = all(e["finished_at"] for found in seen for r in found.values() for e in r)
        return len(views) == 1 and finished

    try:
        wait_for(agreed, timeout, "every server holds the same finished executions")
    except TimeoutError:
        return seen[0], False
    return seen[0], True


def skipped_spans(cluster: NamespacedCluster, name: str) -> list[tuple[int, int, str]]:
    """(first, last, reason) of the job's skipped spans, as any server recorded them."""
    spans: set[tuple[int, int, str]] = set()
    for server in cluster.servers:
        for span in cluster.get(server, f"/v1/jobs/{name}/skipped") or []:
            first, last = (round(_unix(span[k])) for k in ("first", "last"))
            spans.add((first, last, str(span["reason"])))
    return sorted(spans)


def _unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- the trial ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Timeline:
    old: str = ""
    new: str = ""
    cut: float = 0.0
    elected: float = 0.0
    healed: float = 0.0
    disabled: float = 0.0
    terms_at_heal: dict[str, int] = field(default_factory=dict)


def run_trial(
    base_dir: Path,
    *,
    seed: int,
    cut: float = 15.0,
    steady: float = 3.0,
    after: float = 12.0,
    margin: float = 0.5,
) -> TrialResult:
    """Start a fresh cluster in ``base_dir``, run the scenario, check it, close the cluster.

    ``seed`` picks the phase of the second at which the link goes down.
    """
    rng = random.Random(seed)
    ledger = base_dir / "ledger.txt"
    names = ONE_WORKER + ALL_WORKERS
    options: dict[str, Any] = {"servers": 3, "agents": 2, "log_level": "info"}
    options["agent_tags"] = [{"role": "worker"}] * 2
    with NamespacedCluster(base_dir, encrypt=new_cluster_key(), **options) as cluster:
        line = _Timeline(old=cluster.leader())
        for name in names:
            created = cluster.http.post(
                f"{cluster.url(line.old)}/v1/jobs", json=job_body(name, ledger)
            )
            created.raise_for_status()
        wait_for(lambda: {j for j, _ in read_ledger(ledger)} >= set(names), 30, "every job runs")
        time.sleep(steady + rng.random())
        with TermWatch(cluster).running() as watch:
            _partition(cluster, line, cut)
            sleep_until(line.healed + after)
        line.disabled = disable(cluster, names)
        time.sleep(1.0)  # runs claimed just before the disable finish
        histories, identical = quiesce(cluster, names, timeout=45)
        spans = {name: skipped_spans(cluster, name) for name in names}
        terms_after = terms(cluster)
    return _check(
        line,
        seed=seed,
        base_dir=base_dir,
        ledger=read_ledger(ledger),
        histories=histories,
        spans=spans,
        identical=identical,
        terms_after=terms_after,
        changes=watch.changes,
        margin=margin,
    )


def _partition(cluster: NamespacedCluster, line: _Timeline, cut: float) -> None:
    majority = [s for s in cluster.servers if s != line.old]
    cluster.isolate(line.old)
    line.cut = time.time()
    line.new = wait_for(lambda: leader_among(cluster, majority), 30, f"a leader of {majority}")
    line.elected = time.time()
    sleep_until(line.cut + cut)
    line.terms_at_heal = terms(cluster)
    cluster.heal()
    line.healed = time.time()


# -- the checker --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Run:
    job: str
    node: str
    instant: int
    group: int | None
    recorded: bool


def _runs(ledger: list[tuple[str, str]], rows: dict[str, dict[str, Any]]) -> list[_Run]:
    """Each ledger line with its instant: from the history, else from its start (runs start
    on their instant)."""
    runs = []
    for job, execution in ledger:
        row = rows.get(execution)
        started_ns, _, node = execution.partition("-")
        if row is not None and row["scheduled_at"]:
            instant, group = round(_unix(row["scheduled_at"])), int(row["group"])
        else:
            instant, group = math.floor(int(started_ns) / 1e9 + 0.1), None
        runs.append(_Run(job=job, node=node, instant=instant, group=group, recorded=bool(row)))
    return runs


def _doubled(runs: list[_Run], rows: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    twice = Counter((r.job, r.instant, r.node) for r in runs)
    found += [f"{j} @{i} ran {n} times on {node}" for (j, i, node), n in twice.items() if n > 1]
    nodes: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in runs:
        nodes[r.job, r.instant].add(r.node)
    found += [
        f"{j} @{i} ran on {sorted(on)}"
        for (j, i), on in nodes.items()
        if j in ONE_WORKER and len(on) > 1
    ]
    groups: dict[tuple[str, int], set[int]] = defaultdict(set)
    for row in rows.values():
        if row["scheduled_at"]:
            groups[row["job_name"], round(_unix(row["scheduled_at"]))].add(int(row["group"]))
    found += [
        f"{j} @{i} claimed as groups {sorted(g)}" for (j, i), g in groups.items() if len(g) > 1
    ]
    return sorted(found)


def _misses(
    job: str,
    runs: list[_Run],
    spans: list[tuple[int, int, str]],
    rows: list[dict[str, Any]],
    last: int,
) -> tuple[list[Miss], list[int], int]:
    """The job's missed instants, its skipped instants, and how many instants were checked:
    from its first run to ``last``."""
    ran: dict[int, set[str]] = defaultdict(set)
    for r in runs:
        if r.job == job:
            ran[r.instant].add(r.node)
    if not ran:
        return [], [], 0
    recorded: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        if row["scheduled_at"] and not row["success"]:
            note = f"{row['node_name']}: {row['output'].strip()[:120]}"
            recorded[round(_unix(row["scheduled_at"]))].append(note)
    misses, skipped = [], []
    for instant in range(min(ran), last + 1):
        if any(first <= instant <= end for first, end, _ in spans):
            skipped.append(instant)
            continue
        wanted = {"any"} if job in ONE_WORKER else WORKERS
        missing = set() if (job in ONE_WORKER and ran[instant]) else wanted - ran[instant]
        if missing:
            note = "; ".join(recorded.get(instant, []))
            misses.append(
                Miss(job=job, instant=instant, nodes=tuple(sorted(missing)), recorded=note)
            )
    return misses, skipped, max(0, last + 1 - min(ran))


def _check(
    line: _Timeline,
    *,
    seed: int,
    base_dir: Path,
    ledger: list[tuple[str, str]],
    histories: dict[str, list[dict[str, Any]]],
    spans: dict[str, list[tuple[int, int, str]]],
    identical: bool,
    terms_after: dict[str, int],
    changes: list[tuple[float, str, int, str]],
    margin: float,
) -> TrialResult:
    rows = {e["id"]: e for found in histories.values() for e in found}
    runs = _runs(ledger, rows)
    window = (line.cut - AHEAD, line.elected + AHEAD + margin)
    last = math.floor(line.disabled) - 1
    inside: list[Miss] = []
    outside: list[Miss] = []
    skipped = skipped_outside = instants = 0
    for job in histories:
        misses, which, checked = _misses(job, runs, spans[job], histories[job], last)
        instants += checked
        skipped += len(which)
        skipped_outside += sum(1 for i in which if not window[0] <= i <= window[1])
        for miss in misses:
            (inside if window[0] <= miss.instant <= window[1] else outside).append(miss)
    return TrialResult(
        seed=seed,
        base_dir=str(base_dir),
        old_leader=line.old,
        new_leader=line.new,
        cut=line.cut,
        elected=line.elected,
        healed=line.healed,
        instants=instants,
        runs=len(runs),
        missed_in_window=tuple(inside),
        missed_outside=tuple(sorted(outside, key=lambda m: (m.instant, m.job))),
        skipped=skipped,
        skipped_outside=skipped_outside,
        doubled=tuple(_doubled(runs, rows)),
        unrecorded=sum(1 for r in runs if not r.recorded),
        identical=identical,
        terms_at_heal=dict(line.terms_at_heal),
        terms_after=terms_after,
        samples=tuple(change for change in changes if change[0] >= line.cut),
    )
