"""Where runs go and how they start: targets chosen by tags among live nodes, group ids,
claims under the cluster's concurrency limits, and starts here (the runner) or on other nodes
(one signed call at a time per node, carrying every run queued for it).

Owns: the runs sent to each node and when (the leases' clock), the overrides of manual runs
(``model.overrides``: kept by group until the group closes, so a run queued under a limit or
retried carries them too; a new leader does not know them), and the runs this node has
started (a repeated request is ignored). May call: ``Shared.submit`` (fenced claims), the
runner, ``Peers.post``, the notifier (pre-run webhooks) and ``Outcomes`` (runs that could not
start).
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dkron_lab import codec
from dkron_lab.batching import Batcher
from dkron_lab.dispatch import Peers
from dkron_lab.errors import ClusterError, ConflictError, DkronError
from dkron_lab.leader import fire_command
from dkron_lab.membership import Liveness, NodeInfo
from dkron_lab.metrics import Metrics
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.model.overrides import RunOverrides, apply_overrides
from dkron_lab.model.targeting import Candidate, select_targets
from dkron_lab.notify import Notifier
from dkron_lab.outcomes import Outcomes
from dkron_lab.runner import Runner
from dkron_lab.scheduler import Fire
from dkron_lab.services import Shared
from dkron_lab.state.commands import Claim, Limits

__all__ = ["Run", "Runs", "http_of"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)  # a datetime's resolution


@dataclass(frozen=True, slots=True)
class Run:
    """One trigger of ``job`` to start on ``targets`` (an ``attempt`` > 1 is a retry)."""

    job: Job
    group: int
    targets: Iterable[str]
    scheduled_at: datetime | None = None
    attempt: int = 1


def http_of(shared: Shared, name: str) -> str:
    """The registered HTTP address of node ``name``."""
    node = shared.state.node(name)
    if node is None:
        raise ClusterError(f"node {name!r} is not registered")
    return str(node["http"])


class Runs:
    def __init__(
        self,
        shared: Shared,
        *,
        runner: Runner,
        peers: Peers,
        liveness: Liveness,
        notifier: Notifier,
        outcomes: Outcomes,
        metrics: Metrics,
        rng: random.Random,
    ) -> None:
        self._shared = shared
        self.name = shared.name
        self._runner = runner
        self._peers = peers
        self._liveness = liveness
        self._notifier = notifier
        self._outcomes = outcomes
        self._metrics = metrics
        self._rng = rng
        self._accepted: dict[tuple[int, int], None] = {}  # (group, attempt) started, newest last
        self._dispatched: dict[tuple[int, str], float] = {}  # (group, target) -> sent at
        self._outboxes: dict[str, Batcher[dict[str, Any], None]] = {}
        self._overrides: dict[int, RunOverrides] = {}  # group -> what its manual run changes
        self._last_group = 0

    # -- choosing ------------------------------------------------------------------------------

    def new_group(self) -> int:
        """A new group id: the clock's time in nanoseconds (the leases read it as the time
        the run was sent, until ``start`` records it), unique on this node."""
        nanoseconds = (self._shared.clock.now() - _EPOCH) // _MICROSECOND * 1000
        self._last_group = max(nanoseconds, self._last_group + 1)
        return self._last_group

    def targets(self, job: Job) -> tuple[str, ...]:
        nodes = [NodeInfo.from_dict(n) for n in self._shared.state.all_nodes()]
        candidates = [
            Candidate(name=n.name, tags=n.tags, region=n.region)
            for n in nodes
            if not n.left and (n.name == self.name or self._liveness.is_alive(n.name))
        ]
        region = self._shared.config.region
        return tuple(select_targets(job.tags, candidates, region=region, rng=self._rng))

    @property
    def limits(self) -> Limits:
        """The cluster-wide concurrency limits: this node's config, overridden by the ones set
        through the API (replicated)."""
        settings, config = self._shared.state.api_limits(), self._shared.config
        overall = settings.get("overall", config.concurrency_limit)
        groups = {**config.concurrency_groups, **settings.get("groups", {})}
        return Limits(overall, {name: n for name, n in groups.items() if n})

    async def claim(self, fires: list[Claim]) -> tuple[list[bool], set[int]]:
        """Claim ``fires`` through Raft: which were won, and which of those wait in the queue
        of the concurrency limits (their runs start when a ``GroupStarted`` says so)."""
        cmd = fire_command(self._shared.state, self.limits, fires)
        result = await self._shared.submit(cmd, fenced=True)
        self._metrics.fired(sum(result["won"]))
        return list(result["won"]), set(result.get("queued", ()))

    def override(self, group: int, overrides: RunOverrides) -> None:
        """Every run of ``group`` (its first start, a queued start, retries) runs its job with
        ``overrides`` (checked against the job by the caller)."""
        if overrides:
            self._overrides[group] = overrides

    def _job_of(self, run: Run) -> Job:
        overrides = self._overrides.get(run.group)
        if overrides is None:
            return run.job
        try:
            return apply_overrides(run.job, overrides)
        except DkronError as exc:  # the job changed executor since the run was asked for
            log.warning("run %d of job %r: overrides dropped: %s", run.group, run.job.name, exc)
            return run.job

    # -- starting ------------------------------------------------------------------------------

    def start_fires(self, fires: list[Fire], *, local: bool, remote: bool) -> None:
        """The leader's claimed fires: start them on their targets; a fire no live node
        could take is recorded failed for the node its claim names."""
        state = self._shared.state
        if local:
            for fire in fires:
                job = state.find_job(fire.job)
                if job is not None and not fire.targets:
                    self._outcomes.untargeted(job, fire.group, fire.scheduled_at)
        runs = []
        for fire in fires:
            job = state.find_job(fire.job)
            if job is not None and fire.targets:
                runs.append(Run(job, fire.group, fire.targets, fire.scheduled_at))
        self.start(runs, local=local, remote=remote)

    def start(self, runs: list[Run], *, local: bool = True, remote: bool = True) -> None:
        """Start every run on its targets: here directly (``local``), elsewhere (``remote``)
        through one call at a time per node carrying all the runs queued for it."""
        for run in runs:
            job = self._job_of(run)
            for target in run.targets:
                here = target == self.name
                if not (local if here else remote):
                    continue
                # A first attempt sent again (a new term restarting open claims) is announced
                # once per leader.
                again = run.attempt == 1 and (run.group, target) in self._dispatched
                self._dispatched[(run.group, target)] = self._shared.clock.now().timestamp()
                if self._notifier.enabled and not again:
                    self._shared.spawn(self._notify_started(run, target))
                if here:
                    self.start_here(job, run.group, run.attempt, run.scheduled_at)
                else:
                    self._outbox(target).add(
                        {
                            "job": codec.job_to_record(job),
                            "group": run.group,
                            "scheduled_at": codec.format_time(run.scheduled_at),
                            "attempt": run.attempt,
                        }
                    )

    def sent_at(self, group: int, target: str) -> float:
        """When the run of ``group`` was sent to ``target`` (its group id's time if never)."""
        return self._dispatched.get((group, target), group / 1e9)

    def forget_sent(self, open_groups: Iterable[int]) -> None:
        """Keep the send times and overrides of the groups still open only."""
        keep = set(open_groups)
        for key in [key for key in self._dispatched if key[0] not in keep]:
            del self._dispatched[key]
        for group in [group for group in self._overrides if group not in keep]:
            del self._overrides[group]

    def _outbox(self, target: str) -> Batcher[dict[str, Any], None]:
        outbox = self._outboxes.get(target)
        if outbox is None:
            send = functools.partial(self._send, target)
            outbox = self._outboxes[target] = Batcher(send)
        return outbox

    async def _send(self, target: str, runs: list[dict[str, Any]]) -> list[None]:
        """One call carries every run queued for ``target`` (many fires a second, spread over
        the second, still make one call at a time per node)."""
        payload = {"runs": runs, "term": self._shared.term()}
        try:
            http = http_of(self._shared, target)
            await self._peers.post(http, "/internal/v1/run", payload, target=target)
        except DkronError as exc:
            log.warning("could not start %d run(s) on %s: %s", len(runs), target, exc)
            for run in runs:
                scheduled_at = codec.parse_time(run["scheduled_at"], "scheduled_at")
                why = f"could not reach it: {exc}"
                self._outcomes.lost(run["job"]["name"], run["group"], target, scheduled_at, why)
        return [None] * len(runs)

    def accept(self, payload: dict[str, Any]) -> None:
        """A leader asks this node to run jobs (``/internal/v1/run``); repeats are ignored."""
        term = self._shared.term()
        if int(payload.get("term", 0)) < term:
            raise ConflictError(
                f"run request from an old leader (term {payload.get('term')} < {term})"
            )
        for run in payload["runs"]:
            job, _ = codec.job_from_json(run["job"])
            scheduled_at = codec.parse_time(run.get("scheduled_at"), "scheduled_at")
            self.start_here(job, int(run["group"]), int(run.get("attempt", 1)), scheduled_at)

    def start_here(self, job: Job, group: int, attempt: int, scheduled_at: datetime | None) -> None:
        """Run ``job`` on this node, on its instant if that is still ahead (claimed early, or
        queued under a limit and let through before it). A run already started here, asked
        for again (a leader settling a claim another term made), is not started twice."""
        if (group, attempt) in self._accepted:
            return
        self._accepted[(group, attempt)] = None
        while len(self._accepted) > 10_000:
            del self._accepted[next(iter(self._accepted))]
        if scheduled_at is not None and scheduled_at > self._shared.clock.now():
            self._shared.spawn(self._start_at(job, group, attempt, scheduled_at))
        else:
            self._runner.execute(job, group=group, attempt=attempt, scheduled_at=scheduled_at)

    async def _start_at(self, job: Job, group: int, attempt: int, scheduled_at: datetime) -> None:
        await self._shared.clock.sleep_until(scheduled_at)
        self._runner.execute(job, group=group, attempt=attempt, scheduled_at=scheduled_at)

    async def _notify_started(self, run: Run, target: str) -> None:
        now = self._shared.clock.now()
        execution = Execution(
            id=f"{run.group}-{target}-{run.attempt}",
            job_name=run.job.name,
            node_name=target,
            group=run.group,
            attempt=run.attempt,
            started_at=max(now, run.scheduled_at or now),
            scheduled_at=run.scheduled_at,
        )
        await self._notifier.started(run.job, execution)
