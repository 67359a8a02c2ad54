"""Heartbeat checks: jobs that run nothing and are pinged by processes that run elsewhere (a
legacy crontab, a Kubernetes CronJob, a script on a laptop), the healthchecks.io model.

A job with ``executor: heartbeat`` says by its ``schedule`` when a ping is due and by its
``max_lateness`` how late it may come (its grace). ``POST /v1/jobs/<job>/ping`` (``/start``,
``/fail``) records each ping as an execution of the instant it covers; the watch
(``health.py``) records an instant no ping covered as a failed run and calls the job missed.

Pings need the API token, or the job's own key (``ping_url``): an HMAC of the job's name under
the cluster key, the same on every node, that opens the ping routes of that one job and
nothing else. Changing the cluster key changes every key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from dkron_lab import codec
from dkron_lab.errors import BadRequest, DkronError
from dkron_lab.model import schedule
from dkron_lab.model.calendar import Calendar, calendar_fire
from dkron_lab.model.execution import Execution
from dkron_lab.model.health import grace
from dkron_lab.model.job import Job, parse_job_schedule
from dkron_lab.state.commands import Batch, Claim, Done, Fire, PingStart

__all__ = [
    "HEARTBEAT_EXECUTOR",
    "NO_PING",
    "PING_KINDS",
    "PingKeys",
    "check_heartbeat",
    "covered_instant",
    "next_instant",
    "ping_execution",
    "ping_path",
    "claim_won",
    "record_run",
]

HEARTBEAT_EXECUTOR = "heartbeat"
PING_KINDS = ("", "start", "fail")
"""``/ping`` (success), ``/ping/start`` (the work began) and ``/ping/fail``."""
NO_PING = "dkron-lab: no ping"
"""How the output of the failed run recorded for an instant no ping covered begins."""
MAX_PING_BODY = 10_000
"""Characters of a ping's body kept as its output."""


@dataclass(frozen=True, slots=True)
class PingKeys:
    """Each job's ping key under the cluster key."""

    secret: bytes

    def key(self, job_name: str) -> str:
        digest = hmac.new(self.secret, b"dkron-lab ping\0" + job_name.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:18]).decode()

    def matches(self, job_name: str, key: str) -> bool:
        sent = key.encode("utf-8", "replace")  # any text a URL carries; compared as bytes
        return bool(key) and hmac.compare_digest(self.key(job_name).encode(), sent)


def ping_path(job_name: str, key: str) -> str:
    """The job's ping URL below the server's address (its ``ping_url``)."""
    return f"/v1/jobs/{quote(job_name, safe='')}/ping?key={key}"


def check_heartbeat(job: Job) -> None:
    """A ping is only for a heartbeat check; ``BadRequest`` says so for any other job."""
    if job.executor != HEARTBEAT_EXECUTOR:
        raise BadRequest(
            f"job {job.name!r} is not a heartbeat check (its executor is {job.executor!r}): "
            "pings are for jobs with executor 'heartbeat', which run nothing and are pinged "
            "by the process they watch"
        )


def next_instant(job: Job, after: datetime, calendar: Calendar | None = None) -> datetime | None:
    """The check's first due instant after ``after``, on a day its ``calendar`` (if any)
    allows: a heartbeat check expects no ping on a day its job would not run."""
    try:
        plan = parse_job_schedule(job)
    except DkronError:
        return None
    if calendar is None:
        return schedule.next_fire(plan, after)
    return calendar_fire(plan, after, calendar, job.calendar_mode or "exclude")


def covered_instant(
    job: Job, at: datetime, default_grace: timedelta, calendar: Calendar | None = None
) -> datetime | None:
    """The instant a ping at ``at`` stands for: the first due instant whose grace has not ended
    (``None`` for a job without instants, e.g. ``@manually``)."""
    allowed = grace(job, default_grace) or timedelta(0)
    return next_instant(job, at - allowed - timedelta(microseconds=1), calendar)


def ping_execution(
    job: Job,
    *,
    kind: str,
    body: str,
    at: datetime,
    started: datetime | None,
    node_name: str,
    default_grace: timedelta,
    calendar: Calendar | None = None,
) -> Execution:
    """The execution a ping records: ``started`` is when ``/ping/start`` came (else the ping's
    own time); the body is its output."""
    if kind not in PING_KINDS:
        raise BadRequest(f"unknown ping {kind!r}: use /ping, /ping/start or /ping/fail")
    ns = int(at.timestamp() * 1_000_000) * 1000
    output = body[:MAX_PING_BODY] or f"ping{'/' + kind if kind else ''} received"
    return Execution(
        id=f"{ns}-{node_name}",
        job_name=job.name,
        node_name=node_name,
        group=ns,
        started_at=started if started is not None and started <= at else at,
        finished_at=at,
        success=kind != "fail",
        output=output,
        scheduled_at=covered_instant(job, at, default_grace, calendar),
    )


def record_run(execution: Execution, *, pinged: bool = True) -> Batch:
    """The one Raft entry that records a heartbeat check's run (a ping, or a missed instant):
    a claim of its instant, then its result, then (for a ping) the check's ``/start``
    forgotten. The first claim of an instant wins, so a ping and the watch's "missed" for the
    same instant cannot both be recorded: the loser's result is dropped with its claim (``Fire``
    answers which)."""
    claim = Claim(
        job=execution.job_name,
        group=execution.group,
        targets=(execution.node_name,),
        scheduled_at=codec.format_time(execution.scheduled_at),
    )
    recorded = (Fire(claims=(claim,)), Done(executions=(codec.execution_to_json(execution),)))
    forget = (PingStart(job=execution.job_name, at=""),) if pinged else ()
    return Batch(commands=(*recorded, *forget))


def claim_won(result: dict[str, object]) -> bool:
    """Whether the entry ``record_run`` made won its claim (its run was recorded)."""
    results = result.get("results")
    if not isinstance(results, list) or not results:
        return False
    won = results[0].get("won") if isinstance(results[0], dict) else None
    return bool(won and won[0])
