"""The composition root: one node built from one ``Config``.

It builds, from the config, the replicated state (pysyncobj, through ``state.raft``), the
execution history (DuckDB), the schedule index, the runner, the plugins and every service
(``services.Shared`` and the modules it names), and starts and stops them in order. It decides
nothing: the edges call ``node.jobs`` (``jobs.py``, the facade), typed against
``api.nodeapi.NodeApi``.

Owns: the order of start and stop, and the node's storage fault. May call: what it builds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime
from typing import Any

from dkron_lab import codec, credentials
from dkron_lab.backfill import Backfiller
from dkron_lab.batching import Batcher
from dkron_lab.clock import Clock, SystemClock, interval_seconds
from dkron_lab.config import Config
from dkron_lab.credentials import secure_data_dir
from dkron_lab.dispatch import Peers, Verifier, cluster_key
from dkron_lab.errors import (
    DkronError,
    InsufficientStorage,
    error_class,
)
from dkron_lab.followups import FollowUps
from dkron_lab.health import Watch
from dkron_lab.heartbeat import PingKeys, ping_path, record_run
from dkron_lab.history.copy import HistoryCopy
from dkron_lab.history.duckdb import DuckDBHistory, SqlLimits
from dkron_lab.jobs import Jobs
from dkron_lab.leader import Leadership
from dkron_lab.lifecycle import Service, unwind
from dkron_lab.membership import (
    Liveness,
)
from dkron_lab.metrics import Gauges, Metrics
from dkron_lab.model.execution import Execution
from dkron_lab.model.health import HEALTHS
from dkron_lab.model.job import Job
from dkron_lab.notify import Notifier
from dkron_lab.outcomes import Outcomes
from dkron_lab.peering import Peering
from dkron_lab.recorder import Recorder
from dkron_lab.registry import PluginRegistry
from dkron_lab.roster import Roster
from dkron_lab.runner import Runner
from dkron_lab.runs import Runs
from dkron_lab.scheduler import ScheduleIndex
from dkron_lab.services import Shared
from dkron_lab.state.commands import Command, encode_batch
from dkron_lab.state.machine import JobState
from dkron_lab.state.raft import RaftNode, RaftSettings
from dkron_lab.views import JobViews

__all__ = ["Node"]

log = logging.getLogger(__name__)


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
        credentials.require_asserts()
        secure_data_dir(config.data_dir)
        self.encrypt = credentials.cluster_key(config)
        self.api_token = credentials.api_token(config)
        self.clock = clock or SystemClock()
        self.registry = registry or PluginRegistry()
        self.state = JobState()
        self.index = ScheduleIndex()
        self.ping_keys = PingKeys(cluster_key(self.encrypt))
        self.views = JobViews(
            self.state,
            self.index,
            now=self.clock.now,
            ping_path=lambda job: ping_path(job, self.ping_keys.key(job)),
        )
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
        credentials.secure_files(settings.data_dir)
        self.raft = RaftNode(
            settings, self.state, on_leadership=self._on_leadership, on_knock=self._on_knock
        )
        self._loops: set[asyncio.Task[None]] = set()  # background work, cancelled at stop
        self._ready = False
        self.on_leave: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: Batcher[dict[str, Any], dict[str, Any]] = Batcher(
            self._submit_writes, check=codec.check_command
        )
        self.started_at = self.clock.now()
        self._build_services(config, rng or random.Random())
        self._stack = self._closers()

    def _build_services(self, config: Config, rng: random.Random) -> None:
        """Each service takes what it calls; the order is the order of their dependencies."""
        shared = self._shared = Shared(
            name=self.name,
            config=config,
            clock=self.clock,
            state=self.state,
            submit=self._submit,
            spawn=self._spawn,
            call_soon=self._call_soon,
            is_leader=lambda: self.raft.is_leader,
            term=lambda: self.raft.term,
        )
        self.notifier = Notifier.from_config(config)
        self.metrics = Metrics.from_config(config, self._gauges)
        self.notifier.on_result = self.metrics.notification
        self.outcomes = Outcomes(shared, self.metrics, replicate=self._replicate)
        self.runner = Runner(
            node_name=self.name,
            registry=self.registry,
            clock=self.clock,
            report=self.outcomes.ran,
            output_limit=config.output_limit,
            concurrency=config.executor_concurrency,
            limits=config.executor_limits,
            on_start=self._started_here,
            hidden=frozenset(value for value in (self.api_token, self.encrypt) if value),
            max_duration=config.max_duration,
        )
        self.liveness = Liveness(monotonic=interval_seconds(self.clock))
        self.cluster_key = cluster_key(self.encrypt)
        self.peers = Peers(self.cluster_key, tls=config.tls_cert is not None, tls_ca=config.tls_ca)
        self.verifier = Verifier(self.cluster_key, self.name)
        self.runs = Runs(
            shared,
            runner=self.runner,
            peers=self.peers,
            liveness=self.liveness,
            notifier=self.notifier,
            outcomes=self.outcomes,
            metrics=self.metrics,
            rng=rng,
        )
        self.followups = FollowUps(
            shared,
            runs=self.runs,
            outcomes=self.outcomes,
            liveness=self.liveness,
            rng=rng,
            ready=lambda: self._ready,
        )
        self.leadership = Leadership(
            shared,
            index=self.index,
            starts=self.runs,
            on_won=self.metrics.fired,
            caught_up=self.followups.resume,
            ready=lambda: self._ready,
        )
        self.roster = Roster(
            shared,
            liveness=self.liveness,
            peers=self.peers,
            runner=self.runner,
            runs=self.runs,
            outcomes=self.outcomes,
            leader_address=lambda: self.raft.leader,
        )
        self.peering = Peering(
            shared, raft=self.raft, peers=self.peers, roster=self.roster, ready=lambda: self._ready
        )
        self.history_copy = HistoryCopy(
            self.history,
            self.peers,
            finished=self.state.runs_counted,
            sources=self.roster.other_servers,
            tasks=self._loops,
        )
        self.recorder = Recorder(
            shared,
            history=self.history,
            history_copy=self.history_copy,
            metrics=self.metrics,
            notifier=self.notifier,
        )
        self.jobs = Jobs(
            shared,
            raft=self.raft,
            history=self.history,
            registry=self.registry,
            views=self.views,
            runner=self.runner,
            runs=self.runs,
            followups=self.followups,
            roster=self.roster,
            peering=self.peering,
            peers=self.peers,
            liveness=self.liveness,
            ping_keys=self.ping_keys,
        )
        self.backfiller = Backfiller(shared, starts=self.runs)
        self.watch = Watch(
            shared,
            notifier=self.notifier,
            busy=lambda: [e for e in self.jobs.busy() if not e.queued],
            missed_run=self._missed_run,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open history, replay the replicated log, and start scheduling when leader. A start
        that fails undoes what it had started."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._enter(self._stack)
        except BaseException:
            await unwind(self._take_stack(), hurry=True)
            raise
        self._ready = True
        self.leadership.changed()
        log.info("node %s started (%s)", self.name, "leader" if self.is_leader else "follower")

    async def _enter(self, stack: AsyncExitStack) -> None:
        """Storage and Raft first, then every service in the order of their dependencies: the
        stack stops them in reverse (scheduling first, the history last)."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.history.open()
        self.state.before_snapshot(self.history.flush)
        self.raft.start()
        await self.peering.wait_for_cluster()
        services: list[Service] = [
            self.roster,
            self.outcomes,
            self.runner,
            self.leadership,
            self.watch,
            self.backfiller,
        ]
        for service in services:
            await service.start(stack)
        self.history_copy.soon()  # a late joiner or a wiped disk: in the background
        if self.metrics.statsd_enabled:
            self._spawn(self.metrics.run_statsd(clock=self.clock))

    def _take_stack(self) -> AsyncExitStack:
        """The stack to unwind, and a fresh one holding the closers (``stop`` is idempotent)."""
        stack, self._stack = self._stack, self._closers()
        return stack

    def _closers(self) -> AsyncExitStack:
        """What every node closes, started or not; unwound last, the history last of all."""
        stack = AsyncExitStack()
        stack.callback(self.history.close)
        stack.callback(self.raft.stop)
        stack.callback(self.metrics.close)
        stack.push_async_callback(self.notifier.close)
        stack.push_async_callback(self.registry.aclose)
        stack.push_async_callback(self.peers.aclose)
        stack.push_async_callback(self._cancel_loops)
        return stack

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._loops.add(task)
        task.add_done_callback(self._loops.discard)

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop scheduling, let running executions finish (``graceful``; else cancel them) and
        close everything, in the reverse order of ``start``."""
        await unwind(self._take_stack(), hurry=not graceful)

    async def _cancel_loops(self) -> None:
        for task in list(self._loops):
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def leave(self) -> None:
        """Shut this node down gracefully (``POST /v1/leave``)."""
        self.on_leave()

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def _started_here(self, execution: Execution) -> None:
        group = self.state.group(execution.group) or {}
        if execution.scheduled_at is not None and not group.get("backfill"):  # late on purpose
            self.metrics.lateness((execution.started_at - execution.scheduled_at).total_seconds())

    def _on_knock(self, address: str) -> None:
        self.peering.knocked(address)

    def _on_leadership(self, is_leader: bool, term: int) -> None:
        self._call_soon(self.leadership.changed)
        self._call_soon(self.watch.leadership_changed)
        self._call_soon(self.backfiller.leadership_changed)

    async def _missed_run(self, job: Job, instant: datetime, why: str) -> None:
        """A heartbeat check's ping did not come: recorded as a failed run of its instant."""
        now = self.clock.now()
        group = self.runs.new_group()
        missed = Execution(
            id=f"{group}-{self.name}",
            job_name=job.name,
            node_name=self.name,
            group=group,
            started_at=now,
            finished_at=now,
            output=why,
            scheduled_at=instant,
        )
        try:
            await self._submit(record_run(missed, pinged=False))
        except DkronError as exc:
            log.warning("the missed ping of %r at %s is not recorded: %s", job.name, instant, exc)

    # -- plumbing ------------------------------------------------------------------------------

    async def _submit_writes(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Writes from concurrent requests share one Raft entry."""
        if len(commands) == 1:
            return [await self.raft.submit(commands[0])]
        result = await self.raft.submit(encode_batch(commands))
        return list(result["results"])

    # -- membership ----------------------------------------------------------------------------

    def _gauges(self) -> Gauges:
        queued, jobs = self.state.queue_length(), self.state.job_count()
        unhealthy = {name: record[0] for name, record in self.state.unhealthy().items()}
        by_health = dict.fromkeys(HEALTHS, 0) | Counter(unhealthy.values())
        by_health["ok"] = jobs - len(unhealthy)
        return Gauges(
            is_leader=self.is_leader,
            raft_term=self.raft.term,
            raft_commit_index=self.raft.applied_index,
            members_by_status=dict(self.roster.count_by_status()),
            executions_running=self.runner.running,
            executions_queued=self.runner.queued,
            queue_lengths={"global": queued, "local": self.runner.queued},
            jobs=jobs,
            paused=self.paused,
            jobs_by_health=by_health,
            unhealthy=unhealthy,
        )

    # -- what the edges read of the node itself -----------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.raft.is_leader

    @property
    def paused(self) -> bool:
        return self.state.is_paused()

    @property
    def storage_fault(self) -> str | None:
        """Why this node cannot write its data dir (full disk, I/O error: raft journal, meta,
        snapshot or history), or None. While set, writes answer ``InsufficientStorage`` and
        ``/health`` is unhealthy; it clears by itself once the retried write succeeds."""
        return self.raft.storage_fault or self.history.storage_fault

    async def _replicate(self, cmd: Command) -> dict[str, Any]:
        """Straight to Raft, not through the write batcher (the caller batches already)."""
        return await self.raft.submit(cmd.encode())

    async def _submit(self, cmd: Command, *, fenced: bool = False) -> dict[str, Any]:
        fault = self.storage_fault
        if fault is not None:
            raise InsufficientStorage(f"{fault}; nothing was written")
        wire = cmd.encode()  # the one place a command becomes the log's plain data
        if fenced:
            result = await self.raft.submit(wire, fenced=True)
        else:
            result = await self._writes.add(wire)
        if "error" in result:
            error = result["error"]
            raise error_class(error["type"])(error["message"])
        return result


def _raft_settings(config: Config, encrypt: str) -> RaftSettings:
    return RaftSettings(
        data_dir=config.data_dir / "raft",
        self_address=config.bind_addr if config.server else None,
        partners=tuple(config.join) + tuple(config.retry_join),
        password=encrypt,
        fsync=config.fsync,
    )
