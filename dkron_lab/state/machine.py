"""The replicated state machine: jobs, their counters, fire claims and runs in flight.

``JobState.apply`` is deterministic: it reads nothing but the command and the state, so every
replica that applies the same log holds the same state. Commands are versioned plain dicts
(``{"type": "set_job", "v": 1, ...}``, see ``dkron_lab.state.commands``), decoded once here and
handled by type; results are plain dicts, ``{"error": {...}}`` on refusal.
Execution history is not kept here (it would grow for ever): finished executions are handed to
listeners (the DuckDB writer) as ``ExecutionFinished`` events.

Services read the state only through ``JobState``'s read methods, which take the lock
themselves and answer values that do not change afterwards (jobs are frozen; records are
read-only copies).

Listeners are called on the applying thread, under ``lock``: they must be quick and must not
write to the state (its read methods are fine: the lock is reentrant).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import (
    BadRequest,
    DkronError,
    InvalidJob,
    JobHasDependents,
    JobNotFound,
    Paused,
)
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job, JobStats, retry_interval
from dkron_lab.state.commands import (
    Batch,
    Claim,
    Command,
    DeleteExecutions,
    DeleteJob,
    Deregister,
    Done,
    Fire,
    Limits,
    Pause,
    Register,
    Retry,
    SetJob,
    SetLimits,
    Skip,
    ToggleJob,
    decode,
)

__all__ = [
    "COMMAND_VERSION",
    "ChildrenDue",
    "ExecutionFinished",
    "ExecutionsCleared",
    "FireClaimed",
    "FiresSkipped",
    "GroupFinished",
    "GroupStarted",
    "JobChanged",
    "JobEntry",
    "JobState",
    "Limits",
    "RetryDue",
    "StateRestored",
    "command",
    "copy_group",
]

log = logging.getLogger(__name__)

COMMAND_VERSION = 1


def command(kind: str, **fields: Any) -> dict[str, Any]:
    """A wire dict as the Raft log holds it, for tests and tools; services build the typed
    commands of ``dkron_lab.state.commands``."""
    return {"type": kind, "v": COMMAND_VERSION, **fields}


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A job was created, updated (``job`` set) or deleted (``job`` is None)."""

    name: str
    job: Job | None


@dataclass(frozen=True, slots=True)
class ExecutionFinished:
    """An execution was recorded. ``final`` is false for an attempt that will be retried;
    ``previous_success`` is the job's result before this one (``None``: it never ran)."""

    execution: Execution
    final: bool = True
    previous_success: bool | None = None


@dataclass(frozen=True, slots=True)
class ExecutionsCleared:
    job_name: str


@dataclass(frozen=True, slots=True)
class GroupFinished:
    """Every target of one trigger has reported; ``status`` is the group's Dkron status."""

    job_name: str
    group: int
    status: str


@dataclass(frozen=True, slots=True)
class RetryDue:
    """``node``'s run in ``group`` failed with attempts left: run attempt ``attempt`` at ``at``
    (on the leader, through a fenced ``retry`` claim)."""

    job_name: str
    group: int
    node: str
    attempt: int
    at: datetime


@dataclass(frozen=True, slots=True)
class ChildrenDue:
    """A group of ``parent`` succeeded: each of its dependent jobs is owed one run."""

    parent: str
    group: int


@dataclass(frozen=True, slots=True)
class GroupStarted:
    """A queued group got room under the concurrency limits: the leader starts its runs."""

    job_name: str
    group: int


@dataclass(frozen=True, slots=True)
class StateRestored:
    """The whole state was replaced from a snapshot."""


@dataclass(frozen=True, slots=True)
class FireClaimed:
    """A scheduled fire of ``job_name`` at ``scheduled_at`` was claimed (by any leader)."""

    job_name: str
    scheduled_at: datetime


@dataclass(frozen=True, slots=True)
class FiresSkipped:
    """Missed fires of ``job_name`` that were deliberately not run (catch-up policy)."""

    job_name: str
    spans: tuple[dict[str, Any], ...]

    @property
    def last(self) -> datetime | None:
        """The latest instant the spans name: everything up to it is handled."""
        instants = (codec.parse_time(span["last"], "last") for span in self.spans)
        return max((at for at in instants if at is not None), default=None)


