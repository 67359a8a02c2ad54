"""Where notifications go, checked once at startup: webhooks (endpoint, payload template,
headers) and the SMTP settings; anything wrong is a ``ValidationError`` then, not at send time."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from dkron_lab.config import Config
from dkron_lab.errors import ValidationError
from dkron_lab.notify.templates import Template, parse_template

__all__ = ["MailSettings", "Webhook", "mail_from", "parse_headers", "webhook_from"]

log = logging.getLogger("dkron_lab.notify")

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


def webhook_from(endpoint: str, payload: str, headers: Sequence[str], key: str) -> Webhook | None:
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


def mail_from(config: Config) -> MailSettings | None:
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
