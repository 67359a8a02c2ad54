"""Backfills: run the past instants of a job's schedule that did not run (Airflow's backfill).

``plan`` (on the server asked, ``POST /v1/jobs/<job>/backfill``) lists the instants from
``from`` to ``to`` (the job's calendar applies), leaves out those that ran already (its history,
the runs in flight) or that another backfill took, and keeps the latest alone for ``mode:
latest``; the plan is one ``StartBackfill`` entry. The ``Backfiller`` on the leader then claims
the instants in order, at most ``max_parallel`` in flight, each through the normal claim (a
``Claim`` marked with the backfill's id): the state machine gives an instant to one claim only,
so a backfill never runs an instant twice, nor one that a live fire or another backfill ran,
and a new leader resumes from the replicated record. Runs carry their ``scheduled_at`` and the
backfill's id (``backfill`` in the execution JSON and the history).

May call: the replicated state (reads), ``Shared.submit`` (fenced claims), and the ``Starts``
the node gives it (targets, group ids, starting runs).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

from dkron_lab import codec
from dkron_lab.errors import BadRequest, DkronError
from dkron_lab.heartbeat import HEARTBEAT_EXECUTOR, next_instant
from dkron_lab.leader import Starts, fire_command
from dkron_lab.model.calendar import Calendar
from dkron_lab.model.job import Job
from dkron_lab.scheduler import Fire
from dkron_lab.services import Shared
from dkron_lab.state.commands import Claim, StartBackfill
from dkron_lab.state.events import BackfillChanged, GroupFinished, StateRestored
from dkron_lab.state.machine import JobState

__all__ = [
    "BACKFILL_MODES",
    "MAX_INSTANTS",
    "MAX_PARALLEL",
    "Backfiller",
    "backfill_json",
    "in_flight",
    "plan",
]

log = logging.getLogger(__name__)

BACKFILL_MODES = ("all", "latest")
MAX_INSTANTS = 10_000
"""Instants one backfill may hold: a longer range is split into several."""
MAX_PARALLEL = 100
RETRY = timedelta(seconds=1)
"""How long the backfiller waits to claim again after a claim whose outcome is unknown."""


def plan(
    job: Job,
    *,
    first: datetime,
    last: datetime,
    mode: str,
    max_parallel: int,
    now: datetime,
    ran: Iterable[datetime],
    taken: Iterable[str],
    calendar: Calendar | None,
    watermark: datetime | None,
) -> StartBackfill:
    """The backfill of ``job`` from ``first`` to ``last`` (both included): ``ran`` are the
    instants that ran already, ``taken`` those another backfill claimed. ``BadRequest`` says
    what to change in a request that cannot be one."""
    if job.executor == HEARTBEAT_EXECUTOR:
        raise BadRequest(f"job {job.name!r} is a heartbeat check: it runs nothing to backfill")
    if mode not in BACKFILL_MODES:
        raise BadRequest(f"mode {mode!r} is not one: use 'all' (each instant) or 'latest'")
    if not 1 <= max_parallel <= MAX_PARALLEL:
        raise BadRequest(f"max_parallel must be from 1 to {MAX_PARALLEL}, not {max_parallel}")
    if last < first:
        raise BadRequest(f"to ({codec.format_time(last)}) is before from: swap them")
    if last > now:
        raise BadRequest(
            f"to ({codec.format_time(last)}) is in the future: a backfill runs instants that are "
            "past (the schedule runs the others); give a time up to now"
        )
    done = {codec.format_time(at) for at in ran} | set(taken)
    instants: list[str] = []
    cursor = next_instant(job, first - _TICK, calendar)
    while cursor is not None and cursor <= last:
        if len(instants) > MAX_INSTANTS:
            raise BadRequest(
                f"from {codec.format_time(first)} to {codec.format_time(last)} the schedule "
                f"{job.schedule!r} has over {MAX_INSTANTS} instants: split the range"
            )
        text = codec.format_time(cursor) or ""
        if text not in done:
            instants.append(text)
        cursor = next_instant(job, cursor, calendar)
    if mode == "latest":
        instants = instants[-1:]
    return StartBackfill(
        id=f"bf-{secrets.token_hex(6)}",
        job=job.name,
        instants=tuple(instants),
        mode=mode,
        max_parallel=max_parallel,
        first=codec.format_time(first) or "",
        last=codec.format_time(last) or "",
        created=codec.format_time(now) or "",
        watermark=codec.format_time(watermark) or "",
    )


def in_flight(state: JobState) -> dict[str, int]:
    """Runs in flight (or queued) per backfill id."""
    counts: dict[str, int] = {}
    for group in state.open_groups().values():
        backfill = group.get("backfill")
        if backfill:
            counts[backfill] = counts.get(backfill, 0) + 1
    return counts


def backfill_json(record: Mapping[str, Any], running: int) -> dict[str, Any]:
    """A backfill as the API shows it: its request, and how far it got."""
    return {
        "id": record["id"],
        "job": record["job"],
        "from": record["from"],
        "to": record["to"],
        "mode": record["mode"],
        "max_parallel": record["max_parallel"],
        "created": record["created"],
        "state": record["state"],
        "total": len(record["instants"]),
        "claimed": record["next"],
        "running": running,
        "done": record["done"],
        "failed": record["failed"],
        "lost": record["lost"],
    }


class Backfiller:
    """On the leader: keeps each running backfill at ``max_parallel`` runs in flight.

    Subscribes to ``BackfillChanged``, ``GroupFinished`` and ``StateRestored``."""

    def __init__(self, shared: Shared, *, starts: Starts) -> None:
        self._shared = shared
        self._starts = starts
        self._pumping = False
        self._again = False
        shared.state.subscribe(self._on_event, BackfillChanged, GroupFinished, StateRestored)

    async def start(self, stack: AsyncExitStack) -> None:
        self.leadership_changed()

    def _on_event(self, event: object) -> None:
        self._shared.call_soon(self.leadership_changed)

    def leadership_changed(self) -> None:
        """Something may be due: claim what there is room for (leader only)."""
        if not self._shared.is_leader():
            return
        if self._pumping:
            self._again = True
            return
        self._shared.spawn(self._pump())

    async def _pump(self) -> None:
        self._pumping = True
        try:
            while True:
                self._again = False
                for record in self._shared.state.all_backfills():
                    if record["state"] == "running" and self._shared.is_leader():
                        try:
                            await self._claim_next(record)
                        except DkronError as exc:  # outcome unknown: look again in a moment
                            log.warning("backfill %s: claim unsettled: %s", record["id"], exc)
                            self._shared.spawn(self._again_soon())
                if not self._again:
                    return
        finally:
            self._pumping = False

    async def _again_soon(self) -> None:
        clock = self._shared.clock
        await clock.sleep_until(clock.now() + RETRY, exact=False)
        self.leadership_changed()

    async def _claim_next(self, record: Mapping[str, Any]) -> None:
        job = self._shared.state.find_job(record["job"])
        room = record["max_parallel"] - in_flight(self._shared.state).get(record["id"], 0)
        if job is None or room <= 0:
            return
        position = record["next"]
        fires, claims = [], []
        for at in _parsed(record["instants"][position : position + room]):
            group, targets = self._starts.new_group(), self._starts.targets(job)
            fires.append(Fire(job=job.name, scheduled_at=at, group=group, targets=targets))
            claims.append(
                Claim(
                    job=job.name,
                    group=group,
                    targets=tuple(targets) or (self._starts.name,),
                    scheduled_at=codec.format_time(at),
                    untargeted=not targets,
                    backfill=record["id"],
                )
            )
        if not claims:
            return
        command = fire_command(self._shared.state, self._starts.limits, claims)
        result = await self._shared.submit(command, fenced=True)
        queued = set(result.get("queued", ()))
        won = [
            f for f, ok in zip(fires, result["won"], strict=True) if ok and f.group not in queued
        ]
        self._starts.start_fires(won, local=False, remote=True)
        self._starts.start_fires(won, local=True, remote=False)
        log.info("backfill %s of %r: claimed %d instant(s)", record["id"], job.name, len(won))


_TICK = timedelta(microseconds=1)


def _parsed(instants: Iterable[str]) -> list[datetime]:
    found = []
    for text in instants:
        at = codec.parse_time(text, "instant")
        if at is not None:
            found.append(at)
    return found
