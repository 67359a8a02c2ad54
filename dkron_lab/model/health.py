"""A job's health: whether it is doing what its schedule promises (docs/monitoring.md).

One value per job, the worst that holds, in this order:

==========  ==========================================================================
health      meaning
==========  ==========================================================================
``paused``  disabled: nothing is expected of it
``overdue`` a run has been going longer than ``max_duration``
``missed``  its latest due instant has no run and will get none (skipped while no leader
            could run it, no ping by its grace for a heartbeat check, no node to run it)
``late``    its latest due instant was not started within ``max_lateness``
``failing`` its latest run failed
``ok``      none of these
==========  ==========================================================================

``Timeliness`` is what the latest due instant came to; it is replaced by the next instant's,
so a job is late or missed until an instant of it starts in time. Pure values and functions:
the watch that keeps them (``dkron_lab/health.py``) owns the clock and the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dkron_lab.model.job import Job, JobStats, job_duration

__all__ = [
    "HEALTHS",
    "MISSED_REASONS",
    "PAUSED",
    "ANNOUNCED",
    "Assessment",
    "Timeliness",
    "assess",
    "grace",
    "kill_after",
    "time_limit",
]

HEALTHS = ("ok", "late", "overdue", "missed", "failing", "paused")
ANNOUNCED = ("late", "overdue", "missed")
"""The healths a notification announces on entering (and the return to ``ok`` from): what no
run's own notification says. ``failing`` is not among them: the failed run was announced
itself (and, with ``notify-on: recovery``, the first success after it)."""

PAUSED = ("paused", "", "the job is disabled")
"""The health of a disabled job, as recorded (``(health, since, reason)``): reads show it the
moment the job is disabled, before the watch records it."""

MISSED_REASONS = frozenset({"policy", "window", "limit"})
"""Reasons of skipped fires that are missed runs: the catch-up skipped them (``skip``
policy, older than ``--catchup-window``, past its limit). Not ``superseded`` (a later fire
ran instead), ``expired`` or ``calendar`` (nothing was owed)."""


@dataclass(frozen=True, slots=True)
class Timeliness:
    """What the job's latest due ``instant`` came to: ``ok``, ``late`` or ``missed``."""

    state: str = "ok"
    instant: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Assessment:
    health: str
    reason: str = ""


def grace(job: Job, default: timedelta) -> timedelta | None:
    """How long after its instant a fire may start: ``None`` when not checked."""
    value = job_duration(job, "max_lateness")
    value = default if value is None else value
    return value if value > timedelta(0) else None


def time_limit(job: Job, default: timedelta) -> timedelta | None:
    """How long a run may go on: ``None`` when not checked."""
    value = job_duration(job, "max_duration")
    value = default if value is None else value
    return value if value > timedelta(0) else None


def assess(
    job: Job, stats: JobStats, timeliness: Timeliness, overdue: str | None = None
) -> Assessment:
    """The job's health from what is known of it; ``overdue`` says why a run is overdue."""
    if job.disabled:
        return Assessment(PAUSED[0], PAUSED[2])
    if overdue:
        return Assessment("overdue", overdue)
    if timeliness.state in ("missed", "late"):
        return Assessment(timeliness.state, timeliness.reason)
    if stats.status in ("failed", "partially_failed"):
        when = f" at {stats.last_error.isoformat()}" if stats.last_error else ""
        return Assessment("failing", f"its latest run failed{when}")
    return Assessment("ok")


def kill_after(job: Job, default: timedelta) -> timedelta | None:
    """How long a run may go on before the node running it kills it (``on_overdue: kill``);
    ``None``: never."""
    return time_limit(job, default) if job.on_overdue == "kill" else None
