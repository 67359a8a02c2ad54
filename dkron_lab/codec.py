"""The one wire format: Dkron's JSON for jobs and executions, in and out.

Input is converted once, here, into model values; inside, every datetime is aware UTC.
Output has Dkron's field names, order, types and zero values, so Dkron clients read it unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from dkron_lab.errors import BadRequest, InvalidJob
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job, JobStats

__all__ = [
    "ZERO_TIME",
    "check_command",
    "check_text",
    "execution_from_json",
    "execution_to_json",
    "format_time",
    "job_from_json",
    "job_to_json",
    "job_to_record",
    "parse_time",
    "stats_to_json",
]

ZERO_TIME = "0001-01-01T00:00:00Z"

_STRING_FIELDS = (
    "displayname",
    "timezone",
    "schedule",
    "owner",
    "owner_email",
    "parent_job",
    "concurrency",
    "executor",
    "catchup",
    "concurrency_group",
    "retry_interval",
    "retry_on",
    "max_lateness",
    "max_duration",
    "on_overdue",
    "calendar",
    "calendar_mode",
)
_STRING_MAP_FIELDS = ("tags", "metadata", "executor_config")
_BOOL_FIELDS = ("disabled", "ephemeral")
_DATETIME_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def format_time(value: datetime | None, zone: tzinfo = UTC) -> str | None:
    """Go's RFC3339Nano: fraction without trailing zeros, ``Z`` for UTC, else ``+hh:mm``."""
    if value is None:
        return None
    local = value.astimezone(zone)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if local.microsecond:
        text += f".{local.microsecond:06d}".rstrip("0")
    offset = local.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def check_text(value: Any, what: str = "the request body") -> None:
    """Raise ``BadRequest`` naming the first string of ``value`` (a key or a value, at any
    depth) that cannot be encoded as UTF-8: JSON's escapes can spell a lone surrogate
    (``"\\ud800"``), which decodes into Python but cannot be stored or replicated."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            _check_string(item, path, what)
        elif isinstance(item, dict):
            for key, child in item.items():
                inner = f"{path}.{key}" if path else str(key)
                _check_string(key, inner, what)
                stack.append((inner, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


def _check_string(text: str, path: str, what: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f"field {path!r} of {what}" if path else what
        raise BadRequest(
            f"{where} holds {text[exc.start : exc.end]!a} at character {exc.start}, a lone "
            "UTF-16 surrogate that is not text: send UTF-8 text (a JSON \\uXXXX escape of a "
            "surrogate must pair a high one, D800-DBFF, with a low one, DC00-DFFF)"
        ) from None


def check_command(command: Mapping[str, Any]) -> None:
    """Raise ``BadRequest`` unless ``command`` encodes as the JSON a Raft entry holds: called
    on each write before it joins a batch, so one bad write cannot fail the others."""
    try:
        json.dumps(command, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        check_text(command, "the write")
        raise BadRequest("the write holds text that is not UTF-8") from None
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"the write is not plain JSON data ({exc})") from None


def parse_time(value: Any, field: str) -> datetime | None:
    """RFC3339 (any offset, up to nanoseconds), or HTML ``datetime-local`` read as UTC.

    ``null``, ``""`` and Go's zero time mean "unset".
    """
    if value is None or value == "" or value == ZERO_TIME:
        return None
    if not isinstance(value, str):
        raise InvalidJob(f"{field} must be an RFC3339 time string or null, not {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidJob(
            f"{field}: {value!r} is not a time: use RFC3339, e.g. '2026-01-31T09:30:00Z'"
        ) from None
    if parsed.tzinfo is None:
        if not _DATETIME_LOCAL.match(value):
            raise InvalidJob(f"{field}: {value!r} has no UTC offset: add 'Z' or '+01:00'")
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.year <= 1:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidJob(f"{field}: {value!r} is out of range: use a year before 9999") from None


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _string(data: Mapping[str, Any], field: str) -> str:
    value = data.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidJob(f"{field} must be a string, not {_kind(value)}")
    return value


def _boolean(data: Mapping[str, Any], field: str) -> bool:
    value = data.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidJob(f"{field} must be true or false, not {_kind(value)}")
    return value


def _count(data: Mapping[str, Any], field: str, *, maximum: int = 2**63 - 1) -> int:
    """A whole number from 0 to ``maximum`` (what the history and the SQL views store: a
    number past it would make every later query over the ``jobs`` view fail)."""
    value = data.get(field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{field} must be a whole number, not {_kind(value)}")
    if value < 0:
        raise InvalidJob(f"{field} must be 0 or more, not {value}")
    if value > maximum:
        raise InvalidJob(f"{field} must be at most {maximum}, not {value}")
    return value


def _scalar_string(value: Any, where: str) -> str:
    # Dkron rejects {"forward": true} (its issue #1460); we store the string it meant.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise InvalidJob(f"{where} must be a string, not {_kind(value)}")


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidJob(f'{field} must be an object of strings, e.g. {{"key": "value"}}')
    return {str(k): _scalar_string(v, f"{field}.{k}") for k, v in value.items()}


def _string_list(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidJob(f'{field} must be a list of strings, e.g. ["api_key", "DB_PASSWORD"]')
    return tuple(value)


def _processors(value: Any) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidJob('processors must be an object, e.g. {"log": {"forward": "true"}}')
    return {str(name): _string_map(config, f"processors.{name}") for name, config in value.items()}


def job_from_json(data: Any) -> tuple[Job, JobStats]:
    """A job and the counters it carries (kept by Dkron's merge rule) from Dkron's JSON.

    Unknown keys are ignored, as Dkron does; known keys must have the right type.
    """
    if not isinstance(data, Mapping):
        raise BadRequest(f"the body must be a JSON object describing a job, not {_kind(data)}")
    name = data.get("name")
    if not isinstance(name, str):
        raise InvalidJob("name is required and must be a string")
    fields: dict[str, Any] = {field: _string(data, field) for field in _STRING_FIELDS}
    fields["concurrency"] = fields["concurrency"] or "allow"
    fields |= {field: _boolean(data, field) for field in _BOOL_FIELDS}
    fields |= {field: _string_map(data.get(field), field) for field in _STRING_MAP_FIELDS}
    job = Job(
        name=name,
        **fields,
        retries=_count(data, "retries", maximum=2**31 - 1),
        processors=_processors(data.get("processors")),
        starts_at=parse_time(data.get("starts_at"), "starts_at"),
        expires_at=parse_time(data.get("expires_at"), "expires_at"),
        secret_keys=_string_list(data.get("secret_keys"), "secret_keys"),
    )
    return job, _stats_from_json(data)


def _stats_from_json(data: Mapping[str, Any]) -> JobStats:
    status = data.get("status")
    return JobStats(
        success_count=_count(data, "success_count"),
        error_count=_count(data, "error_count"),
        last_success=parse_time(data.get("last_success"), "last_success"),
        last_error=parse_time(data.get("last_error"), "last_error"),
        status=status if isinstance(status, str) and status != "untriggered" else "",
    )


def job_to_json(
    job: Job,
    stats: JobStats | None = None,
    *,
    next_fire: datetime | None = None,
    dependent_jobs: list[str] | None = None,
    zone: tzinfo = UTC,
    health: tuple[str, str, str] = ("ok", "", ""),
) -> dict[str, Any]:
    """Dkron's 26 job fields in Dkron's order, then ours (``catchup``, ``concurrency_group``,
    ``retry_interval``, ``retry_on``, ``secret_keys``, and monitoring's ``max_lateness``,
    ``max_duration``, ``on_overdue``, ``calendar``, ``calendar_mode``, then the read-only
    ``health`` and ``health_reason``, ``(health, since, reason)``); ``next`` is shown in
    the job's ``zone``.

    Secrets are shown as they are: what a read shows goes through ``model.secrets.mask_job``."""
    stats = stats or JobStats()
    return {
        "id": job.name,
        "name": job.name,
        "displayname": job.displayname,
        "timezone": job.timezone,
        "schedule": job.schedule,
        "owner": job.owner,
        "owner_email": job.owner_email,
        "success_count": stats.success_count,
        "error_count": stats.error_count,
        "last_success": format_time(stats.last_success),
        "last_error": format_time(stats.last_error),
        "disabled": job.disabled,
        "tags": dict(job.tags),
        "metadata": dict(job.metadata),
        "retries": job.retries,
        "dependent_jobs": dependent_jobs or None,
        "parent_job": job.parent_job,
        "processors": {name: dict(config) for name, config in job.processors.items()},
        "concurrency": job.concurrency,
        "executor": job.executor,
        "executor_config": dict(job.executor_config),
        "status": stats.status,
        "next": format_time(next_fire, zone) or ZERO_TIME,
        "ephemeral": job.ephemeral,
        "starts_at": format_time(job.starts_at),
        "expires_at": format_time(job.expires_at),
        # Ours, after Dkron's: Dkron clients ignore keys they do not know.
        "catchup": job.catchup,
        "concurrency_group": job.concurrency_group,
        "retry_interval": job.retry_interval,
        "retry_on": job.retry_on,
        "secret_keys": list(job.secret_keys),
        "max_lateness": job.max_lateness,
        "max_duration": job.max_duration,
        "on_overdue": job.on_overdue,
        "calendar": job.calendar,
        "calendar_mode": job.calendar_mode,
        "health": health[0],
        "health_reason": health[2],
    }


_READ_ONLY = ("id", "success_count", "error_count", "last_success", "last_error")
_DERIVED = ("dependent_jobs", "status", "next", "health", "health_reason")


def job_to_record(job: Job) -> dict[str, Any]:
    """The writable fields only: what a replicated command carries."""
    record = job_to_json(job)
    for read_only in (*_READ_ONLY, *_DERIVED):
        del record[read_only]
    return record


def stats_to_json(stats: JobStats) -> dict[str, Any]:
    """A job's counters under Dkron's field names (as in the job JSON)."""
    return {
        "success_count": stats.success_count,
        "error_count": stats.error_count,
        "last_success": format_time(stats.last_success),
        "last_error": format_time(stats.last_error),
        "status": stats.status,
    }


def execution_to_json(execution: Execution, zone: tzinfo = UTC) -> dict[str, Any]:
    """Dkron's execution JSON (times in the job's zone) plus ``scheduled_at``, the run's
    resource use (``cpu_user_seconds``, ``cpu_system_seconds``, ``max_rss_bytes``: ``null``
    when not measured), ``backfill`` (the id of the backfill that ran it, or ``""``) and
    ``status`` (``queued`` or ``running``) for one not finished."""
    record = {
        "id": execution.id,
        "job_name": execution.job_name,
        "started_at": format_time(execution.started_at, zone),
        "finished_at": format_time(execution.finished_at, zone) or ZERO_TIME,
        "success": execution.success,
        "output": execution.output,
        "node_name": execution.node_name,
        "group": execution.group,
        "attempt": execution.attempt,
        "scheduled_at": format_time(execution.scheduled_at, zone),
        "cpu_user_seconds": execution.cpu_user_seconds,
        "cpu_system_seconds": execution.cpu_system_seconds,
        "max_rss_bytes": execution.max_rss_bytes,
        "backfill": execution.backfill,
    }
    if execution.running:
        record["status"] = "queued" if execution.queued else "running"
    return record


def execution_from_json(data: Mapping[str, Any]) -> Execution:
    """The inverse of ``execution_to_json``; used for replicated records."""
    started = parse_time(data["started_at"], "started_at")
    if started is None:
        raise BadRequest("an execution record needs started_at")
    return Execution(
        id=data["id"],
        job_name=data["job_name"],
        node_name=data["node_name"],
        group=int(data["group"]),
        attempt=int(data.get("attempt", 1)),
        started_at=started,
        finished_at=parse_time(data.get("finished_at"), "finished_at"),
        success=bool(data.get("success", False)),
        output=data.get("output", ""),
        scheduled_at=parse_time(data.get("scheduled_at"), "scheduled_at"),
        queued=data.get("status") == "queued",
        # Optional: records of older nodes, and of Dkron, have no such keys.
        cpu_user_seconds=_optional_float(data.get("cpu_user_seconds")),
        cpu_system_seconds=_optional_float(data.get("cpu_system_seconds")),
        max_rss_bytes=None if data.get("max_rss_bytes") is None else int(data["max_rss_bytes"]),
        backfill=str(data.get("backfill") or ""),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
