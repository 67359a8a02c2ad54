"""Jobs as the API reads them: ``JobView`` (definition, counters, next fire, children),
``JobQuery`` (``GET /v1/jobs`` parameters) and ``JobViews``, which answers both from the
replicated state and the schedule index.

May call: ``JobState`` (reads under its lock) and ``ScheduleIndex.next_of``. Writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import BadRequest
from dkron_lab.heartbeat import HEARTBEAT_EXECUTOR, next_instant
from dkron_lab.model import schedule, secrets
from dkron_lab.model.health import PAUSED
from dkron_lab.model.job import Job, JobStats
from dkron_lab.scheduler import ScheduleIndex
from dkron_lab.state.machine import JobEntry, JobState

__all__ = ["ExecutionQuery", "JobQuery", "JobView", "JobViews"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobView:
    """A job as the API shows it: definition, counters, next fire, children."""

    job: Job
    stats: JobStats
    next_fire: datetime | None
    dependent_jobs: tuple[str, ...] = ()
    health: tuple[str, str, str] = ("ok", "", "")
    ping_path: str = ""

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
            health=self.health,
        )
        shown["executor_config"] = secrets.masked_config(self.job)
        if self.ping_path:
            shown["ping_url"] = self.ping_path  # the API layer puts the server's address first
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

    @property
    def descending(self) -> bool:
        if self.order.upper() not in ("ASC", "DESC"):
            raise BadRequest(f"_order must be ASC or DESC, not {self.order!r}")
        return self.order.upper() == "DESC"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionQuery:
    """``GET /v1/jobs/<job>/executions`` parameters, parsed (for ``Jobs.list_executions``)."""

    sort: str = ""
    order: str = "DESC"
    start: int = 0
    end: int | None = None
    output_size_limit: int | None = None


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


class JobViews:
    """Reads of jobs, consistent with what this server has applied."""

    def __init__(
        self,
        state: JobState,
        index: ScheduleIndex,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        ping_path: Callable[[str], str] | None = None,
    ) -> None:
        """``ping_path(job)``: a heartbeat check's ping URL path, key included (its
        ``ping_url``; ``None``: none shown)."""
        self._state = state
        self._index = index
        self._now = now
        self._ping_path = ping_path

    def _next_fire(self, job: Job) -> datetime | None:
        if job.executor != HEARTBEAT_EXECUTOR:
            return self._index.next_of(job.name)
        # Not in the index: its next ping is due at its schedule's next instant.
        calendar = self._state.calendar(job.calendar) if job.calendar else None
        return next_instant(job, self._now(), calendar)

    def _view(self, entry: JobEntry) -> JobView:
        heartbeat = entry.job.executor == HEARTBEAT_EXECUTOR
        return JobView(
            job=entry.job,
            stats=entry.stats,
            next_fire=self._next_fire(entry.job),
            ping_path=self._ping_path(entry.job.name) if heartbeat and self._ping_path else "",
            dependent_jobs=entry.dependents,
            # Paused the moment it is disabled (the watch records it a moment later).
            health=PAUSED if entry.job.disabled else entry.health,
        )

    def get(self, name: str) -> JobView:
        """``JobNotFound`` when there is no such job."""
        return self._view(self._state.entry(name))

    def page(self, query: JobQuery) -> tuple[list[JobView], int]:
        """The page ``query`` asks for, and how many jobs match in all."""
        key = _SORT_KEYS.get("name" if query.sort in ("", "id") else query.sort)
        if key is None:
            raise BadRequest(
                f"cannot sort jobs by {query.sort!r}: use one of {', '.join(sorted(_SORT_KEYS))}"
            )
        descending = query.descending
        if query.sort in ("", "id", "name") and not query.filtered:
            entries, total = self._state.entries_by_name(
                query.start, query.end, descending=descending
            )
            return [self._view(entry) for entry in entries], total
        views = [
            self._view(entry)
            for entry in self._state.entries()
            if query.matches(entry.job, entry.stats)
        ]
        views.sort(key=key, reverse=descending)
        return views[query.start : query.end], len(views)
