"""Job definitions and their replicated counters (Dkron's Job, field by field)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dkron_lab.errors import InvalidJob
from dkron_lab.model import schedule
from dkron_lab.model.units import parse_duration

__all__ = [
    "CALENDAR_MODES",
    "CATCHUP_POLICIES",
    "CONCURRENCY_POLICIES",
    "JOB_STATUSES",
    "GROUP_NAME",
    "OVERDUE_ACTIONS",
    "MAX_NAME_LENGTH",
    "MAX_SECRET_KEYS",
    "RETRY_TARGETS",
    "Job",
    "JobStats",
    "check_name",
    "job_duration",
    "parse_job_schedule",
    "retry_interval",
    "validate_job",
]

CONCURRENCY_POLICIES = ("allow", "forbid")
CATCHUP_POLICIES = ("skip", "once", "all")
RETRY_TARGETS = ("same", "any")
"""What a new leader does with fires missed while there was none (``model/planning.py``)."""
JOB_STATUSES = ("success", "failed", "partially_failed")
OVERDUE_ACTIONS = ("alert", "kill")
"""What ``on_overdue`` does when a run passes ``max_duration`` (``""`` means ``alert``)."""
CALENDAR_MODES = ("exclude", "only")
"""How a job's ``calendar`` applies: its days are excluded (Quartz's meaning, ``""`` too), or
the job runs only on them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """What a user defines. Read-only fields (counters, status, next) live elsewhere:
    ``JobStats`` in the replicated state and ``next`` from the schedule.

    Mappings are treated as immutable: change a job with ``dataclasses.replace``.
    Ours, not Dkron's: ``catchup``, one of ``CATCHUP_POLICIES`` (``""`` = the server's default);
    ``concurrency_group``, the cluster-wide limit the job counts against (``""``: only the
    overall one); ``retry_interval``, a Go duration between attempts (``""``: Dkron's backoff);
    ``retry_on``, ``"same"`` node (Dkron's, the default) or ``"any"`` matching node;
    ``secret_keys``, ``executor_config`` keys, ``env`` variables or ``http`` headers whose values
    are secrets besides those ``model.secrets`` recognises by name (reads show them masked).
    Monitoring (docs/monitoring.md): ``max_lateness``, a Go duration within which a fire must
    start, and ``max_duration``, within which a run must finish (``""``: the server's
    defaults); ``on_overdue``, one of ``OVERDUE_ACTIONS``. ``calendar`` names a replicated
    calendar whose days the job skips, or runs only on with ``calendar_mode: "only"``.
    """

    name: str
    displayname: str = ""
    timezone: str = ""
    schedule: str = ""
    owner: str = ""
    owner_email: str = ""
    disabled: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    parent_job: str = ""
    processors: dict[str, dict[str, str]] = field(default_factory=dict)
    concurrency: str = "allow"
    executor: str = ""
    executor_config: dict[str, str] = field(default_factory=dict)
    ephemeral: bool = False
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    catchup: str = ""
    concurrency_group: str = ""
    retry_interval: str = ""
    retry_on: str = ""
    secret_keys: tuple[str, ...] = ()
    max_lateness: str = ""
    max_duration: str = ""
    on_overdue: str = ""
    calendar: str = ""
    calendar_mode: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStats:
    """The read-only counters Dkron keeps per job (reference §1.1, §1.14)."""

    success_count: int = 0
    error_count: int = 0
    last_success: datetime | None = None
    last_error: datetime | None = None
    status: str = ""


MAX_NAME_LENGTH = 256