def _skipped_once(name: str, at: str | None, reason: str) -> FiresSkipped:
    """One instant (``at``, RFC 3339) of ``name`` not run, for ``reason``."""
    return FiresSkipped(name, ({"reason": reason, "first": at, "last": at, "count": 1},))


Event = (
    JobChanged
    | RetryDue
    | ChildrenDue
    | GroupStarted
    | ExecutionFinished
    | ExecutionsCleared
    | GroupFinished
    | StateRestored
    | FireClaimed
    | FiresSkipped
)
Handler = Callable[["JobState", Any], dict[str, Any]]


class JobState:
    """All replicated state of the cluster; read it through the read methods below."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._listeners: list[Callable[[Event], None]] = []
        self._snapshot_hooks: list[Callable[[], None]] = []
        self._clear()

    def _clear(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.stats: dict[str, JobStats] = {}
        self.children: dict[str, set[str]] = {}
        self.names: list[str] = []
        self.last_fired: dict[str, datetime] = {}
        self.groups: dict[int, dict[str, Any]] = {}
        self.running: dict[str, set[int]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.paused = False
        self.owed: list[dict[str, Any]] = []  # {"child", "parent_group"}: dependent runs due
        self.queue: list[int] = []  # groups waiting for room under the limits, oldest first
        self.limits = Limits()  # as the last fire command carried them
        self.limit_settings: dict[str, Any] = {}  # set through the API: {"overall", "groups"}

    # -- listeners -------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[Any], None], *kinds: type) -> None:
        """Call ``listener`` (on the Raft thread, lock held) with every event of ``kinds``
        (every event when none are named)."""
        if kinds:
            wanted = kinds

            def filtered(event: Event) -> None:
                if isinstance(event, wanted):
                    listener(event)

            self._listeners.append(filtered)
        else:
            self._listeners.append(listener)

    def before_snapshot(self, hook: Callable[[], None]) -> None:
        """``hook`` runs before every snapshot (e.g. to flush history that the log will drop)."""
        self._snapshot_hooks.append(hook)

    def _emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("state listener failed on %s", type(event).__name__)

    # -- the state machine -----------------------------------------------------------------

    def apply(self, cmd: Mapping[str, Any] | Command) -> dict[str, Any]:
        """Apply one command (a wire dict from the log, decoded here, or a typed one);
        never raises."""
        with self.lock:
            try:
                typed = cmd if isinstance(cmd, _COMMAND_TYPES) else decode(cmd)
                return _HANDLERS[type(typed)](self, typed)
            except DkronError as exc:
                return _error(exc)

    def snapshot(self) -> dict[str, Any]:
        for hook in self._snapshot_hooks:
            hook()
        with self.lock:
            return {
                "v": COMMAND_VERSION,
                "jobs": [codec.job_to_record(job) for job in self.jobs.values()],
                "stats": {name: codec.stats_to_json(s) for name, s in self.stats.items()},
                "last_fired": {n: codec.format_time(t) for n, t in self.last_fired.items()},
                "groups": {str(g): copy_group(group) for g, group in self.groups.items()},
                "paused": self.paused,
                "nodes": {name: dict(node) for name, node in self.nodes.items()},
                "owed": [dict(entry) for entry in self.owed],
                "queue": list(self.queue),
                "limits": self.limits.to_json(),
                "limit_settings": dict(self.limit_settings),
            }

    def restore(self, data: dict[str, Any]) -> None:
        with self.lock:
            self._clear()
            for record in data.get("jobs", []):
                job, _ = codec.job_from_json(record)
                self._put_job(job)
            for name, stats in data.get("stats", {}).items():
                self.stats[name] = codec.job_from_json({"name": name, **stats})[1]
            for name, when in data.get("last_fired", {}).items():
                self.last_fired[name] = codec.parse_time(when, "last_fired")  # type: ignore[assignment]
            for key, group in data.get("groups", {}).items():
                self._open_group(int(key), group)
            self.paused = bool(data.get("paused", False))
            self.nodes = {name: dict(node) for name, node in data.get("nodes", {}).items()}
            self.owed = [dict(entry) for entry in data.get("owed", [])]
            self.queue = [int(group) for group in data.get("queue", [])]
            self.limits = Limits.from_json(data.get("limits"))
            self.limit_settings = dict(data.get("limit_settings", {}))
            self._emit(StateRestored())

    # -- reads: each takes the lock and answers values that stay as they are ------------------
    #
    # Jobs are frozen model values; groups, nodes and owed runs are answered as read-only
    # copies (``MappingProxyType``), so no caller holds the lock or sees a later change.

    def job(self, name: str) -> Job:
        """``JobNotFound`` when there is no such job."""
        with self.lock:
            try:
                return self.jobs[name]
            except KeyError:
                raise JobNotFound(f"job {name!r} not found") from None

    def find_job(self, name: str) -> Job | None:
        with self.lock:
            return self.jobs.get(name)

    def entry(self, name: str) -> JobEntry:
        """A job with its counters and dependents; ``JobNotFound`` when there is none."""
        with self.lock:
            return self._entry(self.job(name))

    def entries(self) -> list[JobEntry]:
        """Every job with its counters and dependents, in name order."""
        with self.lock:
            return [self._entry(self.jobs[name]) for name in self.names]

    def entries_by_name(
        self, start: int, end: int | None, *, descending: bool = False
    ) -> tuple[list[JobEntry], int]:
        """Positions ``start`` to ``end`` of the jobs in name order (or reversed), and how
        many jobs there are: a page without reading every job."""
        with self.lock:
            names, total = self.names, len(self.names)
            stop = total if end is None else min(end, total)
            if descending:
                page = [names[total - 1 - i] for i in range(start, stop)]
            else:
                page = names[start:stop]
            return [self._entry(self.jobs[name]) for name in page], total

    def _entry(self, job: Job) -> JobEntry:
        stats = self.stats.get(job.name, _NEVER_RUN)
        return JobEntry(job=job, stats=stats, dependents=self.dependents(job.name))

    def all_jobs(self) -> list[Job]:
        with self.lock:
            return list(self.jobs.values())

    def jobs_with_last_fired(self) -> list[tuple[Job, datetime | None]]:
        """Every job and the last instant of it handled (fired or skipped), for the catch-up."""
        with self.lock:
            return [(job, self.last_fired.get(job.name)) for job in self.jobs.values()]

    def last_fired_of(self, name: str) -> datetime | None:
        with self.lock:
            return self.last_fired.get(name)

    def stats_of(self, name: str) -> JobStats:
        with self.lock:
            return self.stats.get(name, _NEVER_RUN)

    def queue_length(self) -> int:
        """Groups waiting for room under the concurrency limits."""
        with self.lock:
            return len(self.queue)

    def job_count(self) -> int:
        with self.lock:
            return len(self.jobs)

    def runs_counted(self) -> int:
        """Finished runs the counters hold, over every job."""
        with self.lock:
            return sum(s.success_count + s.error_count for s in self.stats.values())

    def dependents(self, name: str) -> tuple[str, ...]:
        with self.lock:
            return tuple(sorted(self.children.get(name, ())))

    def is_paused(self) -> bool:
        with self.lock:
            return self.paused

    def limits_in_force(self) -> Limits:
        """The concurrency limits the last ``fire`` command carried."""
        with self.lock:
            return self.limits

    def api_limits(self) -> Mapping[str, Any]:
        """The limits set through the API: ``{"overall"?, "groups"?}``."""
        with self.lock:
            return _frozen(self.limit_settings)

    def node(self, name: str) -> Mapping[str, Any] | None:
        """A registered node's ``NodeInfo`` dict."""
        with self.lock:
            node = self.nodes.get(name)
            return None if node is None else _frozen(node)

    def all_nodes(self) -> list[Mapping[str, Any]]:
        with self.lock:
            return [_frozen(node) for node in self.nodes.values()]

    def group(self, group: int) -> Mapping[str, Any] | None:
        """An open group's record: ``job``, ``targets``, ``results``, ``scheduled_at``, and
        ``attempts``, ``retry``, ``queued``, ``limit_group``, ``untargeted`` when set."""
        with self.lock:
            record = self.groups.get(group)
            return None if record is None else _frozen(copy_group(record))

    def open_groups(self) -> dict[int, Mapping[str, Any]]:
        """Every open group (claimed, not finished) by id."""
        with self.lock:
            return {gid: _frozen(copy_group(g)) for gid, g in self.groups.items()}

    def queued(self) -> list[tuple[int, Mapping[str, Any]]]:
        """The groups waiting for room under the concurrency limits, oldest first."""
        with self.lock:
            return [(gid, _frozen(copy_group(self.groups[gid]))) for gid in self.queue]

    def owed_runs(self) -> list[Mapping[str, Any]]:
        """Dependent runs due: ``{"child", "parent_group"}``."""
        with self.lock:
            return [_frozen(entry) for entry in self.owed]

    def concurrency_use(self) -> tuple[int, dict[str, int], dict[str, int]]:
        """Run slots held, overall and by concurrency group, and groups queued by
        concurrency group ("" for none), read at one moment."""
        with self.lock:
            busy, by_group = self.busy_slots()
            queued: dict[str, int] = {}
            for gid in self.queue:
                name = self.groups[gid].get("limit_group", "")
                queued[name] = queued.get(name, 0) + 1
            return busy, by_group, queued

    def busy_slots(self) -> tuple[int, dict[str, int]]:
        """Runs started and not finished (a pending retry holds its slot): overall and per
        concurrency group."""
        overall, by_group = 0, dict[str, int]()
        with self.lock:
            for group in self.groups.values():
                if group.get("queued"):
                    continue
                slots = len(group["targets"]) - len(group["results"])
                overall += slots
                name = group.get("limit_group", "")
                if name:
                    by_group[name] = by_group.get(name, 0) + slots
        return overall, by_group

    # -- helpers used by the handlers ----------------------------------------------------------

    def _put_job(self, job: Job) -> Job | None:
        previous = self.jobs.get(job.name)
        if previous is None:
            bisect.insort(self.names, job.name)
        elif previous.parent_job and previous.parent_job != job.parent_job:
            self.children.get(previous.parent_job, set()).discard(job.name)
        if job.parent_job:
            self.children.setdefault(job.parent_job, set()).add(job.name)
        self.jobs[job.name] = job
        self.stats.setdefault(job.name, _NEVER_RUN)
        return previous

    def _drop_job(self, name: str) -> None:
        job = self.jobs.pop(name)
        del self.names[bisect.bisect_left(self.names, name)]
        if job.parent_job:
            self.children.get(job.parent_job, set()).discard(name)
        self.stats.pop(name, None)
        self.last_fired.pop(name, None)
        for group in self.running.pop(name, ()):
            self.groups.pop(group, None)
            if group in self.queue:
                self.queue.remove(group)
        self.owed = [entry for entry in self.owed if entry["child"] != name]

    def _open_group(self, group: int, record: dict[str, Any]) -> None:
        self.groups[group] = record
        self.running.setdefault(record["job"], set()).add(group)

    def _close_group(self, group: int) -> dict[str, Any]:
        if group in self.queue:
            self.queue.remove(group)
        record = self.groups.pop(group)
        running = self.running.get(record["job"], set())
        running.discard(group)
        if not running:
            self.running.pop(record["job"], None)
        return record


