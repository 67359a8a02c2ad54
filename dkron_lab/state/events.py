"""What applying a command tells the services: one frozen event per kind of change, handed to
``JobState.subscribe`` listeners on the applying thread, under the state's lock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dkron_lab import codec
from dkron_lab.model.calendar import Calendar
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job

__all__ = [
    "BackfillChanged",
    "CalendarChanged",
    "ChildrenDue",
    "Event",
    "ExecutionFinished",
    "ExecutionsCleared",
    "FireClaimed",
    "FiresSkipped",
    "GroupFinished",
    "GroupStarted",
    "HealthChanged",
    "JobChanged",
    "RetryDue",
    "StateRestored",
    "skipped_once",
]


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


@dataclass(frozen=True, slots=True)
class CalendarChanged:
    """A calendar was created, updated (``calendar`` set) or deleted (``calendar`` is None)."""

    name: str
    calendar: Calendar | None


def skipped_once(name: str, at: str | None, reason: str) -> FiresSkipped:
    """One instant (``at``, RFC 3339) of ``name`` not run, for ``reason``."""
    return FiresSkipped(name, ({"reason": reason, "first": at, "last": at, "count": 1},))


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """``job_name``'s health went from ``previous`` to ``health`` at ``since``, for ``reason``."""

    job_name: str
    health: str
    previous: str
    since: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class BackfillChanged:
    """Backfill ``id`` began, claimed an instant, saw a run end, finished or was cancelled."""

    id: str


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
    | HealthChanged
    | CalendarChanged
    | BackfillChanged
)