def check_name(name: str) -> None:
    """Dkron's name rule, widened: letters of either case, digits, ``_``, ``-`` and ``.``."""
    if not name:
        raise InvalidJob("name is required: give the job a name such as 'nightly-report'")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidJob(f"name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    for char in name:
        if not _is_name_char(char):
            raise InvalidJob(
                f"name contains illegal character {char!r}: use letters, digits, '_', '-' or '.'"
            )
    if set(name) == {"."}:
        raise InvalidJob(f"name {name!r} is reserved: use at least one letter or digit")


def _is_name_char(char: str) -> bool:
    return char in "_-." or "0" <= char <= "9" or unicodedata.category(char) in ("Ll", "Lu")


def validate_job(job: Job) -> None:
    """Every rule that needs only the job itself (parents and plugins are checked by the caller).

    Raises ``InvalidJob`` or ``InvalidSchedule`` with what is wrong and how to fix it.
    """
    check_name(job.name)
    if job.parent_job == job.name:
        raise InvalidJob(
            "the job can not have itself as parent: clear parent_job or name another job"
        )
    if job.concurrency not in CONCURRENCY_POLICIES:
        raise InvalidJob(
            f"invalid concurrency {job.concurrency!r}: use 'allow' (the default) or 'forbid'"
        )
    if job.catchup and job.catchup not in CATCHUP_POLICIES:
        raise InvalidJob(
            f"invalid catchup {job.catchup!r}: use 'skip', 'once' or 'all', or leave it empty "
            "for the server's default (--catchup)"
        )
    _check_retries(job)
    _check_secret_keys(job)
    _check_monitoring(job)
    _check_calendar(job)
    if job.concurrency_group and not GROUP_NAME.match(job.concurrency_group):
        raise InvalidJob(
            f"invalid concurrency_group {job.concurrency_group!r}: use letters, digits, "
            "'_', '-' or '.', e.g. 'etl'"
        )
    schedule.zone(job.timezone)
    if job.schedule or not job.parent_job:
        if not job.schedule:
            raise InvalidJob(
                "schedule is required unless parent_job is set: e.g. '@every 1m', '0 30 2 * * *' "
                "or '@manually'"
            )
        parse_job_schedule(job)
    if job.starts_at and job.expires_at and job.expires_at <= job.starts_at:
        raise InvalidJob(
            f"expires_at ({job.expires_at.isoformat()}) is not after starts_at "
            f"({job.starts_at.isoformat()}): the job could never run"
        )
    if not job.executor:
        raise InvalidJob("executor is required: e.g. 'shell' with executor_config.command")


def _check_retries(job: Job) -> None:
    if job.retries < 0:
        raise InvalidJob(f"retries must be 0 or more, not {job.retries}")
    if job.retry_on and job.retry_on not in RETRY_TARGETS:
        raise InvalidJob(
            f"invalid retry_on {job.retry_on!r}: use 'same' (retry on the node that failed, "
            "the default) or 'any' (any live node the job's tags match)"
        )
    retry_interval(job)


MAX_SECRET_KEYS = 256


def _check_secret_keys(job: Job) -> None:
    if len(job.secret_keys) > MAX_SECRET_KEYS:
        raise InvalidJob(
            f"secret_keys names {len(job.secret_keys)} keys; the limit is {MAX_SECRET_KEYS}"
        )
    for key in job.secret_keys:
        if not key.strip() or len(key) > MAX_NAME_LENGTH:
            raise InvalidJob(
                f"secret_keys entry {key!r} must be the name of an executor_config key, an env "
                f'variable or an http header (1 to {MAX_NAME_LENGTH} characters), e.g. "api_key"'
            )


def _check_monitoring(job: Job) -> None:
    job_duration(job, "max_lateness")
    job_duration(job, "max_duration")
    if job.on_overdue and job.on_overdue not in OVERDUE_ACTIONS:
        raise InvalidJob(
            f"invalid on_overdue {job.on_overdue!r}: use 'alert' (the default: say so once) or "
            "'kill' (stop the run when it passes max_duration)"
        )


def _check_calendar(job: Job) -> None:
    if job.calendar and not GROUP_NAME.match(job.calendar):
        raise InvalidJob(
            f"invalid calendar {job.calendar!r}: name a calendar (letters, digits, '_', '-' or "
            "'.'), e.g. 'holidays'"
        )
    if job.calendar_mode and job.calendar_mode not in CALENDAR_MODES:
        raise InvalidJob(
            f"invalid calendar_mode {job.calendar_mode!r}: use 'exclude' (skip the calendar's "
            "days, the default) or 'only' (run only on them)"
        )
    if job.calendar_mode and not job.calendar:
        raise InvalidJob(
            f"calendar_mode {job.calendar_mode!r} needs a calendar: set calendar to a calendar's "
            "name, or clear calendar_mode"
        )


def job_duration(job: Job, field: str) -> timedelta | None:
    """The job's ``max_lateness`` or ``max_duration`` (``field``), or ``None`` when it is empty
    (the server's default applies). ``0`` turns the check off."""
    text: str = getattr(job, field)
    if not text:
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise InvalidJob(
            f"invalid {field} {text!r}: use a Go duration such as '30s' or '5m', '0' to turn the "
            f"check off, or leave it empty for the server's default ({exc})"
        ) from None
    if value < timedelta(0):
        raise InvalidJob(
            f"invalid {field} {text!r}: a negative duration is never met; use '0' "
            "to turn the check off"
        )
    return value


GROUP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""What a ``concurrency_group`` name may be."""


def retry_interval(job: Job) -> timedelta | None:
    """The job's fixed wait between attempts, or ``None`` for Dkron's backoff."""
    if not job.retry_interval:
        return None
    try:
        interval = parse_duration(job.retry_interval)
    except ValueError:
        interval = timedelta(-1)
    if interval < timedelta(0):
        raise InvalidJob(
            f"invalid retry_interval {job.retry_interval!r}: use a Go duration such as "
            "'30s' or '2m', or leave it empty for Dkron's backoff"
        )
    return interval


def parse_job_schedule(job: Job) -> schedule.Schedule:
    """The job's schedule, in its timezone, anchored at ``starts_at`` for ``@every``."""
    return schedule.parse(
        job.schedule, timezone=job.timezone, job_name=job.name, anchor=job.starts_at
    )
