"""``notify_on``: which runs a notification goes out for (the server's ``notify-on``, or a
job's ``metadata["notify_on"]``)."""

from __future__ import annotations

from collections.abc import Mapping

from dkron_lab.config import NOTIFY_ON
from dkron_lab.errors import InvalidJob

__all__ = ["NOTIFY_ON_KEY", "check_notify_on", "effective_policy", "should_notify"]

NOTIFY_ON_KEY = "notify_on"
"""The job metadata key that overrides the server's ``notify-on`` for one job."""


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
