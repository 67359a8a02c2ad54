"""One run of a job on one node (Dkron's Execution, plus ``scheduled_at``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Execution", "execution_id"]


def execution_id(started_ns: int, node_name: str) -> str:
    """Dkron's execution id: ``<started_at in Unix nanoseconds>-<node name>``."""
    return f"{started_ns}-{node_name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """A run of ``job_name`` on ``node_name``.

    ``group`` is shared by every target node and every retry of one trigger (Unix nanoseconds of
    the trigger). ``scheduled_at`` is the instant the run was due; ``None`` for manual and
    dependent runs. ``queued`` marks a run waiting for room under a concurrency limit (shown
    in ``/v1/busy``, never stored). Times are aware UTC; ``finished_at`` is ``None`` while running.
    """

    id: str
    job_name: str
    node_name: str
    group: int
    attempt: int = 1
    started_at: datetime
    finished_at: datetime | None = None
    success: bool = False
    output: str = ""
    scheduled_at: datetime | None = None
    queued: bool = False

    @property
    def running(self) -> bool:
        return self.finished_at is None
