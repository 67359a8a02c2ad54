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

from dkron_lab.notify.notifier import DEFAULT_TIMEOUT, MAX_PENDING, Notifier
from dkron_lab.notify.policy import NOTIFY_ON_KEY, check_notify_on, effective_policy, should_notify
from dkron_lab.notify.settings import MailSettings, Webhook, parse_headers
from dkron_lab.notify.templates import (
    DKRON_FIELDS,
    EXTRA_FIELDS,
    KNOWN_FIELDS,
    Template,
    go_time,
    mail_subject,
    parse_template,
    report,
    template_fields,
)

__all__ = [
    "DKRON_FIELDS",
    "EXTRA_FIELDS",
    "KNOWN_FIELDS",
    "NOTIFY_ON_KEY",
    "DEFAULT_TIMEOUT",
    "MAX_PENDING",
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
