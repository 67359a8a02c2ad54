"""The operations the API, the CLI and the Jupyter extension call: jobs and their runs, the
cluster as Dkron shows it, and the internal calls other nodes make. Each one reads the
replicated state or writes a command through Raft and waits for it to apply; none decides
anything the state machine or a service decides.

May call: ``JobViews``, the history (reads), ``Shared.submit``, ``Runs``, ``FollowUps``,
``Roster``, ``Peering``, ``Peers.post`` (a manual run sent to the leader, an output read
relayed to the node that runs the execution), ``Runner.read_output``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dkron_lab import codec
from dkron_lab._version import __version__
from dkron_lab.backfill import backfill_json, in_flight, plan
from dkron_lab.dispatch import Peers
from dkron_lab.errors import (
    BadRequest,
    ClusterError,
    ConflictError,
    ExecutionNotFound,
    NotFoundError,
)
from dkron_lab.followups import FollowUps
from dkron_lab.heartbeat import (
    HEARTBEAT_EXECUTOR,
    PingKeys,
    check_heartbeat,
    claim_won,
    ping_execution,
    record_run,
)
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.history.queries import ExecutionFilter, RunStats
from dkron_lab.membership import Liveness
from dkron_lab.model import secrets
from dkron_lab.model.calendar import Calendar
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import JOB_STATUSES, Job, JobStats, validate_job
from dkron_lab.model.limits import LimitChange
from dkron_lab.model.output import OUTPUT_READ_LIMIT, OutputChunk, read_chunk
from dkron_lab.model.overrides import RunOverrides, apply_overrides
from dkron_lab.notify import check_notify_on
from dkron_lab.peering import Peering
from dkron_lab.registry import PluginRegistry
from dkron_lab.roster import Roster
from dkron_lab.runner import OUTPUT_POLL, Runner
from dkron_lab.runs import Run, Runs, http_of
from dkron_lab.services import Shared
from dkron_lab.state.commands import (
    CancelBackfill,
    Claim,
    DeleteCalendar,
    DeleteExecutions,
    DeleteJob,
    Fire,
    Pause,
    PingStart,
    SetCalendar,
    SetJob,
    SetLimits,
    ToggleJob,
)
from dkron_lab.state.raft import RaftNode
from dkron_lab.views import ExecutionQuery, JobQuery, JobView, JobViews

__all__ = ["Jobs"]

RECORD_WAIT = 5.0
"""Seconds an output read that ends a run waits for the run's record to reach the history."""


