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
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import (
    DkronError,
    JobNotFound,
)
from dkron_lab.model.calendar import Calendar, calendar_from_json, calendar_to_json
from dkron_lab.model.job import Job, JobStats
from dkron_lab.state.commands import (
    Command,
    Limits,
    decode,
)
from dkron_lab.state.events import (
    CalendarChanged,
    ChildrenDue,
    Event,
    ExecutionFinished,
    ExecutionsCleared,
    FireClaimed,
    FiresSkipped,
    GroupFinished,
    GroupStarted,
    JobChanged,
    RetryDue,
    StateRestored,
)
from dkron_lab.state.handlers import (
    HANDLERS,
    NEVER_RUN,
    error_result,
    group_status,
    merge_stats,
    retry_backoff,
)

__all__ = [
    "COMMAND_VERSION",
    "CalendarChanged",
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
    "group_status",
    "merge_stats",
    "retry_backoff",
]

log = logging.getLogger(__name__)

COMMAND_VERSION = 1
_HEALTHY = ("ok", "", "")


def command(kind: str, **fields: Any) -> dict[str, Any]:
    """A wire dict as the Raft log holds it, for tests and tools; services build the typed
    commands of ``dkron_lab.state.commands``."""
    return {"type": kind, "v": COMMAND_VERSION, **fields}


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
        self.calendars: dict[str, Calendar] = {}
        # job: (health, since, reason), jobs not ok only (model/health.py)
        self.health: dict[str, tuple[str, str, str]] = {}
        self.ping_starts: dict[str, str] = {}  # heartbeat check: when its /ping/start came
        self.backfills: dict[str, dict[str, Any]] = {}  # id: its record (handlers.py), in order
        self.backfilled: dict[str, set[str]] = {}  # job: the instants backfills claimed

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
                return HANDLERS[type(typed)](self, typed)
            except DkronError as exc:
                return error_result(exc)

    def snapshot(self) -> dict[str, Any]:
        for hook in self._snapshot_hooks:
            hook()
        with self.lock:
            data = {
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
            if self.health:  # these three are absent when empty, as in older snapshots
                data["health"] = {name: list(record) for name, record in self.health.items()}
            if self.ping_starts:
                data["ping_starts"] = dict(self.ping_starts)
            if self.backfills:
                data["backfills"] = [dict(record) for record in self.backfills.values()]
            if self.backfilled:
                data["backfilled"] = {job: sorted(at) for job, at in self.backfilled.items()}
            if self.calendars:  # absent when none, as in every snapshot before calendars
                data["calendars"] = [calendar_to_json(c) for c in self.calendars.values()]
            return data

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
            self.ping_starts = {str(k): str(v) for k, v in data.get("ping_starts", {}).items()}
            self.backfills = {str(r["id"]): dict(r) for r in data.get("backfills", [])}
            self.backfilled = {job: set(at) for job, at in data.get("backfilled", {}).items()}
            self.health = {
                str(name): (str(record[0]), str(record[1]), str(record[2]))
                for name, record in data.get("health", {}).items()
            }
            for record in data.get("calendars", []):  # none in snapshots before calendars
                calendar = calendar_from_json(record)
                self.calendars[calendar.name] = calendar
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
        stats = self.stats.get(job.name, NEVER_RUN)
        return JobEntry(
            job=job,
            stats=stats,
            dependents=self.dependents(job.name),
            health=self.health.get(job.name, _HEALTHY),
        )

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
            return self.stats.get(name, NEVER_RUN)

    def health_of(self, name: str) -> tuple[str, str, str]:
        """The job's recorded health: ``(health, since, reason)``, ``("ok", "", "")`` if none."""
        with self.lock:
            return self.health.get(name, _HEALTHY)

    def ping_started(self, name: str) -> datetime | None:
        """When the heartbeat check's ``/ping/start`` came, if its ping has not yet."""
        with self.lock:
            at = self.ping_starts.get(name)
        return codec.parse_time(at, "at") if at else None

    def ping_starts_now(self) -> dict[str, datetime]:
        """Every heartbeat check whose work began and has not pinged its end yet."""
        with self.lock:
            starts = dict(self.ping_starts)
        return {name: codec.parse_time(at, "at") for name, at in starts.items()}  # type: ignore[misc]

    def backfill(self, backfill_id: str) -> Mapping[str, Any] | None:
        with self.lock:
            record = self.backfills.get(backfill_id)
            return _frozen(record) if record is not None else None

    def all_backfills(self) -> list[Mapping[str, Any]]:
        """Every backfill kept, oldest first."""
        with self.lock:
            return [_frozen(record) for record in self.backfills.values()]

    def backfilled_of(self, name: str) -> frozenset[str]:
        """The instants (RFC 3339) of ``name`` that backfills claimed."""
        with self.lock:
            return frozenset(self.backfilled.get(name, ()))

    def unhealthy(self) -> dict[str, tuple[str, str, str]]:
        """Every job whose recorded health is not ``ok``."""
        with self.lock:
            return dict(self.health)

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

    def calendar(self, name: str) -> Calendar | None:
        """The calendar called ``name``, or None."""
        with self.lock:
            return self.calendars.get(name)

    def all_calendars(self) -> list[Calendar]:
        """Every calendar, in name order."""
        with self.lock:
            return [self.calendars[name] for name in sorted(self.calendars)]

    def jobs_on_calendar(self, name: str) -> list[Job]:
        """The jobs whose ``calendar`` is ``name``, in name order."""
        with self.lock:
            return sorted((j for j in self.jobs.values() if j.calendar == name), key=_name)

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
        self.stats.setdefault(job.name, NEVER_RUN)
        return previous

    def _drop_job(self, name: str) -> None:
        job = self.jobs.pop(name)
        del self.names[bisect.bisect_left(self.names, name)]
        if job.parent_job:
            self.children.get(job.parent_job, set()).discard(name)
        self.stats.pop(name, None)
        self.last_fired.pop(name, None)
        self.health.pop(name, None)
        self.ping_starts.pop(name, None)
        self.backfilled.pop(name, None)
        for record in self.backfills.values():
            if record["job"] == name and record["state"] == "running":
                record["state"] = "cancelled"  # the job is gone: nothing more to run
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


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEntry:
    """A job as the state holds it: the job, its counters and the jobs that depend on it."""

    job: Job
    stats: JobStats
    dependents: tuple[str, ...]
    health: tuple[str, str, str] = _HEALTHY  # (health, since, reason): model/health.py


def _name(job: Job) -> str:
    return job.name


def _frozen(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of a record (nested dicts and lists copied, not frozen)."""
    return MappingProxyType(dict(record))


def copy_group(group: dict[str, Any]) -> dict[str, Any]:
    """A group's record that stays as it is when the state changes (read outside the lock)."""
    copy = {**group, "targets": list(group["targets"]), "results": dict(group["results"])}
    for key in ("attempts", "retry"):
        if key in group:
            copy[key] = dict(group[key])
    return copy


_COMMAND_TYPES = tuple(HANDLERS)
