"""Notifications about runs: Dkron's pre-webhook, post-webhook and email, filtered by ``notify_on``.

The settings are Dkron's (``webhook-*``, ``pre-webhook-*``, ``mail-*``; reference §1.15), plus
``notify-on``, the server default of a filter that a job can override with
``metadata["notify_on"]``. Everything that can be wrong in them (a template naming an unknown
field, a malformed header, an endpoint that is no URL) is a ``ValidationError`` from
``Notifier.from_config``, at startup, not a surprise at send time.

Sending never blocks or fails the caller: ``started`` and ``finished`` decide what to send, hand
it to background tasks and return. A delivery that fails is logged (a warning naming the
endpoint and the reason) and counted in ``Notifier.failures``; a delivered one in
``Notifier.sent``. See docs/notifications.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import ssl
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

import httpx

from dkron_lab.config import NOTIFY_ON, Config
from dkron_lab.errors import InvalidJob, ValidationError
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.model.secrets import scrub_text, secret_values

__all__ = [
    "DKRON_FIELDS",
    "EXTRA_FIELDS",
    "KNOWN_FIELDS",
    "NOTIFY_ON_KEY",
    "MailSettings",
    "Notifier",
    "Template",
    "Webhook",
    "check_notify_on",
    "effective_policy",
    "go_time",
    "mail_subject",
    "parse_headers",
    "parse_template",
    "report",
    "should_notify",
    "template_fields",
]

log = logging.getLogger(__name__)

NOTIFY_ON_KEY = "notify_on"
"""The job metadata key that overrides the server's ``notify-on`` for one job."""

DKRON_FIELDS = (
    "Report",
    "JobName",
    "ReportingNode",
    "StartTime",
    "FinishedAt",
    "Success",
    "NodeName",
    "Output",
)
"""The fields of Dkron's template data (``dkron/notifier.go``), in its order."""
EXTRA_FIELDS = ("ExecutionGroup", "Attempt")
"""Fields dkron-lab adds; a Dkron template never names them, so it renders the same."""
KNOWN_FIELDS = DKRON_FIELDS + EXTRA_FIELDS

DEFAULT_TIMEOUT = 10.0
MAX_PENDING = 1000
"""Deliveries waiting or in flight beyond this are dropped (and counted as failures), so a dead
endpoint with a slow timeout cannot pile up memory behind a busy scheduler."""
_MAX_PARALLEL = 16
_REMEMBERED_RUNS = 10_000


# -- templates -----------------------------------------------------------------------------------