class Jobs:
    def __init__(
        self,
        shared: Shared,
        *,
        raft: RaftNode,
        history: DuckDBHistory,
        registry: PluginRegistry,
        views: JobViews,
        runner: Runner,
        runs: Runs,
        followups: FollowUps,
        roster: Roster,
        peering: Peering,
        peers: Peers,
        liveness: Liveness,
        ping_keys: PingKeys,
    ) -> None:
        self._shared = shared
        self._ping_keys = ping_keys
        self._state = shared.state
        self._raft = raft
        self._history = history
        self._registry = registry
        self._views = views
        self._runner = runner
        self._runs = runs
        self._followups = followups
        self._roster = roster
        self._peering = peering
        self._peers = peers
        self._liveness = liveness

    # -- jobs ----------------------------------------------------------------------------------

    def get_job(self, name: str) -> JobView:
        return self._views.get(name)

    def list_jobs(self, query: JobQuery) -> tuple[list[JobView], int]:
        return self._views.page(query)

    def job_counts(self) -> tuple[int, dict[str, int]]:
        """How many jobs there are, and how many have each status (``untriggered``: never
        run), in one pass over the state: the dashboard's counters without a list query each
        (with 100,000 jobs, five of those kept the server busy for seconds)."""
        statuses = dict.fromkeys((*JOB_STATUSES, "untriggered"), 0)
        entries = self._state.entries()
        for entry in entries:
            status = entry.stats.status or "untriggered"
            statuses[status] = statuses.get(status, 0) + 1
        return len(entries), statuses

    async def set_job(self, job: Job, stats: JobStats | None = None) -> JobView:
        stored = self._state.find_job(job.name)
        job = secrets.unmask_job(job, stored)  # a job read from the API, saved back
        validate_job(job)
        check_notify_on(job.metadata)
        self._registry.validate(job.executor, job.executor_config, job.processors)
        await self._shared.submit(SetJob(job=job, stats=stats))
        return self.get_job(job.name)

    async def delete_job(self, name: str) -> JobView:
        view = self.get_job(name)
        await self._shared.submit(DeleteJob(name=name))
        return view

    async def toggle_job(self, name: str) -> JobView:
        await self._shared.submit(ToggleJob(name=name))
        return self.get_job(name)

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

    # -- calendars -----------------------------------------------------------------------------

    def calendars(self) -> list[Calendar]:
        """Every calendar, in name order."""
        return self._state.all_calendars()

    def get_calendar(self, name: str) -> Calendar:
        """``NotFoundError`` when there is no such calendar."""
        calendar = self._state.calendar(name)
        if calendar is None:
            raise NotFoundError(
                f"calendar {name!r} not found: create it with POST /v1/calendars "
                "(GET /v1/calendars lists them)"
            )
        return calendar

    async def set_calendar(self, calendar: Calendar) -> bool:
        """Create or replace ``calendar``; true when it was created."""
        result = await self._shared.submit(SetCalendar(calendar=calendar))
        return bool(result["created"])

    async def delete_calendar(self, name: str) -> Calendar:
        """``ConflictError`` while a job uses it."""
        calendar = self.get_calendar(name)
        await self._shared.submit(DeleteCalendar(name=name))
        return calendar

    async def set_paused(self, paused: bool) -> bool:
        result = await self._shared.submit(Pause(paused=paused))
        return bool(result["paused"])

    # -- runs ----------------------------------------------------------------------------------

    async def run_job(
        self,
        name: str,
        *,
        wait: bool = False,
        node: str | None = None,
        overrides: RunOverrides = RunOverrides(),  # noqa: B008 (frozen, empty)
    ) -> JobView:
        """Run ``name`` now on its target nodes, or on ``node`` alone (a manual run: no
        ``scheduled_at``). ``forbid`` and the concurrency limits hold as for scheduled runs.
        ``overrides`` change this run's env or notebook parameters only; ones the job cannot
        take are a ``BadRequest`` and nothing runs.

        Only the leader claims runs: a follower hands the request to it.
        """
        job = self.get_job(name).job
        if job.executor == HEARTBEAT_EXECUTOR:
            raise BadRequest(
                f"job {name!r} is a heartbeat check: it runs nothing, the process it watches "
                "pings it (POST /v1/jobs/<job>/ping, or its ping_url)"
            )
        overridden = apply_overrides(job, overrides)
        if overrides:
            self._registry.validate(
                overridden.executor, overridden.executor_config, overridden.processors
            )
        if not self._shared.is_leader():
            return await self._run_on_leader(name, wait, node, overrides)
        targets = self._runs.targets(job) if node is None else (self._live_node(node),)
        if not targets:
            raise NotFoundError(
                f"no target nodes found to run job {name!r}: no live node has the tags {job.tags}"
            )
        group = self._runs.new_group()
        claim = Claim(job=name, group=group, targets=tuple(targets))
        finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting = self._followups.waiting
        waiting[group] = finished
        (won,), queued = await self._runs.claim([claim])
        if not won:
            waiting.pop(group, None)
            raise ConflictError(
                f"job {name!r} is already running and its concurrency is 'forbid': "
                "wait for the run to finish, or set concurrency to 'allow'"
            )
        self._runs.override(group, overrides)
        if not queued:
            self._runs.start([Run(job, group, targets)])
        if wait:
            await finished
            await asyncio.to_thread(self._history.flush)
        else:
            waiting.pop(group, None)
        if self._state.find_job(name) is not None:
            return self.get_job(name)
        return JobView(job=job, stats=JobStats(), next_fire=None)

    def _live_node(self, name: str) -> str:
        known = self._state.node(name)
        if known is None or known.get("left"):
            names = ", ".join(sorted(n["name"] for n in self._state.all_nodes())) or "none"
            raise NotFoundError(f"node {name!r} is not a member: choose one of {names}")
        if name != self._shared.name and not self._liveness.is_alive(name):
            raise ClusterError(f"node {name!r} is not answering heartbeats: it cannot run jobs")
        return name

    async def _run_on_leader(
        self, name: str, wait: bool, node: str | None, overrides: RunOverrides
    ) -> JobView:
        leader = self._roster.leader()
        if leader is None:
            raise ClusterError("no leader is known yet: wait for the election, then retry")
        body: dict[str, Any] = {"wait": wait, "node": node}
        if overrides:
            body["overrides"] = overrides.to_json()
        answer = await self._peers.post(
            http_of(self._shared, leader["Name"]),
            f"/internal/v1/jobs/{name}/run",
            body,
            target=leader["Name"],
        )
        if wait:
            # The leader has applied the run's results; answer once this server has too.
            await self._applied(int(answer["applied_index"]), timeout=5.0)
            await asyncio.to_thread(self._history.flush)
        return self.get_job(name)

    async def _applied(self, index: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._raft.applied_index < index and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def list_executions(
        self, job_name: str, query: ExecutionQuery | None = None
    ) -> tuple[list[Execution], list[bool], int]:
        """A page of the job's executions (``JobNotFound`` for an unknown job), whether each
        output was cut to ``output_size_limit``, and how many there are in all."""
        self.get_job(job_name)
        query = query or ExecutionQuery()
        return await asyncio.to_thread(
            self._history.list_executions,
            job_name,
            sort=query.sort,
            order=query.order,
            start=query.start,
            end=query.end,
            output_size_limit=query.output_size_limit,
        )

    async def get_execution(self, job_name: str, execution_id: str) -> Execution:
        self.get_job(job_name)
        found = await asyncio.to_thread(self._history.get_execution, job_name, execution_id)
        if found is None:
            for running in self.busy():
                if running.id == execution_id and running.job_name == job_name:
                    return running
            raise ExecutionNotFound(f"execution {execution_id!r} of job {job_name!r} not found")
        return found

    async def delete_executions(self, name: str) -> JobView:
        await self._shared.submit(DeleteExecutions(name=name))
        return self.get_job(name)

    async def skipped(self, name: str) -> list[dict[str, Any]]:
        """Spans of the job's fires that were missed and deliberately not run, newest first."""
        self.get_job(name)
        return await asyncio.to_thread(self._history.list_skipped, name)

    # -- backfills ---------------------------------------------------------------------------------

    async def backfill(
        self, name: str, *, first: datetime, last: datetime, mode: str, max_parallel: int
    ) -> dict[str, Any]:
        """Start a backfill of ``name`` from ``first`` to ``last`` (``backfill.plan``): its
        instants that did not run, written to the replicated log before this answers."""
        job = self.get_job(name).job
        await asyncio.to_thread(self._history.flush)
        ran = await asyncio.to_thread(self._history.ran_instants, name, first, last)
        in_flight = [
            at
            for group in self._state.open_groups().values()
            if group["job"] == name
            and (at := codec.parse_time(group.get("scheduled_at"), "scheduled_at")) is not None
        ]
        started = plan(
            job,
            first=first,
            last=last,
            mode=mode,
            max_parallel=max_parallel,
            now=self._shared.clock.now(),
            ran=[*ran, *in_flight],
            taken=self._state.backfilled_of(name),
            calendar=self._state.calendar(job.calendar) if job.calendar else None,
            watermark=self._state.last_fired_of(name),
        )
        await self._shared.submit(started)
        return self.get_backfill(started.id)

    def backfills(self, job: str | None = None) -> list[dict[str, Any]]:
        """Every backfill kept (of ``job``), newest first."""
        running = in_flight(self._state)
        return [
            backfill_json(record, running.get(record["id"], 0))
            for record in reversed(self._state.all_backfills())
            if job is None or record["job"] == job
        ]

    def get_backfill(self, backfill_id: str) -> dict[str, Any]:
        record = self._state.backfill(backfill_id)
        if record is None:
            raise NotFoundError(f"no backfill {backfill_id!r}: GET /v1/backfills lists them")
        return backfill_json(record, in_flight(self._state).get(backfill_id, 0))

    async def cancel_backfill(self, backfill_id: str) -> dict[str, Any]:
        """Claim no more of its instants; the runs in flight finish."""
        self.get_backfill(backfill_id)
        await self._shared.submit(CancelBackfill(id=backfill_id))
        return self.get_backfill(backfill_id)

    # -- heartbeat checks ------------------------------------------------------------------------

    def ping_key(self, name: str) -> str:
        """The job's ping key (``heartbeat.PingKeys``)."""
        return self._ping_keys.key(name)

    def ping_key_opens(self, name: str, key: str) -> bool:
        return self._ping_keys.matches(name, key)

    async def ping(self, name: str, *, kind: str, body: str) -> Execution | None:
        """Record a ping of the heartbeat check ``name``: ``/start`` notes when the work began
        (answers ``None``); ``/ping`` and ``/fail`` are a run of the instant they cover, written
        to the replicated log before this answers."""
        job = self.get_job(name).job
        check_heartbeat(job)
        now = self._shared.clock.now()
        if kind == "start":
            await self._shared.submit(PingStart(job=name, at=codec.format_time(now) or ""))
            return None
        execution = ping_execution(
            job,
            kind=kind,
            body=body,
            at=now,
            started=self._state.ping_started(name),
            node_name=self._shared.name,
            default_grace=self._shared.config.max_lateness,
            calendar=self._state.calendar(job.calendar) if job.calendar else None,
        )
        if not claim_won(await self._shared.submit(record_run(execution))):
            # Its instant is already settled (an earlier ping, or called missed): the ping is
            # still a run, one of no instant.
            execution = replace(execution, scheduled_at=None)
            await self._shared.submit(record_run(execution))
        return execution

    def busy(self) -> list[Execution]:
        """Running now anywhere: here live, elsewhere as of each node's last heartbeat; then
        the runs queued cluster-wide under the concurrency limits, oldest first."""
        elsewhere = [
            codec.execution_from_json(e)
            for e in self._liveness.busy()
            if e.get("node_name") != self._shared.name
        ]
        running = sorted([*self._runner.busy(), *elsewhere], key=lambda e: e.started_at)
        return running + self._queued_cluster_wide()

    def _queued_cluster_wide(self) -> list[Execution]:
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
            for gid, group in self._state.queued()
            for target in group["targets"]
        ]

    # -- concurrency limits --------------------------------------------------------------------

    def concurrency(self) -> dict[str, Any]:
        """The cluster-wide limits in force, the runs holding a slot and the runs queued."""
        limits = self._runs.limits
        busy, by_group, queued = self._state.concurrency_use()
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

    async def set_limits(self, change: LimitChange) -> dict[str, Any]:
        """Set cluster-wide limits for every server (0: no limit); see ``concurrency()``."""
        submit = self._shared.submit
        await submit(SetLimits(overall=change.overall, groups=dict(change.groups)))
        if self._shared.is_leader():
            # Queued runs are let through under the new limits now, not at the next claim.
            await submit(Fire(limits=self._runs.limits), fenced=True)
        return self.concurrency()

    # -- the cluster ---------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        return self._roster.members()

    def leader(self) -> dict[str, Any] | None:
        return self._roster.leader()

    def info(self) -> dict[str, Any]:
        members = self._roster.count_by_status()
        return {
            "agent": {"name": self._shared.name, "version": __version__},
            "serf": {
                "members": str(members.total()),
                "failed": str(members["failed"]),
                "left": str(members["left"]),
                "encrypted": "true",
            },
            "raft": {key: str(value) for key, value in self._raft.status().items()},
            "tags": self._roster.tags,
        }

    def raft_peers(self) -> list[dict[str, Any]]:
        return self._peering.voters()

    async def add_peer(self, address: str, *, knocked: bool = False) -> None:
        await self._peering.add(address, knocked=knocked)

    async def remove_peer(self, peer: str) -> None:
        await self._peering.remove(peer)

    # -- calls from other nodes ----------------------------------------------------------------

    def heard_from(self, name: str, busy: list[dict[str, Any]]) -> None:
        """A heartbeat from ``name``, with the executions it is running."""
        self._liveness.beat(name, busy)

    def accept_run(self, payload: dict[str, Any]) -> None:
        self._runs.accept(payload)

    # -- what the web UI reads (issue 12) --------------------------------------------------------

    async def list_all_executions(
        self,
        found: ExecutionFilter,
        query: ExecutionQuery,
        *,
        finished: bool = True,
        running: bool = True,
    ) -> tuple[list[Execution], list[bool], int]:
        """Page ``[query.start:query.end]`` (``end`` is required) of every job's executions
        that ``found`` selects: with ``finished`` those of this server's history, sorted by
        ``query``; with ``running`` those running now anywhere as ``busy()`` shows them,
        newest first, before the finished ones (after them for ``order="ASC"``). Returns the
        page, each output's ``output_truncated`` flag, and how many there are in all."""
        if query.end is None:
            raise ValueError("list_all_executions needs a bounded page: set query.end")
        ascending = query.order.upper() == "ASC"
        live = [e for e in self.busy() if running and not e.queued and _selects(found, e)]
        live.sort(key=lambda e: (e.started_at, e.id), reverse=not ascending)
        first = 0 if ascending else len(live)  # how many rows come before the stored ones
        offset = max(query.start - first, 0)
        stored, cut, total = await asyncio.to_thread(
            self._history.list_all_executions,
            found,
            sort=query.sort,
            order=query.order,
            offset=offset,
            limit=max(query.end - first - offset, 0) if finished else 0,
            output_size_limit=query.output_size_limit,
        )
        total = total if finished else 0
        first = total if ascending else 0  # where the running ones begin
        shown = [_cut_to(e, query.output_size_limit) for e in live]
        shown = shown[max(query.start - first, 0) : max(query.end - first, 0)]
        rows = [*stored, *(e for e, _ in shown)] if ascending else [*(e for e, _ in shown), *stored]
        flags = [*cut, *(c for _, c in shown)] if ascending else [*(c for _, c in shown), *cut]
        return rows, flags, total + len(live)

    async def read_output(
        self, job_name: str, execution_id: str, offset: int, *, wait: float = 0.0
    ) -> OutputChunk:
        """The output of an execution from byte ``offset``: from this node's runner while it
        runs here (or just ended here), through a signed call to the node that runs it, else
        from the history's record. ``wait`` as in ``Runner.read_output``.
        ``ExecutionNotFound`` when no one knows it."""
        self.get_job(job_name)
        chunk = await self.read_output_here(job_name, execution_id, offset, wait=wait)
        node = self._running_on(job_name, execution_id) if chunk is None else None
        if node is not None:
            # ExecutionNotFound: it ended there and was forgotten; the history has it (or will)
            with contextlib.suppress(ExecutionNotFound):
                chunk = await self._read_output_on(node, job_name, execution_id, offset, wait)
        if chunk is not None:
            if chunk.done:  # a reader told "done" then asks for the execution: have it ready
                await self._recorded(job_name, execution_id)
            return chunk
        found = await asyncio.to_thread(self._history.get_execution, job_name, execution_id)
        if found is None:
            raise ExecutionNotFound(f"execution {execution_id!r} of job {job_name!r} not found")
        stored = found.output.encode("utf-8", errors="replace")
        return read_chunk(stored, base=0, offset=offset, limit=OUTPUT_READ_LIMIT, ended=True)

    async def _recorded(self, job_name: str, execution_id: str) -> None:
        """Wait (at most ``RECORD_WAIT`` seconds) until this server's history holds the
        execution: the run ends on its node before its record has gone through Raft."""
        deadline = asyncio.get_running_loop().time() + RECORD_WAIT
        get = self._history.get_execution
        while await asyncio.to_thread(get, job_name, execution_id) is None:
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(OUTPUT_POLL)

    async def read_output_here(
        self, job_name: str, execution_id: str, offset: int, *, wait: float = 0.0
    ) -> OutputChunk | None:
        """The output of an execution this node runs or just ran, else ``None`` (for the node
        that relays a reader's request)."""
        return await self._runner.read_output(
            job_name, execution_id, offset, limit=OUTPUT_READ_LIMIT, wait=wait
        )

    def _running_on(self, job_name: str, execution_id: str) -> str | None:
        for running in self._liveness.busy():
            if running.get("id") == execution_id and running.get("job_name") == job_name:
                node = str(running.get("node_name", ""))
                return node if node and node != self._shared.name else None
        return None

    async def _read_output_on(
        self, node: str, job_name: str, execution_id: str, offset: int, wait: float
    ) -> OutputChunk:
        answer = await self._peers.post(
            http_of(self._shared, node),
            "/internal/v1/output",
            {"job": job_name, "execution": execution_id, "offset": offset, "wait": wait},
            target=node,
            timeout=wait + 5.0,
        )
        return OutputChunk.from_json(answer)

    async def run_stats(self, job_names: list[str]) -> dict[str, RunStats]:
        """The last runs and median duration of each of ``job_names`` that has finished runs
        in this server's history (one query for all of them)."""
        return await asyncio.to_thread(self._history.run_stats, job_names)


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


def _selects(found: ExecutionFilter, execution: Execution) -> bool:
    """Whether a running execution passes ``found`` (it has no outcome yet: ``success`` is
    for finished ones)."""
    return (
        found.success is None
        and found.job in (None, execution.job_name)
        and found.node in (None, execution.node_name)
        and (found.since is None or execution.started_at >= found.since)
        and (found.until is None or execution.started_at < found.until)
    )


def _cut_to(execution: Execution, size: int | None) -> tuple[Execution, bool]:
    """A running execution with its output tail cut to ``size`` characters, and whether it
    was cut (``output_size_limit``)."""
    if size is None or len(execution.output) <= size:
        return execution, False
    return replace(execution, output=execution.output[len(execution.output) - size :]), True
