"""The ``Notifier``: sends one node's notifications in background tasks, bounded, each run once."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

import httpx

from dkron_lab.config import Config
from dkron_lab.model.execution import Execution
from dkron_lab.model.health import ANNOUNCED
from dkron_lab.model.job import Job
from dkron_lab.model.secrets import scrub_text, secret_values
from dkron_lab.notify.policy import effective_policy, should_notify
from dkron_lab.notify.settings import MailSettings, Webhook, mail_from, webhook_from
from dkron_lab.notify.templates import (
    health_fields,
    health_subject,
    mail_subject,
    template_fields,
)

__all__ = ["DEFAULT_TIMEOUT", "MAX_PENDING", "Notifier"]

log = logging.getLogger("dkron_lab.notify")

DEFAULT_TIMEOUT = 10.0
MAX_PENDING = 1000
"""Deliveries waiting or in flight beyond this are dropped (and counted as failures), so a dead
endpoint with a slow timeout cannot pile up memory behind a busy scheduler."""
_MAX_PARALLEL = 16
_REMEMBERED_RUNS = 10_000


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
            pre_webhook=webhook_from(
                config.pre_webhook_endpoint,
                config.pre_webhook_payload,
                config.pre_webhook_headers,
                "pre-webhook",
            ),
            webhook=webhook_from(
                config.webhook_endpoint, config.webhook_payload, config.webhook_headers, "webhook"
            ),
            mail=mail_from(config),
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

    def health_changed(
        self, job: Job, *, health: str, previous: str, since: datetime, reason: str
    ) -> None:
        """Announce a change of the job's health through the webhook and the owner's mail:
        entering ``late``, ``overdue`` or ``missed`` (unless the job's policy is ``never``), and
        the return to ``ok`` from one of them (policies ``always`` and ``recovery``). Failing is
        announced by the failed run's own notification; pausing and resuming by nobody (the
        user did it)."""
        if not (self.webhook or self.mail):
            return
        policy = effective_policy(job.metadata, self.default_policy)
        entering = health in ANNOUNCED and policy != "never"
        recovering = health == "ok" and previous in ANNOUNCED and policy in ("always", "recovery")
        if not (entering or recovering):
            return
        fields = health_fields(
            job.name, health, previous, since, reason, reporting_node=self.node_name
        )
        if self.webhook is not None:
            body = self.webhook.payload.render(fields)
            self._spawn(self._post_body(self.webhook, body), "webhook", job.name)
        if self.mail is not None and job.owner_email.strip():
            mail = self.mail
            body = mail.payload.render(fields) if mail.payload else fields["Output"]
            subject = health_subject(mail.subject_prefix, job.name, health)
            message = _compose(mail, job.owner_email, subject, body, date=since)
            self._spawn(self._deliver_mail(mail, job, message), "mail", job.name)

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
        return await self._post_body(hook, hook.payload.render(self._fields(execution, group)))

    async def _post_body(self, hook: Webhook, text: str) -> str:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        body = text.encode()
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
        subject = mail_subject(mail.subject_prefix, execution)
        date = execution.finished_at or execution.started_at
        message = _compose(mail, job.owner_email, subject, body, date=date)
        return await self._deliver_mail(mail, job, message)

    async def _deliver_mail(self, mail: MailSettings, job: Job, message: EmailMessage) -> str:
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


def _compose(
    mail: MailSettings, owner_email: str, subject: str, body: str, *, date: datetime
) -> EmailMessage:
    """A message to the job's owner."""
    recipients = [address for _, address in getaddresses([owner_email]) if address]
    message = EmailMessage()
    message["From"] = mail.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
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
