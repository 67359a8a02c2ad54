"""The composition root: one node built from one ``Config``.

It wires the replicated state (pysyncobj, through ``state.raft``), the execution history
(DuckDB), the schedule index and the leader's scheduler, the runner and the plugins, and offers
the operations the API, the CLI and the Jupyter extension call (the "facade").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import math
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Any

from dkron_lab import codec, credentials
from dkron_lab._version import __version__
from dkron_lab.batching import Batcher
from dkron_lab.clock import Clock, SystemClock
from dkron_lab.config import Config, split_host_port
from dkron_lab.credentials import secure_data_dir
from dkron_lab.dispatch import Peers, Verifier, cluster_key
from dkron_lab.errors import (
    BadRequest,
    ClusterError,
    ConflictError,
    DkronError,
    ExecutionNotFound,
    InsufficientStorage,
    NotFoundError,
    error_class,
)
from dkron_lab.history.copy import HistoryCopy
from dkron_lab.history.duckdb import DuckDBHistory, SqlLimits
from dkron_lab.leader import CatchUpSettings, Leader, fire_command
from dkron_lab.membership import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TTL,
    Liveness,
    NodeInfo,
    lost_runs,
)
from dkron_lab.metrics import Gauges, Metrics
from dkron_lab.model import schedule, secrets
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job, JobStats, validate_job
from dkron_lab.model.targeting import Candidate, select_targets
from dkron_lab.notify import Notifier, check_notify_on
from dkron_lab.plugins import PluginRegistry
from dkron_lab.runner import Runner
from dkron_lab.scheduler import Fire, ScheduleIndex
from dkron_lab.state.machine import (
    ChildrenDue,
    Event,
    ExecutionFinished,
    ExecutionsCleared,
    FireClaimed,
    FiresSkipped,
    GroupFinished,
    GroupStarted,
    JobChanged,
    JobState,
    Limits,
    RetryDue,
    StateRestored,
    command,
    copy_group,
)
from dkron_lab.state.raft import RaftNode, RaftSettings

__all__ = ["JobQuery", "JobView", "Node", "run_agent", "settle_heap", "tune_interpreter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Run:
    """One trigger of ``job`` to start on ``targets`` (an ``attempt`` > 1 is a retry)."""

    job: Job
    group: int
    targets: Iterable[str]
    scheduled_at: datetime | None = None
    attempt: int = 1


_SORT_KEYS: dict[str, Callable[[JobView], Any]] = {
    "name": lambda v: v.job.name,
    "displayname": lambda v: v.job.displayname,
    "schedule": lambda v: v.job.schedule,
    "success_count": lambda v: v.stats.success_count,
    "error_count": lambda v: v.stats.error_count,
    "last_success": lambda v: (v.stats.last_success is not None, v.stats.last_success),
    "last_error": lambda v: (v.stats.last_error is not None, v.stats.last_error),
    "next": lambda v: (v.next_fire is not None, v.next_fire),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobView:
    """A job as the API shows it: definition, counters, next fire, children."""

    job: Job
    stats: JobStats
    next_fire: datetime | None
    dependent_jobs: tuple[str, ...] = ()

    @property
    def zone(self) -> tzinfo:
        return schedule.zone(self.job.timezone)

    def to_json(self) -> dict[str, Any]:
        """What a read shows: secrets masked."""
        shown = codec.job_to_json(
            self.job,
            self.stats,
            next_fire=self.next_fire,
            dependent_jobs=list(self.dependent_jobs),
            zone=self.zone,
        )
        shown["executor_config"] = secrets.masked_config(self.job)
        return shown


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    """``GET /v1/jobs`` parameters, parsed."""

    q: str = ""
    status: str | None = None
    disabled: bool | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    sort: str = "name"
    order: str = "ASC"
    start: int = 0
    end: int | None = None

    def matches(self, job: Job, stats: JobStats) -> bool:
        needle = self.q.lower()
        if needle and needle not in job.name.lower() and needle not in job.displayname.lower():
            return False
        if self.disabled is not None and job.disabled != self.disabled:
            return False
        if self.status is not None and (stats.status or "untriggered") != self.status:
            return False
        return all(job.metadata.get(k) == v for k, v in self.metadata.items())

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.metadata) or self.status is not None or self.disabled is not None


class Node:
    """One dkron-lab node: a server (Raft voter, scheduler when leader) that also runs jobs."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        registry: PluginRegistry | None = None,
        rng: random.Random | None = None,
        raft_tuning: Mapping[str, Any] | None = None,
    ) -> None:
        """``raft_tuning`` overrides fields of the :class:`RaftSettings` built from ``config``
        (e.g. ``compaction_min_entries``, so a test can make the leader send snapshots)."""
        self.config = config
        self.name = config.node_name
        if not __debug__:
            raise credentials.ConfigError(
                "dkron-lab does not run under python -O: pysyncobj checks the cluster key of "
                "each connection with an assert, which -O removes; start it without -O"
            )
        secure_data_dir(config.data_dir)
        self.encrypt = credentials.cluster_key(config)
        self.api_token = credentials.api_token(config)
        self.clock = clock or SystemClock()
        self.registry = registry or PluginRegistry()
        self.state = JobState()
        self.index = ScheduleIndex()
        self.history = DuckDBHistory(
            config.data_dir / "history.duckdb",
            retention=config.history_retention,
            sql_limits=SqlLimits(
                memory=config.sql_memory_limit,
                temp=config.sql_temp_limit,
                max_bytes=config.sql_max_bytes,
                max_queries=config.sql_max_queries,
            ),
        )
        settings = replace(_raft_settings(config, self.encrypt), **(raft_tuning or {}))
        secure_data_dir(settings.data_dir)  # the journal holds every job's secrets
        for path in settings.data_dir.iterdir():  # new files are 0600; an older version's were not
            if path.is_file() and not path.is_symlink():
                credentials.keep_private(path)
        self.raft = RaftNode(
            settings, self.state, on_leadership=self._on_leadership, on_knock=self._on_knock
        )
        self.runner = Runner(
            node_name=self.name,
            registry=self.registry,
            clock=self.clock,
            report=self._ran,
            output_limit=config.output_limit,
            concurrency=config.executor_concurrency,
            limits=config.executor_limits,
            on_start=self._started_here,
            hidden=frozenset(value for value in (self.api_token, self.encrypt) if value),
        )
        self.role = "server" if config.server else "agent"
        self.liveness = Liveness()
        self.cluster_key = cluster_key(self.encrypt)
        self.peers = Peers(self.cluster_key, tls=config.tls_cert is not None, tls_ca=config.tls_ca)
        self.verifier = Verifier(self.cluster_key, self.name)
        self._accepted: dict[tuple[int, int], None] = {}  # (group, attempt) started, newest last
        self._loops: set[asyncio.Task[None]] = set()  # background work, cancelled at stop
        self._ready = False
        self._beating: set[str] = set()  # servers a heartbeat is on its way to
        self.on_leave: Callable[[], None] = lambda: None
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leader_task: asyncio.Task[None] | None = None
        self._leader: Leader | None = None
        self._done: Batcher[dict[str, Any], None] = Batcher(self._submit_done, retry=True)
        self._writes: Batcher[dict[str, Any], dict[str, Any]] = Batcher(
            self._submit_writes, check=codec.check_command
        )
        self._outboxes: dict[str, Batcher[dict[str, Any], None]] = {}  # runs for other nodes
        self._waiting: dict[int, asyncio.Future[str]] = {}
        self._last_group = 0
        self.history_copy = HistoryCopy(
            self.history,
            self.peers,
            finished=self._finished_count,
            sources=self._history_sources,
            tasks=self._loops,
        )
        self._dispatched: dict[tuple[int, str], float] = {}  # (group, target) -> sent at
        self._retrying: set[tuple[int, str, int]] = set()  # (group, node, attempt) due
        self._admitted: dict[str, float] = {}  # server -> when its automatic join was tried
        self._removed: dict[str, float] = {}  # server -> when it was removed here
        self.notifier = Notifier.from_config(config)
        self.metrics = Metrics.from_config(config, self._gauges)
        self.notifier.on_result = self.metrics.notification
        self.started_at = datetime.now(UTC)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open history, replay the replicated log, and start scheduling when leader."""
        self._loop = asyncio.get_running_loop()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.history.open()
        self.state.subscribe(self._on_event)
        self.state.before_snapshot(self.history.flush)
        self.index.changed = self._poke_scheduler
        self.raft.start()
        await self._wait_for_cluster()
        self._reindex(resume=True)
        await self._register()
        self.history_copy.soon()  # a late joiner or a wiped disk: in the background
        await self._fail_orphans()
        self._spawn(self._heartbeat_loop())
        self._spawn(self._lease_loop())
        if self.metrics.statsd_enabled:
            self._spawn(self.metrics.run_statsd(clock=self.clock))
        self._ready = True
        self._leadership_changed(self.raft.is_leader)
        log.info("node %s started (%s)", self.name, "leader" if self.is_leader else "follower")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._loops.add(task)
        task.add_done_callback(self._loops.discard)

    async def _wait_for_cluster(self) -> None:
        """Wait until a leader is known and this node has caught up, saying why it waits.

        With ``--retry-join`` it waits ``--retry-max`` times ``--retry-interval`` (for ever
        when ``--retry-max`` is 0, as Dkron does); otherwise 5 minutes. The cluster links
        themselves are retried all along.
        """
        config = self.config
        if not config.retry_join:
            patience: float | None = 300.0
        elif config.retry_max:
            patience = config.retry_max * config.retry_interval.total_seconds()
        else:
            patience = None
        waited = 0.0
        while True:
            try:
                await self.raft.wait_ready(timeout=10.0)
                return
            except ClusterError:
                waited += 10.0
                if patience is not None and waited >= patience:
                    raise
            servers = ", ".join(config.join + config.retry_join) or "the servers"
            if config.server:
                log.warning(
                    "no leader yet after %.0f s: waiting for a quorum of %s; a server new to "
                    "a running cluster asks to be added (its --join must name every server, "
                    "with the cluster's key), or add it by hand: dkron-lab raft add-peer "
                    "--peer-addr %s", waited, servers, config.bind_addr,
                )  # fmt: skip
            else:
                log.warning(
                    "no leader yet after %.0f s: waiting to reach a server at %s (with the "
                    "cluster's key, if it has one)", waited, servers,
                )  # fmt: skip

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop scheduling, let running executions finish (``graceful``) and close everything."""
        await self._stop_scheduler()
        if graceful:
            await self.runner.drain()
        else:
            await self.runner.cancel_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._done.drain(), timeout=10.0)
        if graceful and self._ready:
            await self._say_goodbye()
        for task in list(self._loops):
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.peers.aclose()
        await self.registry.aclose()
        await self.notifier.close()
        self.metrics.close()
        self.raft.stop()
        self.history.close()

    async def leave(self) -> None:
        """Shut this node down gracefully (``POST /v1/leave``)."""
        self.on_leave()

    # -- state events (called on the Raft thread) ---------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, JobChanged):
            self._job_changed(event)
        elif isinstance(event, ExecutionFinished):
            self.history.append(event.execution)
            if self.notifier.enabled:
                self._call_soon(self._execution_finished, event)
        elif isinstance(event, ExecutionsCleared):
            self.history.delete_job(event.job_name)
        elif isinstance(event, GroupFinished | RetryDue | ChildrenDue | GroupStarted):
            self._call_soon(self._follow_up, event)
        elif isinstance(event, FireClaimed):
            if not self.raft.is_leader:
                self.index.fired(event.job_name, event.scheduled_at)
        elif isinstance(event, FiresSkipped):
            self._record_skipped(event)
        elif isinstance(event, StateRestored):
            self._reindex()
            # The executions of the log entries the snapshot replaced never reached our history.
            self._call_soon(self.history_copy.soon)

    def _job_changed(self, event: JobChanged) -> None:
        self.index.update(event.name, event.job, self.clock.now())
        if event.job is None:
            self.metrics.forget_job(event.name)

    def _record_skipped(self, event: FiresSkipped) -> None:
        if self.raft.is_leader:
            self.metrics.skipped(sum(int(span["count"]) for span in event.spans))
        else:  # skipped instants are handled: a later leader must not settle them again
            instants = (codec.parse_time(span["last"], "last") for span in event.spans)
            last = max((at for at in instants if at is not None), default=None)
            if last is not None:
                self.index.fired(event.job_name, last)
        recorded = self.clock.now()
        for span in event.spans:
            self.history.record_skipped(
                event.job_name,
                reason=span["reason"],
                first=codec.parse_time(span["first"], "first") or recorded,
                last=codec.parse_time(span["last"], "last") or recorded,
                count=int(span["count"]),
                recorded_at=recorded,
            )

    def _reindex(self, *, resume: bool = False) -> None:
        """Recompute every job's next fire; ``resume`` starts each from its last fire, so the
        fires missed while this node was down are found (and handled by the catch-up policy)."""
        self.index.clear()
        now = self.clock.now()
        with self.state.lock:
            jobs = [(job, self.state.last_fired.get(job.name)) for job in self.state.jobs.values()]
        for job, last in jobs:
            self.index.update(job.name, job, min(last, now) if resume and last else now)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def _poke_scheduler(self) -> None:
        if self._leader is not None:
            self._call_soon(self._leader.scheduler.poke)

    def _group_finished(self, event: GroupFinished) -> None:
        waiter = self._waiting.pop(event.group, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event.status)

    def _started_here(self, execution: Execution) -> None:
        if execution.scheduled_at is not None:
            self.metrics.lateness((execution.started_at - execution.scheduled_at).total_seconds())

    async def _notify_started(self, run: _Run, target: str) -> None:
        now = self.clock.now()
        execution = Execution(
            id=f"{run.group}-{target}-{run.attempt}",
            job_name=run.job.name,
            node_name=target,
            group=run.group,
            attempt=run.attempt,
            started_at=max(now, run.scheduled_at or now),
            scheduled_at=run.scheduled_at,
        )
        await self.notifier.started(run.job, execution)

    def _execution_finished(self, event: ExecutionFinished) -> None:
        """On the leader: announce a run's final attempt (one to be retried is not)."""
        job = self.state.jobs.get(event.execution.job_name)
        if job is None or not event.final or not self.is_leader or not self.notifier.enabled:
            return
        self._spawn(
            self.notifier.finished(job, event.execution, previous_success=event.previous_success)
        )

    def _follow_up(self, event: GroupFinished | RetryDue | ChildrenDue | GroupStarted) -> None:
        """What a run leaves to do next: answer a waiting manual run (any server); on the
        leader, start queued runs, retries and dependent runs, each through a fenced claim."""
        if isinstance(event, GroupFinished):
            self._group_finished(event)
            return
        if not self._ready or not self.is_leader:
            return
        if isinstance(event, GroupStarted):
            self._start_group(event.group)
        elif isinstance(event, RetryDue):
            self._retry_soon(event.job_name, event.group, event.node, event.attempt, event.at)
        else:
            self._spawn(self._run_children())

    def _resume_follow_ups(self) -> None:
        """A new leader takes over the retries and dependent runs its predecessor left."""
        with self.state.lock:
            retries = [
                (group["job"], gid, node, pending["attempt"], pending["at"])
                for gid, group in self.state.groups.items()
                for node, pending in group.get("retry", {}).items()
            ]
            owed = bool(self.state.owed)
        for job_name, gid, node, attempt, at in retries:
            when = codec.parse_time(at, "at") or self.clock.now()
            self._retry_soon(job_name, gid, node, attempt, when)
        if owed:
            self._spawn(self._run_children())

    def _start_group(self, gid: int) -> None:
        with self.state.lock:
            group = self.state.groups.get(gid)
            job = self.state.jobs.get(group["job"]) if group else None
            if group is None or job is None or group.get("queued"):
                return
            targets = [t for t in group["targets"] if t not in group["results"]]
        scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
        self._start_runs([_Run(job, gid, targets, scheduled_at)])

    def _retry_soon(self, job_name: str, gid: int, node: str, attempt: int, at: datetime) -> None:
        key = (gid, node, attempt)
        if key not in self._retrying:
            self._retrying.add(key)
            self._spawn(self._retry(job_name, gid, node, attempt, at))

    async def _retry(self, job_name: str, gid: int, node: str, attempt: int, at: datetime) -> None:
        """Run attempt ``attempt`` of ``node``'s run once its backoff has passed: on the same
        node (Dkron), or with ``retry_on: any`` on another live node the tags match."""
        try:
            await self.clock.sleep_until(at)
            job = self.state.jobs.get(job_name)
            if job is None or not self.is_leader:
                return
            to = node
            if job.retry_on == "any":
                with self.state.lock:
                    taken = set(self.state.groups.get(gid, {}).get("targets", ()))
                others = [target for target in self.targets(job) if target not in taken]
                if others:
                    to = self._rng.choice(others)
            claim = command("retry", group=gid, node=node, attempt=attempt, to=to)
            if not (await self._submit(claim, fenced=True))["won"]:
                return
            with self.state.lock:
                group = self.state.groups.get(gid, {})
            scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
            if to != self.name and not self.liveness.is_alive(to):
                self._report_lost(
                    job_name, gid, to, scheduled_at, "is gone: the retry could not run"
                )
                return
            self._start_runs([_Run(job, gid, [to], scheduled_at, attempt)])
        except DkronError as exc:
            log.warning(
                "retry %d of job %r on %s failed to start (trying again): %s",
                attempt, job_name, node, exc,
            )  # fmt: skip
            self._again_soon(self._retry_soon, job_name, gid, node, attempt, at)
        finally:
            self._retrying.discard((gid, node, attempt))

    def _again_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Try a follow-up again in a second, while this node leads (a claim that failed stays
        owed in the state; a new leader would take it over anyway)."""

        def again() -> None:
            if self.is_leader:
                callback(*args)

        asyncio.get_running_loop().call_later(1.0, again)

    async def _run_children(self) -> None:
        """Claim the dependent runs owed for successful parent groups, each exactly once."""
        with self.state.lock:
            owed = [dict(entry) for entry in self.state.owed]
        now = codec.format_time(self.clock.now())
        fires, runs = [], []
        for entry in owed:
            job = self.state.jobs.get(entry["child"])
            if job is None:
                continue
            run = _Run(job, self.new_group(), self.targets(job))
            runs.append(run)
            fires.append(
                {
                    "job": job.name,
                    "scheduled_at": None,
                    "group": run.group,
                    "targets": list(run.targets) or [self.name],
                    "parent_group": entry["parent_group"],
                    "at": now,
                }
            )
        if not fires:
            return
        try:
            won, queued = await self._claim(fires)
        except DkronError as exc:
            log.warning("could not start %d dependent run(s) (trying again): %s", len(fires), exc)
            self._again_soon(lambda: self._spawn(self._run_children()))
            return
        started = [r for r, ok in zip(runs, won, strict=True) if ok and r.group not in queued]
        for run in started:
            if not run.targets:
                self._report_untargeted(run.job, run.group, None)
        self._start_runs(started)

    def _on_leadership(self, is_leader: bool, term: int) -> None:
        self._call_soon(self._leadership_changed, is_leader)

    def _leadership_changed(self, _: bool) -> None:
        # Notices can arrive in bursts (elections): act on the state as it is now, at once.
        # Until start() has rebuilt the schedule index, there is nothing to schedule from.
        if not self._ready:
            return
        running = self._leader_task is not None and not self._leader_task.done()
        if self.raft.is_leader and not running:
            self._leader = Leader(
                state=self.state,
                index=self.index,
                clock=self.clock,
                submit=functools.partial(self._submit, fenced=True),
                starts=self,
                catch_up=CatchUpSettings(
                    policy=self.config.catchup, window=self.config.catchup_window
                ),
                on_won=self.metrics.fired,
                caught_up=self._resume_follow_ups,
            )
            self._leader_task = asyncio.ensure_future(self._leader.run())
            log.info("leader (term %d): scheduling", self.raft.term)
        elif not self.raft.is_leader and running:
            assert self._leader_task is not None
            self._leader_task.cancel()
            self._leader_task = self._leader = None
            log.info("no longer leader: scheduling stopped")

    async def _stop_scheduler(self) -> None:
        if self._leader is not None:
            self._leader.abandon()
        task, self._leader_task, self._leader = self._leader_task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- firing --------------------------------------------------------------------------------

    def new_group(self) -> int:
        self._last_group = max(time.time_ns(), self._last_group + 1)
        return self._last_group

    def targets(self, job: Job) -> tuple[str, ...]:
        with self.state.lock:
            nodes = [NodeInfo.from_dict(n) for n in self.state.nodes.values()]
        candidates = [
            Candidate(name=n.name, tags=n.tags, region=n.region)
            for n in nodes
            if not n.left and (n.name == self.name or self.liveness.is_alive(n.name))
        ]
        return tuple(select_targets(job.tags, candidates, region=self.config.region, rng=self._rng))

    @property
    def limits(self) -> Limits:
        """The cluster-wide concurrency limits: this node's config, overridden by the ones set
        through the API (replicated)."""
        with self.state.lock:
            settings = dict(self.state.limit_settings)
        overall = settings.get("overall", self.config.concurrency_limit)
        groups = {**self.config.concurrency_groups, **settings.get("groups", {})}
        return Limits(overall, {name: n for name, n in groups.items() if n})

    async def _claim(self, fires: list[dict[str, Any]]) -> tuple[list[bool], set[int]]:
        """Claim ``fires`` through Raft: which were won, and which of those wait in the queue
        of the concurrency limits (their runs start when a ``GroupStarted`` says so)."""
        result = await self._submit(fire_command(self.state, self.limits, fires), fenced=True)
        self.metrics.fired(sum(result["won"]))
        return list(result["won"]), set(result.get("queued", ()))

    def start_fires(self, fires: list[Fire], *, local: bool, remote: bool) -> None:
        """The leader's claimed fires: start them on their targets; a fire no live node
        could take is recorded failed for the node its claim names."""
        if local:
            for fire in fires:
                job = self.state.jobs.get(fire.job)
                if job is not None and not fire.targets:
                    self._report_untargeted(job, fire.group, fire.scheduled_at)
        self._start_runs(self._runs_of(fires), local=local, remote=remote)

    def _runs_of(self, fires: list[Fire]) -> list[_Run]:
        runs = []
        for fire in fires:
            job = self.state.jobs.get(fire.job)
            if job is not None and fire.targets:
                runs.append(_Run(job, fire.group, fire.targets, fire.scheduled_at))
        return runs

    def _start_runs(self, runs: list[_Run], *, local: bool = True, remote: bool = True) -> None:
        """Start every run on its targets: here directly (``local``), elsewhere (``remote``)
        through one call at a time per node carrying all the runs queued for it."""
        for run in runs:
            for target in run.targets:
                here = target == self.name
                if not (local if here else remote):
                    continue
                # A first attempt sent again (a new term restarting open claims) is announced
                # once per leader.
                again = run.attempt == 1 and (run.group, target) in self._dispatched
                self._dispatched[(run.group, target)] = time.time()
                if self.notifier.enabled and not again:
                    self._spawn(self._notify_started(run, target))
                if here:
                    self._start_here(run.job, run.group, run.attempt, run.scheduled_at)
                else:
                    self._outbox(target).add(
                        {
                            "job": codec.job_to_record(run.job),
                            "group": run.group,
                            "scheduled_at": codec.format_time(run.scheduled_at),
                            "attempt": run.attempt,
                        }
                    )

    def _outbox(self, target: str) -> Batcher[dict[str, Any], None]:
        outbox = self._outboxes.get(target)
        if outbox is None:
            send = functools.partial(self._send_runs, target)
            outbox = self._outboxes[target] = Batcher(send)
        return outbox

    async def _send_runs(self, target: str, runs: list[dict[str, Any]]) -> list[None]:
        """One call carries every run queued for ``target`` (many fires a second, spread over
        the second, still make one call at a time per node)."""
        payload = {"runs": runs, "term": self.raft.term}
        try:
            await self.peers.post(self._http_of(target), "/internal/v1/run", payload, target=target)
        except DkronError as exc:
            log.warning("could not start %d run(s) on %s: %s", len(runs), target, exc)
            for run in runs:
                scheduled_at = codec.parse_time(run["scheduled_at"], "scheduled_at")
                why = f"could not reach it: {exc}"
                self._report_lost(run["job"]["name"], run["group"], target, scheduled_at, why)
        return [None] * len(runs)

    def _http_of(self, name: str) -> str:
        node = self.state.nodes.get(name)
        if node is None:
            raise ClusterError(f"node {name!r} is not registered")
        return str(node["http"])

    def accept_run(self, payload: dict[str, Any]) -> None:
        """A leader asks this node to run jobs (``/internal/v1/run``); repeats are ignored."""
        if int(payload.get("term", 0)) < self.raft.term:
            raise ConflictError(
                f"run request from an old leader (term {payload.get('term')} < {self.raft.term})"
            )
        for run in payload["runs"]:
            job, _ = codec.job_from_json(run["job"])
            scheduled_at = codec.parse_time(run.get("scheduled_at"), "scheduled_at")
            self._start_here(job, int(run["group"]), int(run.get("attempt", 1)), scheduled_at)

    def _start_here(
        self, job: Job, group: int, attempt: int, scheduled_at: datetime | None
    ) -> None:
        """Run ``job`` on this node, on its instant if that is still ahead (claimed early, or
        queued under a limit and let through before it). A run already started here, asked
        for again (a leader settling a claim another term made), is not started twice."""
        if (group, attempt) in self._accepted:
            return
        self._accepted[(group, attempt)] = None
        while len(self._accepted) > 10_000:
            del self._accepted[next(iter(self._accepted))]
        if scheduled_at is not None and scheduled_at > self.clock.now():
            self._spawn(self._start_at(job, group, attempt, scheduled_at))
        else:
            self.runner.start(job, group=group, attempt=attempt, scheduled_at=scheduled_at)

    async def _start_at(self, job: Job, group: int, attempt: int, scheduled_at: datetime) -> None:
        await self.clock.sleep_until(scheduled_at)
        self.runner.start(job, group=group, attempt=attempt, scheduled_at=scheduled_at)

    def _report_untargeted(self, job: Job, group: int, scheduled_at: datetime | None) -> None:
        log.warning("no target nodes found to run job %r (tags %s)", job.name, job.tags)
        reason = (
            f"no target nodes found to run job {job.name!r}: no live node has the tags {job.tags}"
        )
        self._report_failed(job.name, group, self.name, scheduled_at, reason)

    def _report_lost(
        self, job_name: str, group: int, node: str, scheduled_at: datetime | None, why: str
    ) -> None:
        reason = f"dkron-lab: node {node} {why}; the outcome of this execution is unknown"
        self._report_failed(job_name, group, node, scheduled_at, reason)

    def _report_failed(
        self, job_name: str, group: int, node: str, scheduled_at: datetime | None, output: str
    ) -> None:
        """Record a run that could not happen or whose outcome is lost: never silently. It
        stands for the node's current attempt in the group (so a retry can follow it)."""
        with self.state.lock:
            record = self.state.groups.get(group)
            attempt = record.get("attempts", {}).get(node, 1) if record else 1
        now = self.clock.now()
        self._report(
            Execution(
                id=f"{group}-{node}" + (f"-{attempt}" if attempt > 1 else ""),
                job_name=job_name,
                node_name=node,
                group=group,
                attempt=attempt,
                started_at=datetime.fromtimestamp(group / 1e9, UTC) if attempt == 1 else now,
                finished_at=now,
                output=output,
                scheduled_at=scheduled_at,
            )
        )

    # -- reporting -------------------------------------------------------------------------------

    def _report(self, execution: Execution) -> None:
        self._done.add(codec.execution_to_json(execution))

    def _ran(self, execution: Execution) -> None:
        """A run on this node finished: count it here, once, and report it."""
        self.metrics.execution_finished(execution)
        self._report(execution)

    async def _submit_done(self, records: list[dict[str, Any]]) -> list[None]:
        await self.raft.submit(command("done", executions=records))
        return [None] * len(records)

    async def _submit_writes(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Writes from concurrent requests share one Raft entry."""
        if len(commands) == 1:
            return [await self.raft.submit(commands[0])]
        result = await self.raft.submit(command("batch", commands=commands))
        return list(result["results"])

    async def _fail_orphans(self) -> None:
        """Runs in flight here before this node stopped can never report: record them failed."""
        with self.state.lock:
            orphans = [
                (gid, group)
                for gid, group in self.state.groups.items()
                if self.name in group["targets"] and self.name not in group["results"]
            ]
        for gid, group in orphans:
            scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
            why = "stopped while this execution was running"
            self._report_lost(group["job"], gid, self.name, scheduled_at, why)
        if orphans:
            await self._done.drain()

    # -- history copy --------------------------------------------------------------------------

    def _finished_count(self) -> int:
        with self.state.lock:
            return sum(s.success_count + s.error_count for s in self.state.stats.values())

    def _history_sources(self) -> list[NodeInfo]:
        """The other servers, the leader first (it has applied the most)."""
        leader = self.leader()
        with self.state.lock:
            nodes = [NodeInfo.from_dict(n) for n in self.state.nodes.values()]
        servers = [n for n in nodes if n.role == "server" and n.name != self.name and not n.left]
        first = leader["Name"] if leader else ""
        return sorted(servers, key=lambda n: (n.name != first, n.name))

    # -- membership ----------------------------------------------------------------------------

    def node_info(self) -> NodeInfo:
        http_host, http_port = self.config.http_host_port
        bind_host, _ = self.config.bind_host_port
        advertise = self.config.advertise_addr.rpartition(":")[0] or self.config.advertise_addr
        if http_host in ("", "0.0.0.0", "::"):
            http_host = advertise or bind_host or "127.0.0.1"
        return NodeInfo(
            name=self.name,
            role=self.role,
            http=f"{http_host}:{http_port}",
            raft=self.config.bind_addr if self.config.server else "",
            tags=self.member_tags,
            region=self.config.region,
        )

    async def _register(self) -> None:
        info = self.node_info().to_dict()
        with self.state.lock:
            known = self.state.nodes.get(self.name)
        if known != info:
            await self._submit(command("register", node=info))
        self.heard_from(self.name, [])

    async def _say_goodbye(self) -> None:
        """Mark this node as left, so it shows as such and gets no runs (best effort)."""
        info = replace(self.node_info(), left=True).to_dict()
        try:
            await asyncio.wait_for(self._submit(command("register", node=info)), timeout=3.0)
        except (DkronError, TimeoutError) as exc:
            log.info("could not record this node as left: %s", exc)

    def heard_from(self, name: str, busy: list[dict[str, Any]]) -> None:
        """A heartbeat from ``name``, with the executions it is running."""
        self.liveness.beat(name, busy)

    async def _heartbeat_loop(self) -> None:
        """Tell every server, each second, that this node lives and what it runs."""
        while True:
            busy = [codec.execution_to_json(e) for e in self.runner.busy()]
            self.heard_from(self.name, busy)
            with self.state.lock:
                servers = [
                    (n["name"], n["http"])
                    for n in self.state.nodes.values()
                    if n["role"] == "server" and n["name"] != self.name
                ]
            payload = {"node": self.name, "busy": busy}
            for name, http in servers:
                # Each server on its own: one that hangs must not delay the beats to the others.
                if http not in self._beating:
                    self._beating.add(http)
                    self._spawn(self._beat(name, http, payload))
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _beat(self, name: str, http: str, payload: dict[str, Any]) -> None:
        try:
            await self.peers.post(
                http, "/internal/v1/heartbeat", payload, target=name, timeout=HEARTBEAT_TTL
            )
        except DkronError as exc:
            log.debug("heartbeat to %s failed: %s", http, exc)
        finally:
            self._beating.discard(http)

    async def _lease_loop(self) -> None:
        """On the leader: runs on nodes that stopped answering are recorded failed."""
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            if self.is_leader:
                self._expire_leases(time.time())

    def _expire_leases(self, now: float) -> None:
        with self.state.lock:
            groups = {gid: copy_group(group) for gid, group in self.state.groups.items()}
        for key in [key for key in self._dispatched if key[0] not in groups]:
            del self._dispatched[key]
        here = {execution.group for execution in self.runner.busy()}
        lost = lost_runs(
            groups,
            now,
            sent=lambda gid, node: self._dispatched.get((gid, node), gid / 1e9),
            alive=lambda node: node == self.name or self.liveness.is_alive(node),
            running=lambda node: here if node == self.name else self.liveness.running_groups(node),
        )
        for run in lost:
            group = groups[run.group]
            scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
            self._report_lost(group["job"], run.group, run.node, scheduled_at, run.why)

    def _gauges(self) -> Gauges:
        with self.state.lock:
            queued = len(self.state.queue)
            jobs = len(self.state.jobs)
        statuses: dict[str, int] = {}
        for member in self.members():
            statuses[member["statusText"]] = statuses.get(member["statusText"], 0) + 1
        return Gauges(
            is_leader=self.is_leader,
            raft_term=self.raft.term,
            raft_commit_index=self.raft.applied_index,
            members_by_status=statuses,
            executions_running=self.runner.running,
            executions_queued=self.runner.queued,
            queue_lengths={"global": queued, "local": self.runner.queued},
            jobs=jobs,
            paused=self.paused,
        )

    # -- the facade: reads -------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.raft.is_leader

    @property
    def paused(self) -> bool:
        return self.state.paused

    def _view(self, job: Job) -> JobView:
        return JobView(
            job=job,
            stats=self.state.stats.get(job.name, JobStats()),
            next_fire=self.index.next_of(job.name),
            dependent_jobs=self.state.dependents(job.name),
        )

    def get_job(self, name: str) -> JobView:
        with self.state.lock:
            return self._view(self.state.job(name))

    def list_jobs(self, query: JobQuery) -> tuple[list[JobView], int]:
        key = _SORT_KEYS.get("name" if query.sort in ("", "id") else query.sort)
        if key is None:
            raise BadRequest(
                f"cannot sort jobs by {query.sort!r}: use one of {', '.join(sorted(_SORT_KEYS))}"
            )
        descending = _descending(query.order)
        with self.state.lock:
            if query.sort in ("", "id", "name") and not query.filtered:
                return self._page_by_name(query, descending)
            views = [
                self._view(job)
                for job in self.state.iter_jobs()
                if query.matches(job, self.state.stats.get(job.name, JobStats()))
            ]
        views.sort(key=key, reverse=descending)
        return views[query.start : query.end], len(views)

    def _page_by_name(self, query: JobQuery, descending: bool) -> tuple[list[JobView], int]:
        names = self.state.names
        total = len(names)
        end = total if query.end is None else min(query.end, total)
        if descending:
            page = [names[total - 1 - i] for i in range(query.start, end)]
        else:
            page = names[query.start : end]
        return [self._view(self.state.jobs[name]) for name in page], total

    async def list_executions(
        self,
        job_name: str,
        *,
        sort: str = "",
        order: str = "DESC",
        start: int = 0,
        end: int | None = None,
        output_size_limit: int | None = None,
    ) -> tuple[list[Execution], list[bool], int]:
        self.get_job(job_name)
        return await asyncio.to_thread(
            self.history.list_executions,
            job_name,
            sort=sort,
            order=order,
            start=start,
            end=end,
            output_size_limit=output_size_limit,
        )

    async def get_execution(self, job_name: str, execution_id: str) -> Execution:
        self.get_job(job_name)
        found = await asyncio.to_thread(self.history.get_execution, job_name, execution_id)
        if found is None:
            for running in self.busy():
                if running.id == execution_id and running.job_name == job_name:
                    return running
            raise ExecutionNotFound(f"execution {execution_id!r} of job {job_name!r} not found")
        return found

    def busy(self) -> list[Execution]:
        """Running now anywhere: here live, elsewhere as of each node's last heartbeat; then
        the runs queued cluster-wide under the concurrency limits, oldest first."""
        elsewhere = [
            codec.execution_from_json(e)
            for e in self.liveness.busy()
            if e.get("node_name") != self.name
        ]
        running = sorted([*self.runner.busy(), *elsewhere], key=lambda e: e.started_at)
        return running + self._queued_cluster_wide()

    def _queued_cluster_wide(self) -> list[Execution]:
        with self.state.lock:
            groups = [(gid, dict(self.state.groups[gid])) for gid in self.state.queue]
        return [
            Execution(
                id=f"queued-{gid}-{target}",
                job_name=group["job"],
                node_name=target,
                group=gid,
                started_at=datetime.fromtimestamp(gid / 1e9, UTC),
                scheduled_at=codec.parse_time(group.get("scheduled_at"), "scheduled_at"),
                queued=True,
            )
            for gid, group in groups
            for target in group["targets"]
        ]

    @property
    def member_tags(self) -> dict[str, str]:
        host, port = self.config.bind_host_port
        reserved = {
            "role": "dkron",
            "dc": self.config.datacenter,
            "region": self.config.region,
            "version": __version__,
            "rpc_addr": self.config.bind_addr,
            "port": str(port),
        }
        if self.config.server:
            reserved |= {"server": "true", "expect": str(self.config.bootstrap_expect)}
        return {**reserved, **self.config.tags}  # a user tag such as role=web wins

    def members(self) -> list[dict[str, Any]]:
        """Dkron's Member JSON for every registered node, alive or failed."""
        with self.state.lock:
            nodes = [NodeInfo.from_dict(n) for n in self.state.nodes.values()]
        return [self._member(n) for n in sorted(nodes, key=lambda n: n.name)]

    def _member(self, node: NodeInfo) -> dict[str, Any]:
        host, port = split_host_port(node.raft or node.http, default_port=8946)
        alive = node.name == self.name or self.liveness.is_alive(node.name)
        status = 3 if node.left else 1 if alive else 4
        return {
            "Name": node.name,
            "Addr": host,
            "Port": port,
            "Tags": dict(node.tags),
            "Status": status,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
            # Dkron makes a new uuid per answer (react-admin needs an id); one per name is as
            # good for it and lets clients (the dashboard) tell members apart across refreshes.
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dkron-lab:member:{node.name}")),
            "statusText": _STATUS_TEXT[status],
        }

    def leader(self) -> dict[str, Any] | None:
        address = self.raft.leader
        with self.state.lock:
            nodes = [NodeInfo.from_dict(n) for n in self.state.nodes.values()]
        for node in nodes:
            if node.raft and node.raft == address:
                return self._member(node)
        return None

    def info(self) -> dict[str, Any]:
        status = self.raft.status()
        members = Counter(member["statusText"] for member in self.members())
        return {
            "agent": {"name": self.name, "version": __version__},
            "serf": {
                "members": str(members.total()),
                "failed": str(members["failed"]),
                "left": str(members["left"]),
                "encrypted": "true",
            },
            "raft": {key: str(value) for key, value in status.items()},
            "tags": self.member_tags,
        }

    # -- the facade: writes -------------------------------------------------------------------

    @property
    def storage_fault(self) -> str | None:
        """Why this node cannot write its data dir (full disk, I/O error: raft journal, meta,
        snapshot or history), or None. While set, writes answer ``InsufficientStorage`` and
        ``/health`` is unhealthy; it clears by itself once the retried write succeeds."""
        return self.raft.storage_fault or self.history.storage_fault

    async def _submit(self, cmd: dict[str, Any], *, fenced: bool = False) -> dict[str, Any]:
        fault = self.storage_fault
        if fault is not None:
            raise InsufficientStorage(f"{fault}; nothing was written")
        if fenced:
            result = await self.raft.submit(cmd, fenced=True)
        else:
            result = await self._writes.add(cmd)
        if "error" in result:
            error = result["error"]
            raise error_class(error["type"])(error["message"])
        return result

    def _check(self, job: Job) -> None:
        validate_job(job)
        check_notify_on(job.metadata)
        self.registry.validate(job.executor, job.executor_config, job.processors)

    async def set_job(self, job: Job, stats: JobStats | None = None) -> JobView:
        with self.state.lock:
            stored = self.state.jobs.get(job.name)
        job = secrets.unmask_job(job, stored)  # a job read from the API, saved back
        self._check(job)
        record = codec.job_to_record(job)
        if stats is not None:
            record |= codec.stats_to_json(stats)
        await self._submit(command("set_job", job=record))
        return self.get_job(job.name)

    async def delete_job(self, name: str) -> JobView:
        view = self.get_job(name)
        await self._submit(command("delete_job", name=name))
        return view

    async def toggle_job(self, name: str) -> JobView:
        await self._submit(command("toggle_job", name=name))
        return self.get_job(name)

    async def run_job(self, name: str, *, wait: bool = False, node: str | None = None) -> JobView:
        """Run ``name`` now on its target nodes, or on ``node`` alone (a manual run: no
        ``scheduled_at``). ``forbid`` and the concurrency limits hold as for scheduled runs.

        Only the leader claims runs: a follower hands the request to it.
        """
        job = self.get_job(name).job
        if not self.is_leader:
            return await self._run_on_leader(name, wait, node)
        targets = self.targets(job) if node is None else [self._live_node(node)]
        if not targets:
            raise NotFoundError(
                f"no target nodes found to run job {name!r}: no live node has the tags {job.tags}"
            )
        group = self.new_group()
        claim = {"job": name, "scheduled_at": None, "group": group, "targets": targets}
        finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[group] = finished
        (won,), queued = await self._claim([claim])
        if not won:
            self._waiting.pop(group, None)
            raise ConflictError(
                f"job {name!r} is already running and its concurrency is 'forbid': "
                "wait for the run to finish, or set concurrency to 'allow'"
            )
        if not queued:
            self._start_runs([_Run(job, group, targets)])
        if wait:
            await finished
            await asyncio.to_thread(self.history.flush)
        else:
            self._waiting.pop(group, None)
        return (
            self.get_job(name)
            if name in self.state.jobs
            else JobView(job=job, stats=JobStats(), next_fire=None)
        )

    def _live_node(self, name: str) -> str:
        with self.state.lock:
            known = self.state.nodes.get(name)
        if known is None or known.get("left"):
            names = ", ".join(sorted(self.state.nodes)) or "none"
            raise NotFoundError(f"node {name!r} is not a member: choose one of {names}")
        if name != self.name and not self.liveness.is_alive(name):
            raise ClusterError(f"node {name!r} is not answering heartbeats: it cannot run jobs")
        return name

    async def _run_on_leader(self, name: str, wait: bool, node: str | None = None) -> JobView:
        leader = self.leader()
        if leader is None:
            raise ClusterError("no leader is known yet: wait for the election, then retry")
        answer = await self.peers.post(
            self._http_of(leader["Name"]),
            f"/internal/v1/jobs/{name}/run",
            {"wait": wait, "node": node},
            target=leader["Name"],
        )
        if wait:
            # The leader has applied the run's results; answer once this server has too.
            await self._applied(int(answer["applied_index"]), timeout=5.0)
            await asyncio.to_thread(self.history.flush)
        return self.get_job(name)

    async def _applied(self, index: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.raft.applied_index < index and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    def raft_peers(self) -> list[dict[str, Any]]:
        """The Raft voters as this server sees them, each with the node name registered there."""
        with self.state.lock:
            names = {n["raft"]: n["name"] for n in self.state.nodes.values() if n.get("raft")}
        return [{"name": names.get(p["address"], ""), **p} for p in self.raft.peers()]

    async def add_peer(self, address: str, *, knocked: bool = False) -> None:
        """Make the server whose cluster address is ``address`` a voter (start it first, with
        the current servers in its --join). Sent to the leader wherever it is received.
        ``knocked``: the server asked by itself (automatic join), which the leader refuses for
        a server it removed in the last minute."""
        await self._on_leader("add", address, knocked=knocked)

    async def _on_leader(self, change: str, address: str, *, knocked: bool = False) -> None:
        leader = self.leader()
        if self.is_leader or leader is None:
            if change == "remove":
                self._removed[address] = time.monotonic()
            elif knocked and time.monotonic() - self._removed.get(address, -math.inf) < 60:
                raise ConflictError(f"{address} was removed less than a minute ago: stop it")
            await (self.raft.add_peer if change == "add" else self.raft.remove_peer)(address)
            return
        http = self._http_of(leader["Name"])
        body = {"peer": address, "knocked": knocked}
        await self.peers.post(http, f"/internal/v1/raft/{change}", body, target=leader["Name"])

    def _on_knock(self, address: str) -> None:
        self._call_soon(self._admit, address)

    def _admit(self, address: str) -> None:
        """A server started with ``--join`` knocked at this server's raft port: have the
        leader make it a voter, as Dkron's leader adds the servers that join (at most one try
        per 10 s per address; the leader refuses one it removed in the last minute)."""
        now = time.monotonic()
        if not self._ready or now - self._admitted.get(address, -math.inf) < 10:
            return
        self._admitted[address] = now
        self._spawn(self._add_knocking(address))

    async def _add_knocking(self, address: str) -> None:
        try:
            await self.add_peer(address, knocked=True)
            log.info("server %s joined: it is now a voter", address)
        except DkronError as exc:
            log.info("server %s asked to join and was not added: %s", address, exc)

    async def remove_peer(self, peer: str) -> None:
        """Take the voter ``peer`` (a node name or a host:port) out of the Raft group.

        Sent to the leader wherever it is received; stop the removed server afterwards.
        """
        with self.state.lock:
            known = self.state.nodes.get(peer)
        address = str(known["raft"]) if known and known.get("raft") else peer
        voters = [p["address"] for p in self.raft.peers()]
        if voters == [address]:
            raise ConflictError(
                f"{peer} is the only voter of this cluster: removing it would leave no cluster "
                "to remove it from. Add another server first (dkron-lab raft add-peer), or stop "
                "this one"
            )
        await self._on_leader("remove", address)

    async def skipped(self, name: str) -> list[dict[str, Any]]:
        """Spans of the job's fires that were missed and deliberately not run, newest first."""
        self.get_job(name)
        return await asyncio.to_thread(self.history.list_skipped, name)

    async def delete_executions(self, name: str) -> JobView:
        await self._submit(command("delete_executions", name=name))
        return self.get_job(name)

    def concurrency(self) -> dict[str, Any]:
        """The cluster-wide limits in force, the runs holding a slot and the runs queued."""
        limits = self.limits
        with self.state.lock:
            busy, by_group = self.state.busy_slots()
            queued: dict[str, int] = {}
            for gid in self.state.queue:
                name = self.state.groups[gid].get("limit_group", "")
                queued[name] = queued.get(name, 0) + 1
        names = sorted({*limits.groups, *by_group, *queued} - {""})
        return {
            "limit": limits.overall,
            "running": busy,
            "queued": sum(queued.values()),
            "groups": {
                name: {
                    "limit": limits.groups.get(name, 0),
                    "running": by_group.get(name, 0),
                    "queued": queued.get(name, 0),
                }
                for name in names
            },
        }

    async def set_limits(
        self, *, overall: int | None = None, groups: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """Set cluster-wide limits for every server (0: no limit); see ``concurrency()``."""
        await self._submit(command("set_limits", overall=overall, groups=dict(groups or {})))
        if self.is_leader:
            # Queued runs are let through under the new limits now, not at the next claim.
            await self._submit(command("fire", fires=[], limits=self.limits.to_json()), fenced=True)
        return self.concurrency()

    async def set_paused(self, paused: bool) -> bool:
        result = await self._submit(command("pause", paused=paused))
        return bool(result["paused"])

    async def restore(self, jobs: list[tuple[Job, JobStats]]) -> list[str]:
        """Create or update every job, parents before children, whatever the input order."""
        messages = []
        for job, stats in _parents_first(jobs):
            try:
                await self.set_job(job, stats)
            except Exception as exc:  # each job's outcome is reported, as Dkron does
                messages.append(f"fail create {job.name}: {exc}")
            else:
                messages.append(f"success create {job.name}")
        return messages


_STATUS_TEXT = {1: "alive", 3: "left", 4: "failed"}  # Serf's member status numbers


def _descending(order: str) -> bool:
    if order.upper() not in ("ASC", "DESC"):
        raise BadRequest(f"_order must be ASC or DESC, not {order!r}")
    return order.upper() == "DESC"


def _parents_first(jobs: Iterable[tuple[Job, JobStats]]) -> list[tuple[Job, JobStats]]:
    by_name = {job.name: (job, stats) for job, stats in jobs}
    ordered: list[tuple[Job, JobStats]] = []
    placed: set[str] = set()

    def place(name: str, trail: frozenset[str]) -> None:
        if name in placed or name not in by_name or name in trail:
            return
        place(by_name[name][0].parent_job, trail | {name})
        placed.add(name)
        ordered.append(by_name[name])

    for name in by_name:
        place(name, frozenset())
    return ordered


def _raft_settings(config: Config, encrypt: str) -> RaftSettings:
    return RaftSettings(
        data_dir=config.data_dir / "raft",
        self_address=config.bind_addr if config.server else None,
        partners=tuple(config.join) + tuple(config.retry_join),
        password=encrypt,
        fsync=config.fsync,
    )


def tune_interpreter() -> None:
    """Settings for a process that is a dkron-lab server and nothing else.

    The Raft and DuckDB threads hold the GIL in stretches; with CPython's default 5 ms switch
    interval a fire due meanwhile would start up to 5 ms late. Full garbage collections of a
    server holding 10,000 jobs took 120-220 ms (freeing nothing) and made the p99 lateness:
    what exists once the node has started is frozen out of collection, and the oldest
    generation is collected ten times less often.
    """
    sys.setswitchinterval(0.0005)
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 100)


def settle_heap() -> None:
    """Freeze what a started node holds (its jobs, modules, caches) out of the collector."""
    gc.collect()
    gc.freeze()


async def run_agent(config: Config) -> int:
    """Run a node with its HTTP API until SIGTERM/SIGINT; running jobs finish first."""
    from dkron_lab.api import auth
    from dkron_lab.api.app import serve

    auth.check_listen(config)  # before anything is started or written
    if config.api_tokens_file is not None:
        auth.read_tokens_file(config.api_tokens_file)
    tune_interpreter()
    node = Node(config)
    await node.start()
    try:
        server = await serve(node)
    except BaseException:
        await node.stop(graceful=False)
        raise
    settle_heap()
    stopping = asyncio.Event()
    node.on_leave = stopping.set
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now")
            raise SystemExit(1)
        log.info("stopping: waiting for %d running execution(s)", node.runner.running)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stopping.wait()
    server.stop()
    await node.stop(graceful=True)
    return 0
