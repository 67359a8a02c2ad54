"""One run of a job on one node (Dkron's Execution, plus ``scheduled_at``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["OUTPUT_CUT", "Execution", "execution_id", "mark_cut"]

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
