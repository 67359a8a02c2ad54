"""The composition root: one node built from one ``Config``.

It wires the replicated state (pysyncobj, through ``state.raft``), the execution history
(DuckDB), the schedule index and the leader's scheduler, the runner and the plugins, and offers
the operations the API, the CLI and the Jupyter extension call (the "facade").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dkron_lab import codec, credentials
from dkron_lab._version import __version__
from dkron_lab.batching import Batcher
from dkron_lab.clock import Clock, SystemClock
from dkron_lab.config import Config
from dkron_lab.credentials import secure_data_dir
from dkron_lab.dispatch import Peers, Verifier, cluster_key
from dkron_lab.errors import (
    ClusterError,
    ConflictError,
    ExecutionNotFound,
    InsufficientStorage,
    NotFoundError,
    error_class,
)
from dkron_lab.followups import FollowUps
from dkron_lab.history.copy import HistoryCopy
from dkron_lab.history.duckdb import DuckDBHistory, SqlLimits
from dkron_lab.leader import Leadership
from dkron_lab.membership import (
    Liveness,
    NodeInfo,
)
from dkron_lab.metrics import Gauges, Metrics
from dkron_lab.model import secrets
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job, JobStats, validate_job
from dkron_lab.notify import Notifier, check_notify_on
from dkron_lab.outcomes import Outcomes
from dkron_lab.peering import Peering
from dkron_lab.plugins import PluginRegistry
from dkron_lab.roster import Roster
from dkron_lab.runner import Runner
from dkron_lab.runs import Run, Runs, http_of
from dkron_lab.scheduler import ScheduleIndex
from dkron_lab.services import Shared
from dkron_lab.state.machine import (
    ExecutionFinished,
    ExecutionsCleared,
    FiresSkipped,
    JobChanged,
    JobState,
    StateRestored,
    command,
)
from dkron_lab.state.raft import RaftNode, RaftSettings
from dkron_lab.views import JobQuery, JobView, JobViews

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
        self.views = JobViews(self.state, self.index)
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
        self._loops: set[asyncio.Task[None]] = set()  # background work, cancelled at stop
        self._ready = False
        self.on_leave: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: Batcher[dict[str, Any], dict[str, Any]] = Batcher(
            self._submit_writes, check=codec.check_command
        )
        self.started_at = datetime.now(UTC)
        self._build_services(config, rng or random.Random())

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
        self.outcomes = Outcomes(shared, self.metrics, replicate=self.raft.submit)
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
        )
        self.liveness = Liveness()
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
            finished=self._finished_count,
            sources=self._history_sources,
            tasks=self._loops,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open history, replay the replicated log, and start scheduling when leader."""
        self._loop = asyncio.get_running_loop()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.history.open()
        kinds = (ExecutionFinished, ExecutionsCleared, FiresSkipped, StateRestored)
        self.state.subscribe(self._on_event, *kinds)
        self.state.subscribe(self._job_changed, JobChanged)
        self.state.before_snapshot(self.history.flush)
        self.raft.start()
        await self._wait_for_cluster()
        self.leadership.reindex(resume=True)
        await self.roster.register()
        self.history_copy.soon()  # a late joiner or a wiped disk: in the background
        await self.outcomes.fail_orphans()
        self._spawn(self.roster.heartbeats())
        self._spawn(self.roster.leases())
        if self.metrics.statsd_enabled:
            self._spawn(self.metrics.run_statsd(clock=self.clock))
        self._ready = True
        self.leadership.changed()
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
        await self.leadership.stop()
        if graceful:
            await self.runner.drain()
        else:
            await self.runner.cancel_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.outcomes.done.drain(), timeout=10.0)
        if graceful and self._ready:
            await self.roster.say_goodbye()
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

    def _on_event(
        self, event: ExecutionFinished | ExecutionsCleared | FiresSkipped | StateRestored
    ) -> None:
        """What the history records of the replicated log (every server keeps all of it)."""
        if isinstance(event, ExecutionFinished):
            self.history.append(event.execution)
            if self.notifier.enabled:
                self._call_soon(self._execution_finished, event)
        elif isinstance(event, ExecutionsCleared):
            self.history.delete_job(event.job_name)
        elif isinstance(event, FiresSkipped):
            self._record_skipped(event)
        else:  # the executions of the entries the snapshot replaced never reached our history
            self._call_soon(self.history_copy.soon)

    def _record_skipped(self, event: FiresSkipped) -> None:
        if self.raft.is_leader:
            self.metrics.skipped(sum(int(span["count"]) for span in event.spans))
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

    def _job_changed(self, event: JobChanged) -> None:
        if event.job is None:
            self.metrics.forget_job(event.name)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def _started_here(self, execution: Execution) -> None:
        if execution.scheduled_at is not None:
            self.metrics.lateness((execution.started_at - execution.scheduled_at).total_seconds())

    def _execution_finished(self, event: ExecutionFinished) -> None:
        """On the leader: announce a run's final attempt (one to be retried is not)."""
        job = self.state.jobs.get(event.execution.job_name)
        if job is None or not event.final or not self.is_leader or not self.notifier.enabled:
            return
        self._spawn(
            self.notifier.finished(job, event.execution, previous_success=event.previous_success)
        )

    def _on_knock(self, address: str) -> None:
        self.peering.knocked(address)

    def _on_leadership(self, is_leader: bool, term: int) -> None:
        self._call_soon(self.leadership.changed)

    # -- firing --------------------------------------------------------------------------------

    # -- reporting -------------------------------------------------------------------------------

    async def _submit_writes(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Writes from concurrent requests share one Raft entry."""
        if len(commands) == 1:
            return [await self.raft.submit(commands[0])]
        result = await self.raft.submit(command("batch", commands=commands))
        return list(result["results"])

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

    def get_job(self, name: str) -> JobView:
        return self.views.get(name)

    def list_jobs(self, query: JobQuery) -> tuple[list[JobView], int]:
        return self.views.page(query)

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
            "tags": self.roster.tags,
        }

    def members(self) -> list[dict[str, Any]]:
        return self.roster.members()

    def leader(self) -> dict[str, Any] | None:
        return self.roster.leader()

    def raft_peers(self) -> list[dict[str, Any]]:
        return self.peering.voters()

    # -- the facade: internal calls from other nodes -------------------------------------------

    def heard_from(self, name: str, busy: list[dict[str, Any]]) -> None:
        """A heartbeat from ``name``, with the executions it is running."""
        self.liveness.beat(name, busy)

    def accept_run(self, payload: dict[str, Any]) -> None:
        self.runs.accept(payload)

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
        targets = self.runs.targets(job) if node is None else (self._live_node(node),)
        if not targets:
            raise NotFoundError(
                f"no target nodes found to run job {name!r}: no live node has the tags {job.tags}"
            )
        group = self.runs.new_group()
        claim = {"job": name, "scheduled_at": None, "group": group, "targets": targets}
        finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.followups.waiting[group] = finished
        (won,), queued = await self.runs.claim([claim])
        if not won:
            self.followups.waiting.pop(group, None)
            raise ConflictError(
                f"job {name!r} is already running and its concurrency is 'forbid': "
                "wait for the run to finish, or set concurrency to 'allow'"
            )
        if not queued:
            self.runs.start([Run(job, group, targets)])
        if wait:
            await finished
            await asyncio.to_thread(self.history.flush)
        else:
            self.followups.waiting.pop(group, None)
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
            http_of(self._shared, leader["Name"]),
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

    async def add_peer(self, address: str, *, knocked: bool = False) -> None:
        await self.peering.add(address, knocked=knocked)

    async def remove_peer(self, peer: str) -> None:
        await self.peering.remove(peer)

    async def skipped(self, name: str) -> list[dict[str, Any]]:
        """Spans of the job's fires that were missed and deliberately not run, newest first."""
        self.get_job(name)
        return await asyncio.to_thread(self.history.list_skipped, name)

    async def delete_executions(self, name: str) -> JobView:
        await self._submit(command("delete_executions", name=name))
        return self.get_job(name)

    def concurrency(self) -> dict[str, Any]:
        """The cluster-wide limits in force, the runs holding a slot and the runs queued."""
        limits = self.runs.limits
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
            let_through = command("fire", fires=[], limits=self.runs.limits.to_json())
            await self._submit(let_through, fenced=True)
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
