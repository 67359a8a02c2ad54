"""How each replicated command changes the state: one handler per command type (``HANDLERS``),
deterministic, reading nothing but the command and the state. This module and
``JobState.restore`` are the only code that changes a ``JobState``; the handlers use its
underscore methods (``_put_job``, ``_drop_job``, ``_open_group``, ``_close_group``, ``_emit``),
which are for them alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dkron_lab import codec
from dkron_lab.errors import (
    BadRequest,
    ConflictError,
    DkronError,
    InvalidJob,
    JobHasDependents,
    JobNotFound,
    NotFoundError,
    Paused,
)
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job, JobStats, retry_interval
from dkron_lab.state.commands import (
    Batch,
    CancelBackfill,
    Claim,
    DeleteCalendar,
    DeleteExecutions,
    DeleteJob,
    Deregister,
    Done,
    Fire,
    Pause,
    PingStart,
    Register,
    Retry,
    SetCalendar,
    SetHealth,
    SetJob,
    SetLimits,
    Skip,
    StartBackfill,
    ToggleJob,
)
from dkron_lab.state.events import (
    BackfillChanged,
    CalendarChanged,
    ChildrenDue,
    ExecutionFinished,
    ExecutionsCleared,
    FireClaimed,
    FiresSkipped,
    GroupFinished,
    GroupStarted,
    HealthChanged,
    JobChanged,
    RetryDue,
    skipped_once,
)

if TYPE_CHECKING:
    from dkron_lab.state.machine import JobState

__all__ = ["HANDLERS", "NEVER_RUN", "error_result", "group_status", "merge_stats", "retry_backoff"]

Handler = Callable[["JobState", Any], dict[str, Any]]

BACKFILLS_KEPT = 50
"""Ended backfills kept (the newest): a new one drops the oldest beyond these."""
NEVER_RUN = JobStats()  # shared: most of 100,000 jobs may never have run


def error_result(exc: DkronError) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "message": exc.message}}


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


def _check_calendar(state: JobState, job: Job) -> None:
    if job.calendar and job.calendar not in state.calendars:
        raise InvalidJob(
            f"calendar {job.calendar!r} does not exist: create it with POST /v1/calendars, "
            "or clear the job's calendar"
        )


def _set_job(state: JobState, cmd: SetJob) -> dict[str, Any]:
    if state.paused:  # decided here, in log order: a follower may not have applied the pause
        raise Paused("new job submissions are paused: POST /v1/unpause to accept them again")
    job = cmd.job
    _check_parent(state, job)
    _check_calendar(state, job)
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
    if fire.backfill is not None:
        return _claim_backfill(state, job, fire)
    if fire.parent_group is not None and not _owed(state, job, fire):
        return False
    scheduled = codec.parse_time(fire.scheduled_at, "scheduled_at")
    if scheduled is not None:
        last = state.last_fired.get(job.name)
        if last is not None and scheduled <= last:
            return False
        if fire.scheduled_at in state.backfilled.get(job.name, ()):
            state.last_fired[job.name] = scheduled  # a backfill ran it: handled
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


def _claim_backfill(state: JobState, job: Job, fire: Claim) -> bool:
    """A backfill claims its next instant, in order (a claim of another instant is a repeat
    of one already answered: it changes nothing). It loses the instant to a live fire that may
    have claimed it since the backfill was planned (after the plan's watermark, not after the
    job's last handled instant) and to another backfill that claimed it first."""
    record = state.backfills.get(fire.backfill or "")
    if record is None or record["state"] != "running" or record["job"] != job.name:
        return False
    position = record["next"]
    if position >= len(record["instants"]) or fire.scheduled_at != record["instants"][position]:
        return False
    record["next"] = position + 1
    claimed = state.backfilled.setdefault(job.name, set())
    scheduled = codec.parse_time(fire.scheduled_at, "scheduled_at")
    if scheduled is None:
        raise BadRequest("a backfill claims instants: scheduled_at is required")
    last = state.last_fired.get(job.name)
    watermark = codec.parse_time(record["watermark"] or None, "watermark")
    live = last is not None and scheduled <= last  # a live fire may have claimed it
    if fire.scheduled_at in claimed or (live and (watermark is None or scheduled > watermark)):
        record["lost"] += 1
        _settle_backfill(state, record)
        return False
    claimed.add(str(fire.scheduled_at))
    _open_claimed(state, job, fire)
    state.groups[fire.group]["backfill"] = record["id"]
    state._emit(BackfillChanged(record["id"]))
    return True


def _settle_backfill(state: JobState, record: dict[str, Any]) -> None:
    """Every instant run, failed or lost: the backfill is done."""
    if record["state"] == "running" and record["done"] + record["failed"] + record["lost"] >= len(
        record["instants"]
    ):
        record["state"] = "done"
    state._emit(BackfillChanged(record["id"]))


def _start_backfill(state: JobState, cmd: StartBackfill) -> dict[str, Any]:
    state.job(cmd.job)
    if cmd.id in state.backfills:
        raise ConflictError(f"backfill {cmd.id!r} exists already")
    record: dict[str, Any] = {
        "id": cmd.id,
        "job": cmd.job,
        "instants": list(cmd.instants),
        "mode": cmd.mode,
        "max_parallel": cmd.max_parallel,
        "from": cmd.first,
        "to": cmd.last,
        "created": cmd.created,
        "watermark": cmd.watermark,
        "next": 0,
        "done": 0,
        "failed": 0,
        "lost": 0,
        "state": "running",
    }
    state.backfills[cmd.id] = record
    ended = [r["id"] for r in state.backfills.values() if r["state"] != "running"]
    for old in ended[: max(0, len(ended) - BACKFILLS_KEPT)]:  # the oldest ended ones go
        del state.backfills[old]
    _settle_backfill(state, record)  # none to run: done at once
    return {"backfill": dict(record)}


def _cancel_backfill(state: JobState, cmd: CancelBackfill) -> dict[str, Any]:
    record = state.backfills.get(cmd.id)
    if record is None:
        raise NotFoundError(f"no backfill {cmd.id!r}: GET /v1/backfills lists them")
    if record["state"] == "running":
        record["state"] = "cancelled"
        state._emit(BackfillChanged(cmd.id))
    return {"backfill": dict(record)}


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
    state._emit(skipped_once(name, at, reason))


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
        state._emit(skipped_once(job.name, at, reason))
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
    if group.get("backfill"):
        execution = replace(execution, backfill=group["backfill"])
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
    backfill = state.backfills.get(group.get("backfill") or "")
    if backfill is not None:
        backfill["done" if status == "success" else "failed"] += 1
        _settle_backfill(state, backfill)
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
    state.stats[name] = NEVER_RUN
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


def _set_health(state: JobState, cmd: SetHealth) -> dict[str, Any]:
    """A job's health changed; the same health again changes nothing (a watch that asks twice,
    or a new leader that finds what its predecessor already recorded, announces nothing)."""
    if cmd.job not in state.jobs:
        return {"changed": False}
    previous = state.health.get(cmd.job, ("ok", "", ""))
    if previous[0] == cmd.health:
        return {"changed": False}
    if cmd.health == "ok":
        state.health.pop(cmd.job, None)
    else:
        state.health[cmd.job] = (cmd.health, cmd.since, cmd.reason)
    since = codec.parse_time(cmd.since, "since") or datetime.fromtimestamp(0, UTC)
    state._emit(HealthChanged(cmd.job, cmd.health, previous[0], since, cmd.reason))
    return {"changed": True}


def _set_calendar(state: JobState, cmd: SetCalendar) -> dict[str, Any]:
    calendar = cmd.calendar
    created = calendar.name not in state.calendars
    state.calendars[calendar.name] = calendar
    state._emit(CalendarChanged(calendar.name, calendar))
    return {"created": created}


def _delete_calendar(state: JobState, cmd: DeleteCalendar) -> dict[str, Any]:
    name = cmd.name
    if name not in state.calendars:
        raise NotFoundError(f"calendar {name!r} not found: GET /v1/calendars lists them")
    users = sorted(job.name for job in state.jobs.values() if job.calendar == name)
    if users:
        shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
        raise ConflictError(
            f"calendar {name!r} is used by job(s) {shown}: clear or change their calendar first"
        )
    del state.calendars[name]
    state._emit(CalendarChanged(name, None))
    return {}


def _ping_start(state: JobState, cmd: PingStart) -> dict[str, Any]:
    state.job(cmd.job)
    if cmd.at:
        state.ping_starts[cmd.job] = cmd.at
    else:
        state.ping_starts.pop(cmd.job, None)
    return {}


HANDLERS: dict[type, Handler] = {
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
    SetHealth: _set_health,
    PingStart: _ping_start,
    StartBackfill: _start_backfill,
    CancelBackfill: _cancel_backfill,
    SetCalendar: _set_calendar,
    DeleteCalendar: _delete_calendar,
}


def _instant(group: int) -> datetime:
    """The trigger instant a group id stands for (Unix nanoseconds)."""
    return datetime.fromtimestamp(group / 1e9, UTC)