# An action is ``{{ ... }}``; ``{{- `` and `` -}}`` trim the white space beside it, as in Go.
_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed payload: literal text and ``{{.Field}}`` references, checked once at startup."""

    source: str
    parts: tuple[str | _Field, ...]

    def render(self, fields: Mapping[str, str]) -> str:
        return "".join(part if isinstance(part, str) else fields[part.name] for part in self.parts)


def parse_template(text: str, *, key: str = "template") -> Template:
    """The template in ``text``, a Go ``text/template`` that uses only ``{{.Field}}`` actions.

    ``key`` names the setting in errors. Raises ``ValidationError`` for an unknown field, any
    other action (``{{if ...}}``, pipelines, ...) or an unclosed ``{{``.
    """
    parts: list[str | _Field] = []
    position = 0
    for action in _ACTION.finditer(text):
        literal = text[position : action.start()]
        parts.append(literal.rstrip() if action.group(1) else literal)
        parts.append(_field(action.group(0), action.group(2), key))
        position = action.end()
        if action.group(3):
            position = len(text) - len(text[position:].lstrip())
    tail = text[position:]
    if "{{" in tail:
        raise ValidationError(
            f"{key}: unclosed action at {tail[tail.index('{{') :][:30]!r}: "
            "close it with '}}', e.g. {{.JobName}}"
        )
    parts.append(tail)
    return Template(source=text, parts=tuple(part for part in parts if part != ""))


def _field(action: str, inner: str, key: str) -> _Field:
    known = ", ".join("." + name for name in KNOWN_FIELDS)
    match = _FIELD.fullmatch(inner)
    if match is None:
        raise ValidationError(
            f"{key}: unsupported template action {action!r}: dkron-lab renders only "
            f"{{{{.Field}}}} references; fields: {known}"
        )
    if match.group(1) not in KNOWN_FIELDS:
        raise ValidationError(
            f"{key}: unknown field {action!r}: the known fields are {known} (names are "
            "case-sensitive)"
        )
    return _Field(match.group(1))


_GO_ZERO_TIME = "0001-01-01 00:00:00 +0000 UTC"


def go_time(moment: datetime | None) -> str:
    """``moment`` as Go prints a ``time.Time`` (``2006-01-02 15:04:05.999999999 -0700 MST``),
    so that templates written for Dkron render the same; ``None`` is Go's zero time."""
    if moment is None:
        return _GO_ZERO_TIME
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return f"{text} {moment.strftime('%z') or '+0000'} {moment.tzname() or 'UTC'}"


def report(execution: Execution, *, reporting_node: str, group: Sequence[Execution] = ()) -> str:
    """Dkron's ``{{.Report}}``: the run, then one line per execution of its group."""
    lines = "".join(
        f"\t[Node]: {member.node_name} [Start]: {go_time(member.started_at)} "
        f"[End]: {go_time(member.finished_at)} [Success]: {_go_bool(member.success)}\n"
        for member in group or (execution,)
    )
    return (
        f"Executed: {execution.job_name}\nReporting node: {reporting_node}\n"
        f"Start time: {go_time(execution.started_at)}\nEnd time: {go_time(execution.finished_at)}\n"
        f"Success: {_go_bool(execution.success)}\nNode: {execution.node_name}\n"
        f"Output: {execution.output}\nExecution group: {execution.group}\n{lines}"
    )


def template_fields(
    execution: Execution, *, reporting_node: str, group: Sequence[Execution] = ()
) -> dict[str, str]:
    """The value of every field in ``KNOWN_FIELDS`` for one run."""
    return {
        "Report": report(execution, reporting_node=reporting_node, group=group),
        "JobName": execution.job_name,
        "ReportingNode": reporting_node,
        "StartTime": go_time(execution.started_at),
        "FinishedAt": go_time(execution.finished_at),
        "Success": _go_bool(execution.success),
        "NodeName": execution.node_name,
        "Output": execution.output,
        "ExecutionGroup": str(execution.group),
        "Attempt": str(execution.attempt),
    }


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def mail_subject(prefix: str, execution: Execution) -> str:
    """Dkron's subject, prefix glued on: ``[Dkron]Failed backup execution report``."""
    status = "Success" if execution.success else "Failed"
    return f"{prefix}{status} {execution.job_name} execution report"


# -- headers -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def parse_headers(lines: Sequence[str], *, key: str = "headers") -> tuple[tuple[str, str], ...]:
    """``"Name: value"`` lines as ``(name, value)`` pairs; empty lines are skipped, as in Dkron.

    Unlike Dkron, a value keeps any further ``:`` (``Authorization: Basic a:b`` works). Raises
    ``ValidationError`` naming ``key`` and the line when one is malformed.
    """
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name.strip()) or "\r" in value or "\n" in value:
            raise ValidationError(
                f"{key}: malformed header {line!r}: write 'Name: value', e.g. "
                "'Content-Type: application/json' (in a list flag, commas separate headers)"
            )
        headers.append((name.strip(), value.strip()))
    return tuple(headers)


# -- policy --------------------------------------------------------------------------------------


def check_notify_on(metadata: Mapping[str, str]) -> None:
    """Reject a job whose ``metadata["notify_on"]`` is not a policy (empty = server default).

    Raises ``InvalidJob`` (a ``ValidationError``) saying which values are allowed.
    """
    value = metadata.get(NOTIFY_ON_KEY, "")
    if value.strip().lower() not in ("", *NOTIFY_ON):
        raise InvalidJob(
            f"invalid metadata.{NOTIFY_ON_KEY} {value!r}: use one of {', '.join(NOTIFY_ON)}, "
            "or leave it out for the server's default (--notify-on)"
        )


def effective_policy(metadata: Mapping[str, str], default: str) -> str:
    """The job's own ``notify_on`` when it names a policy, else the server's ``default``."""
    own = metadata.get(NOTIFY_ON_KEY, "").strip().lower()
    return own if own in NOTIFY_ON else default


def should_notify(policy: str, *, success: bool, previous_success: bool | None) -> bool:
    """Whether a finished run is announced under ``policy``.

    ``recovery`` announces failures and the first success after a failure;
    ``previous_success`` is the job's previous result (``None``: this is its first run).
    """
    if policy == "always":
        return True
    if policy == "failure":
        return not success
    if policy == "recovery":
        return not success or previous_success is False
    return False


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """Where and what to POST."""

    endpoint: str
    payload: Template
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MailSettings:
    """The SMTP server and the message; ``payload`` ``None`` mails the raw output, as Dkron."""

    host: str
    port: int = 25
    username: str = ""
    password: str = ""
    sender: str
    subject_prefix: str = "[Dkron]"
    payload: Template | None = None


def _webhook(endpoint: str, payload: str, headers: Sequence[str], key: str) -> Webhook | None:
    template = parse_template(payload, key=f"{key}-payload") if payload else None
    pairs = parse_headers(headers, key=f"{key}-headers")
    if not endpoint:
        if payload:
            log.warning("%s-payload is set but %s-endpoint is empty: nothing is sent", key, key)
        return None
    _check_url(endpoint, f"{key}-endpoint")
    if template is None:
        log.warning(
            "%s-endpoint is set but %s-payload is empty: nothing is sent (as in Dkron); "
            'set it, e.g. \'{"text": "{{.JobName}} {{.Success}}"}\'',
            key,
            key,
        )
        return None
    return Webhook(endpoint=endpoint, payload=template, headers=pairs)


def _check_url(endpoint: str, key: str) -> None:
    try:
        url = httpx.URL(endpoint)
    except httpx.InvalidURL as exc:
        raise ValidationError(f"{key} {endpoint!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValidationError(
            f"{key} {endpoint!r} is not an http(s) URL: e.g. https://hooks.example.com/dkron"
        )


def _mail(config: Config) -> MailSettings | None:
    payload = (
        parse_template(config.mail_payload, key="mail-payload") if config.mail_payload else None
    )
    if not config.mail_host:
        return None
    if not config.mail_from:
        raise ValidationError(
            "mail-from is required when mail-host is set: e.g. --mail-from dkron@example.com"
        )
    if bool(config.mail_username) != bool(config.mail_password):
        log.warning(
            "mail-username and mail-password must both be set to log in to %s; mails are sent "
            "without login (as in Dkron)",
            config.mail_host,
        )
    return MailSettings(
        host=config.mail_host,
        port=config.mail_port,
        username=config.mail_username,
        password=config.mail_password,
        sender=config.mail_from,
        subject_prefix=config.mail_subject_prefix,
        payload=payload,
    )


# -- the notifier --------------------------------------------------------------------------------


class _Recent:
    """The last few thousand keys seen, so that a repeated call sends nothing twice."""

    def __init__(self, size: int = _REMEMBERED_RUNS) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first(self, key: str) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


class Notifier:
    """Sends the notifications of one node. Build it with ``from_config``; ``close()`` it.

    The node calls ``started`` once a run has begun and ``finished`` once its final attempt is
    over (an attempt that will be retried is not final). Both return at once; each call for
    an execution id already seen sends nothing, so a repeated report stays one notification.
    """

    def __init__(
        self,
        *,
        node_name: str,
        default_policy: str = "always",
        pre_webhook: Webhook | None = None,
        webhook: Webhook | None = None,
        mail: MailSettings | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.node_name = node_name
        self.default_policy = default_policy
        self.pre_webhook = pre_webhook
        self.webhook = webhook
        self.mail = mail
        self.timeout = timeout
        self.sent = 0
        self.failures = 0
        # Told of each delivery's outcome: (kind, ok), kind "pre_webhook", "webhook" or "mail".
        self.on_result: Callable[[str, bool], None] = lambda kind, ok: None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(_MAX_PARALLEL)
        self._started = _Recent()
        self._finished = _Recent()

    @classmethod
    def from_config(cls, config: Config) -> Notifier:
        """The notifier ``config`` describes; ``ValidationError`` for any setting that is wrong."""
        return cls(
            node_name=config.node_name,
            default_policy=config.notify_on,
            pre_webhook=_webhook(
                config.pre_webhook_endpoint,
                config.pre_webhook_payload,
                config.pre_webhook_headers,
                "pre-webhook",
            ),
            webhook=_webhook(
                config.webhook_endpoint, config.webhook_payload, config.webhook_headers, "webhook"
            ),
            mail=_mail(config),
        )

    @property
    def enabled(self) -> bool:
        """Whether anything is configured; a disabled notifier sends nothing and costs nothing."""
        return bool(self.pre_webhook or self.webhook or self.mail)

    async def started(self, job: Job, execution: Execution) -> None:
        """Fire the pre-webhook for this run (unless the job's policy is ``never``)."""
        if self.pre_webhook is None or not self._started.first(execution.id):
            return
        if effective_policy(job.metadata, self.default_policy) == "never":
            return
        self._spawn(self._post(self.pre_webhook, execution, ()), "pre_webhook", job.name)

    async def finished(
        self,
        job: Job,
        execution: Execution,
        *,
        previous_success: bool | None,
        group: Sequence[Execution] = (),
    ) -> None:
        """Send the post-webhook and the owner's email, if the job's policy asks for it.

        ``previous_success`` is the job's previous result (``None``: none). ``group``, the
        executions of the same trigger, fills the lines of ``{{.Report}}``. The job's secrets
        are masked in the output (the runner already did; an older node may not have).
        """
        if not (self.webhook or self.mail) or not self._finished.first(execution.id):
            return
        policy = effective_policy(job.metadata, self.default_policy)
        if not should_notify(policy, success=execution.success, previous_success=previous_success):
            return
        execution, *group = _masked(job, [execution, *group])
        if self.webhook is not None:
            self._spawn(self._post(self.webhook, execution, group), "webhook", job.name)
        if self.mail is not None and job.owner_email.strip():
            self._spawn(self._send_mail(self.mail, job, execution, group), "mail", job.name)

    async def flush(self) -> None:
        """Wait until every delivery begun so far has been sent or has failed."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    async def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Let pending deliveries finish for up to ``timeout`` seconds, cancel the rest."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("notifications still pending at shutdown were dropped")
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _spawn(self, delivery: Coroutine[Any, Any, str], kind: str, job: str) -> None:
        what = f"{kind.replace('_', '-')} {job}"
        if len(self._tasks) >= MAX_PENDING:
            delivery.close()
            self._count(kind, ok=False)
            log.warning(
                "notification dropped: %s: %d deliveries already pending", what, MAX_PENDING
            )
            return
        task = asyncio.create_task(self._deliver(delivery, kind, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: Coroutine[Any, Any, str], kind: str, what: str) -> None:
        async with self._slots:
            try:
                target = await delivery
            except Exception as exc:  # a notification must never fail a run or the scheduler
                self._count(kind, ok=False)
                log.warning("notification not sent: %s: %s", what, _reason(exc))
            else:
                self._count(kind, ok=True)
                log.debug("notification sent: %s to %s", what, target)

    def _count(self, kind: str, *, ok: bool) -> None:
        if ok:
            self.sent += 1
        else:
            self.failures += 1
        self.on_result(kind, ok)

    def _fields(self, execution: Execution, group: Sequence[Execution]) -> dict[str, str]:
        return template_fields(execution, reporting_node=self.node_name, group=group)

    async def _post(self, hook: Webhook, execution: Execution, group: Sequence[Execution]) -> str:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        body = hook.payload.render(self._fields(execution, group)).encode()
        headers = httpx.Headers()
        for name, value in hook.headers:
            headers[name] = value  # a later header of the same name wins, as Go's Header.Set
        try:
            response = await self._client.post(hook.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _Failed(f"POST {_shown(hook.endpoint)}: {_reason(exc)}") from exc
        if not response.is_success:
            raise _Failed(f"POST {_shown(hook.endpoint)}: answered HTTP {response.status_code}")
        return _shown(hook.endpoint)

    async def _send_mail(
        self, mail: MailSettings, job: Job, execution: Execution, group: Sequence[Execution]
    ) -> str:
        fields = self._fields(execution, group)
        body = mail.payload.render(fields) if mail.payload else execution.output
        message = _message(mail, job.owner_email, execution, body)
        where = f"smtp://{mail.host}:{mail.port}"
        try:
            await asyncio.to_thread(_smtp_send, mail, message, self.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise _Failed(f"{where} to {job.owner_email}: {_reason(exc)}") from exc
        return f"{job.owner_email} via {where}"


class _Failed(Exception):
    """A delivery failed; the message says where and why."""


def _masked(job: Job, executions: Sequence[Execution]) -> list[Execution]:
    values = secret_values(job)
    return [replace(e, output=scrub_text(e.output, values)) for e in executions]


def _message(mail: MailSettings, owner_email: str, execution: Execution, body: str) -> EmailMessage:
    recipients = [address for _, address in getaddresses([owner_email]) if address]
    message = EmailMessage()
    message["From"] = mail.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = mail_subject(mail.subject_prefix, execution)
    message["Date"] = format_datetime(execution.finished_at or execution.started_at)
    message["Message-ID"] = make_msgid(domain="dkron-lab")
    message.set_content(body)
    return message


def _smtp_send(mail: MailSettings, message: EmailMessage, timeout: float) -> None:
    # "localhost" as the EHLO name, as Go's net/smtp: smtplib's default looks up the FQDN,
    # which can stall for seconds on a host without working reverse DNS.
    with smtplib.SMTP(mail.host, mail.port, local_hostname="localhost", timeout=timeout) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if mail.username and mail.password:
            smtp.login(mail.username, mail.password)
        smtp.send_message(message)


def _shown(endpoint: str) -> str:
    """The endpoint for a log line: without user info or query string, which may hold secrets."""
    url = httpx.URL(endpoint)
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, _Failed):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