_NEVER_RUN = JobStats()  # shared: most of 100,000 jobs may never have run


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEntry:
    """A job as the state holds it: the job, its counters and the jobs that depend on it."""

    job: Job
    stats: JobStats
    dependents: tuple[str, ...]


def _frozen(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of a record (nested dicts and lists copied, not frozen)."""
    return MappingProxyType(dict(record))


def _error(exc: DkronError) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "message": exc.message}}


def copy_group(group: dict[str, Any]) -> dict[str, Any]:
    """A group's record that stays as it is when the state changes (read outside the lock)."""
    copy = {**group, "targets": list(group["targets"]), "results": dict(group["results"])}
    for key in ("attempts", "retry"):
        if key in group:
            copy[key] = dict(group[key])
    return copy


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def merge_stats(stored: JobStats, sent: JobStats) -> JobStats:
    """Dkron's merge on save: keep the larger counters, the later times, the stored status."""
    return JobStats(
        success_count=max(stored.success_count, sent.success_count),
        error_count=max(stored.error_count, sent.error_count),
        last_success=_later(stored.last_success, sent.last_success),
        last_error=_later(stored.last_error, sent.last_error),
        status=stored.status or sent.status,
    )


# -- command handlers ---------------------------------------------------------------------------


def _check_parent(state: JobState, job: Job) -> None:
    if not job.parent_job:
        return
    if job.parent_job not in state.jobs:
        raise JobNotFound(
            f"specified parent job {job.parent_job!r} not found: create it first, "
            "or clear parent_job"
        )
    seen, parent = {job.name}, job.parent_job
    while parent:
        if parent in seen:
            raise InvalidJob(
                f"parent_job {job.parent_job!r} would make a cycle: {job.name!r} is already "
                f"an ancestor of {job.parent_job!r}"
            )
        seen.add(parent)
        parent = state.jobs[parent].parent_job if parent in state.jobs else ""


def _set_job(state: JobState, cmd: SetJob) -> dict[str, Any]:
    if state.paused:  # decided here, in log order: a follower may not have applied the pause
        raise Paused("new job submissions are paused: POST /v1/unpause to accept them again")
    job = cmd.job
    _check_parent(state, job)
    previous = state._put_job(job)
    state.stats[job.name] = merge_stats(state.stats[job.name], cmd.stats or JobStats())
    state._emit(JobChanged(job.name, job))
    return {"created": previous is None}


def _delete_job(state: JobState, cmd: DeleteJob) -> dict[str, Any]:
    name = cmd.name
    job = state.job(name)
    if state.children.get(name):
        raise JobHasDependents(
            f"job {name!r} has dependent jobs ({', '.join(state.dependents(name))}): "
            "delete them first, or clear their parent_job"
        )
    stats = state.stats[name]
    state._drop_job(name)
    state._emit(JobChanged(name, None))
    state._emit(ExecutionsCleared(name))
    return {"job": codec.job_to_record(job), "stats": codec.stats_to_json(stats)}


def _toggle_job(state: JobState, cmd: ToggleJob) -> dict[str, Any]:
    job = state.job(cmd.name)
    toggled = replace(job, disabled=not job.disabled)
    state._put_job(toggled)
    state._emit(JobChanged(job.name, toggled))
    return {"disabled": toggled.disabled}


def _fire(state: JobState, cmd: Fire) -> dict[str, Any]:
    """Claim fires: the first claim of (job, scheduled instant) wins; later ones lose.

    A ``forbid`` job with a run in flight (or queued) loses too, so no two of its runs
    overlap. A dependent run (``parent_group`` set) wins only while it is owed. Under the
    command's concurrency ``limits`` a won fire may be queued (its group listed in
    ``queued``) until a finished run makes room.
    """
    if cmd.limits is not None:
        state.limits = cmd.limits
    won = [_claim(state, fire) for fire in cmd.claims]
    claimed = {fire.group for fire, ok in zip(cmd.claims, won, strict=True) if ok}
    _promote(state, quiet=claimed)
    return {"won": won, "queued": [group for group in state.queue if group in claimed]}


def _claim(state: JobState, fire: Claim) -> bool:
    job = state.jobs.get(fire.job)
    if job is None:
        return False
    if fire.parent_group is not None and not _owed(state, job, fire):
        return False
    scheduled = codec.parse_time(fire.scheduled_at, "scheduled_at")
    if scheduled is not None:
        last = state.last_fired.get(job.name)
        if last is not None and scheduled <= last:
            return False
    if job.concurrency == "forbid" and state.running.get(job.name):
        if scheduled is not None:
            _skip_instant(state, job.name, scheduled, fire.scheduled_at, "running")
        return False
    if scheduled is not None:
        state.last_fired[job.name] = scheduled
        state._emit(FireClaimed(job.name, scheduled))
    _open_claimed(state, job, fire)
    return True


def _open_claimed(state: JobState, job: Job, fire: Claim) -> None:
    group = fire.group
    record: dict[str, Any] = {
        "job": job.name,
        "targets": list(fire.targets),
        "results": {},
        "scheduled_at": fire.scheduled_at,
    }
    if job.concurrency_group:
        record["limit_group"] = job.concurrency_group
    if fire.untargeted:  # no live node had its tags: its one target is the claimer
        record["untargeted"] = True
    if state.limits.active:
        record["queued"] = True
        state.queue.append(group)
    state._open_group(group, record)


def _skip_instant(
    state: JobState, name: str, instant: datetime, at: str | None, reason: str
) -> None:
    """An instant the job will not run: it is handled (``last_fired`` moves), and said so once."""
    state.last_fired[name] = instant
    state._emit(_skipped_once(name, at, reason))


def _owed(state: JobState, job: Job, fire: Claim) -> bool:
    """Take the dependent run owed to ``job`` for the parent group; a disabled child, or a
    ``forbid`` child still running, gives it up and the skip is recorded."""
    parent_group = fire.parent_group or 0
    entry: dict[str, Any] = {"child": job.name, "parent_group": parent_group}
    if entry not in state.owed:
        return False
    state.owed.remove(entry)
    reason = ""
    if job.disabled:
        reason = "disabled"
    elif job.concurrency == "forbid" and state.running.get(job.name):
        reason = "running"
    if reason:
        at = fire.at or codec.format_time(_instant(parent_group))
        state._emit(_skipped_once(job.name, at, reason))
        return False
    return True


def _promote(state: JobState, *, quiet: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Start queued groups, oldest first, while the limits leave room. A group held back by
    the overall limit holds back every later one; one held back by its concurrency group
    holds back the later ones of that group only."""
    if not state.queue:
        return
    busy, by_group = state.busy_slots()
    held: set[str] = set()
    for group_id in list(state.queue):
        group = state.groups[group_id]
        name = group.get("limit_group", "")
        need = max(len(group["targets"]), 1)
        if name in held or not state.limits.room(busy, by_group, name, need):
            if not state.limits.room(busy, by_group, "", need):
                break  # the overall limit: nothing later may pass
            held.add(name)
            continue
        state.queue.remove(group_id)
        del group["queued"]
        busy += need
        if name:
            by_group[name] = by_group.get(name, 0) + need
        if group_id not in quiet:
            state._emit(GroupStarted(group["job"], group_id))


def _retry(state: JobState, cmd: Retry) -> dict[str, Any]:
    """Claim a due retry (fenced, from the leader): the first claim of (group, node, attempt)
    wins. ``to`` moves the retry to another node (``retry_on: any``)."""
    group = state.groups.get(cmd.group)
    node, to = cmd.node, cmd.to or cmd.node
    pending = group.get("retry", {}).get(node) if group else None
    if group is None or pending is None or pending["attempt"] != cmd.attempt:
        return {"won": False}
    if to != node and to in group["targets"]:
        return {"won": False}
    del group["retry"][node]
    if to != node:
        targets = group["targets"]
        targets[targets.index(node)] = to
        group["attempts"][to] = group["attempts"].pop(node)
    return {"won": True}


def _done(state: JobState, cmd: Done) -> dict[str, Any]:
    applied = 0
    for record in cmd.executions:
        execution = codec.execution_from_json(record)
        if _finish(state, execution):
            applied += 1
    return {"applied": applied}


def _finish(state: JobState, execution: Execution) -> bool:
    """Count a finished execution once; repeated reports change nothing. A failed attempt
    with retries left is counted (as Dkron does) and its retry is made due instead of a
    result: the node's result is that of its last attempt."""
    group = state.groups.get(execution.group)
    if group is None or group["job"] != execution.job_name:
        return False
    node = execution.node_name
    attempts = group.setdefault("attempts", {})
    if node in group["results"] or execution.attempt < attempts.get(node, 1):
        return False
    previous = _last_result(state.stats[execution.job_name])
    _count(state, execution)
    job = state.jobs[execution.job_name]
    if not execution.success and execution.attempt <= job.retries and node in group["targets"]:
        attempts[node] = execution.attempt + 1
        at = (execution.finished_at or execution.started_at) + retry_backoff(job, execution)
        group.setdefault("retry", {})[node] = {
            "attempt": execution.attempt + 1,
            "at": codec.format_time(at),
        }
        state._emit(ExecutionFinished(execution, final=False, previous_success=previous))
        state._emit(RetryDue(job.name, execution.group, node, execution.attempt + 1, at))
        return True
    group["results"][node] = execution.success
    state._emit(ExecutionFinished(execution, previous_success=previous))
    if len(group["results"]) >= len(group["targets"]):
        _complete_group(state, execution.group)
    _promote(state)
    return True


def retry_backoff(job: Job, failed: Execution) -> timedelta:
    """The wait before the next attempt: the job's ``retry_interval``, else Dkron's
    ``floor(log2(run time / 500ms) + next attempt) x 500ms`` (none for runs under 500 ms)."""
    fixed = retry_interval(job)
    if fixed is not None:
        return fixed
    ran = (failed.finished_at or failed.started_at) - failed.started_at
    halves = int(ran / timedelta(milliseconds=500))
    if halves < 1:
        return timedelta(0)
    return timedelta(milliseconds=500) * math.floor(math.log2(halves) + failed.attempt + 1)


def _last_result(stats: JobStats) -> bool | None:
    if stats.last_success is None or stats.last_error is None:
        return None if stats.last_success is stats.last_error else stats.last_error is None
    return stats.last_success > stats.last_error


def _count(state: JobState, execution: Execution) -> None:
    stats = state.stats[execution.job_name]
    if execution.success:
        stats = replace(
            stats,
            success_count=stats.success_count + 1,
            last_success=_later(stats.last_success, execution.finished_at),
        )
    else:
        stats = replace(
            stats,
            error_count=stats.error_count + 1,
            last_error=_later(stats.last_error, execution.finished_at),
        )
    state.stats[execution.job_name] = stats


def group_status(results: Mapping[str, bool]) -> str:
    """Dkron's status of one execution group, from each target's last attempt."""
    successes = sum(results.values())
    if successes == len(results):
        return "success"
    return "failed" if successes == 0 else "partially_failed"


def _complete_group(state: JobState, group_id: int) -> None:
    group = state._close_group(group_id)
    name = group["job"]
    status = group_status(group["results"])
    state.stats[name] = replace(state.stats[name], status=status)
    state._emit(GroupFinished(name, group_id, status))
    children = state.dependents(name)
    if status == "success" and children:
        state.owed += [{"child": child, "parent_group": group_id} for child in children]
        state._emit(ChildrenDue(name, group_id))
    job = state.jobs[name]
    if job.ephemeral and status == "success" and not children:
        state._drop_job(name)
        state._emit(JobChanged(name, None))


def _delete_executions(state: JobState, cmd: DeleteExecutions) -> dict[str, Any]:
    name = cmd.name
    state.job(name)
    state.stats[name] = _NEVER_RUN
    state._emit(ExecutionsCleared(name))
    return {}


def _skip(state: JobState, cmd: Skip) -> dict[str, Any]:
    """Record missed fires as not run; they count as handled (``last_fired`` moves past them)."""
    name = cmd.job
    state.job(name)
    handled = state.last_fired.get(name)
    spans = tuple(dict(span) for span in cmd.spans if _after(_span_last(span), handled))
    if spans:  # spans already handled (a catch-up made twice) are not recorded twice
        state.last_fired[name] = max(_span_last(span) for span in spans)
        state._emit(FiresSkipped(name, spans))
    return {}


def _span_last(span: Mapping[str, Any]) -> datetime:
    last = codec.parse_time(span["last"], "last")
    if last is None:
        raise BadRequest("a skipped span needs its last instant")
    return last


def _after(instant: datetime, handled: datetime | None) -> bool:
    return handled is None or instant > handled


def _batch(state: JobState, cmd: Batch) -> dict[str, Any]:
    """Several commands in one log entry, applied in order, each with its own result."""
    return {"results": [state.apply(sub) for sub in cmd.commands]}


def _register(state: JobState, cmd: Register) -> dict[str, Any]:
    """A node joined, came back, or changed its tags or addresses (a re-used name replaces)."""
    node = dict(cmd.node)
    state.nodes[str(node["name"])] = node
    return {}


def _deregister(state: JobState, cmd: Deregister) -> dict[str, Any]:
    state.nodes.pop(cmd.name, None)
    return {}


def _set_limits(state: JobState, cmd: SetLimits) -> dict[str, Any]:
    """Concurrency limits set through the API: ``overall`` replaces, ``groups`` are merged
    (a limit of 0 removes a group's limit); they win over every server's config."""
    settings = state.limit_settings
    if cmd.overall is not None:
        settings["overall"] = cmd.overall
    groups = {**settings.get("groups", {}), **cmd.groups}
    if groups:
        settings["groups"] = groups
    return {"limit_settings": dict(settings)}


def _pause(state: JobState, cmd: Pause) -> dict[str, Any]:
    state.paused = cmd.paused
    return {"paused": state.paused}


_HANDLERS: dict[type, Handler] = {
    SetJob: _set_job,
    DeleteJob: _delete_job,
    ToggleJob: _toggle_job,
    Fire: _fire,
    Retry: _retry,
    Done: _done,
    DeleteExecutions: _delete_executions,
    Pause: _pause,
    SetLimits: _set_limits,
    Batch: _batch,
    Skip: _skip,
    Register: _register,
    Deregister: _deregister,
}
_COMMAND_TYPES = tuple(_HANDLERS)


def _instant(group: int) -> datetime:
    """The trigger instant a group id stands for (Unix nanoseconds)."""
    return datetime.fromtimestamp(group / 1e9, UTC)
