"""One run of a job on one node (Dkron's Execution, plus ``scheduled_at`` and the resources the
run used)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

__all__ = ["OUTPUT_CUT", "Execution", "ResourceUsage", "execution_id", "mark_cut"]

OUTPUT_CUT = "[output truncated: "
"""How a recorded output that was cut to ``--output-limit`` begins: the history reads it back
as ``output_truncated`` without a column of its own (see ``mark_cut``)."""


def mark_cut(output: str, limit: int) -> str:
    """The end of ``output``, at most ``limit`` characters, after a first line saying the start
    was dropped (``OUTPUT_CUT``): the record of an output that was over ``--output-limit``."""
    note = f"{OUTPUT_CUT}the start was dropped, --output-limit keeps the last {limit} bytes]\n"
    if limit <= len(note):
        return output[len(output) - limit :]
    return note + output[len(output) - (limit - len(note)) :]


def execution_id(started_ns: int, node_name: str) -> str:
    """Dkron's execution id: ``<started_at in Unix nanoseconds>-<node name>``."""
    return f"{started_ns}-{node_name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceUsage:
    """What the processes of one run used, all of them together (the command and every process
    under it): CPU seconds in user and in kernel mode, and the peak of their summed resident
    memory. How precise each figure is depends on the executor (docs/monitoring.md)."""

    cpu_user_seconds: float
    cpu_system_seconds: float
    max_rss_bytes: int | None

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user_seconds + self.cpu_system_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """A run of ``job_name`` on ``node_name``.

    ``group`` is shared by every target node and every retry of one trigger (Unix nanoseconds of
    the trigger). ``scheduled_at`` is the instant the run was due; ``None`` for manual and
    dependent runs. ``queued`` marks a run waiting for room under a concurrency limit (shown
    in ``/v1/busy``, never stored). Times are aware UTC; ``finished_at`` is ``None`` while running.
    ``cpu_user_seconds``, ``cpu_system_seconds`` and ``max_rss_bytes`` are the run's
    ``ResourceUsage``: ``None`` while it runs, and for executors that start no process (http)
    or runs recorded before they were measured. ``backfill`` is the id of the backfill that ran
    it (``""``: a live fire, a manual or a dependent run); the state sets it when the run is
    recorded.
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
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    max_rss_bytes: int | None = None
    backfill: str = ""

    @property
    def running(self) -> bool:
        return self.finished_at is None

    def with_usage(self, usage: ResourceUsage | None) -> Execution:
        """This execution with ``usage`` recorded (``None``: not measured)."""
        if usage is None:
            return replace(self, cpu_user_seconds=None, cpu_system_seconds=None, max_rss_bytes=None)
        return replace(
            self,
            cpu_user_seconds=usage.cpu_user_seconds,
            cpu_system_seconds=usage.cpu_system_seconds,
            max_rss_bytes=usage.max_rss_bytes,
        )
