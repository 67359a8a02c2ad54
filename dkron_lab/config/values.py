"""Parsers of one option value: each takes what a flag, a ``DKRON_*`` variable, a config file or
a trait gives and returns the ``Config`` field's type, or raises ``ValueError`` (``BadPart``
for one wrong item of a list). Pure; ``schema.py`` names one per option.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from dkron_lab.errors import ValidationError
from dkron_lab.model import units

__all__ = [
    "BadPart",
    "CATCHUP_POLICIES",
    "FSYNC_MODES",
    "LOG_LEVELS",
    "NOTIFY_ON",
    "parse_address",
    "parse_boolean",
    "parse_catchup",
    "parse_duration",
    "parse_fsync",
    "parse_gossip_key",
    "parse_limits",
    "parse_log_level",
    "parse_name",
    "parse_notify_on",
    "parse_optional_path",
    "parse_path",
    "parse_retention",
    "parse_size",
    "parse_strings",
    "parse_tags",
    "parse_text",
    "parse_whole",
    "show_size",
    "split_host_port",
]

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warn", "warning", "error", "fatal", "panic")


class BadPart(ValueError):
    """One item of a list value is wrong: the error message shows that item."""


_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


def parse_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = parse_text(value).lower()
    if word not in _TRUE | _FALSE:
        raise ValueError(word)
    return word in _TRUE


def parse_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(value)
    return str(value).strip()


def parse_name(value: Any) -> str:
    text = parse_text(value)
    if not text:
        raise ValueError(value)
    return text


def parse_whole(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(value)
        number = value if isinstance(value, int) else int(parse_text(value))
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(value)
        return number

    return parse


def parse_address(default_port: int, *, optional: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = parse_text(value)
        if "{{" in text or (not text and not optional):
            raise ValueError(value)
        if text:
            split_host_port(text, default_port=default_port)
        return text

    return parse


def parse_strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    # Dkron's string-slice flags split on commas too: --join a,b is two addresses.
    parts = (part.strip() for item in items for part in parse_text(item).split(","))
    return tuple(part for part in parts if part)


def parse_tags(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {parse_name(key): parse_text(tag) for key, tag in value.items()}
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return parse_tags(json.loads(value))
    if isinstance(value, list | tuple) and all(isinstance(item, Mapping) for item in value):
        return {key: tag for item in value for key, tag in parse_tags(item).items()}
    tags: dict[str, str] = {}
    for pair in parse_strings(value):
        key, sep, tag = pair.partition("=")
        if not sep or not key.strip():
            raise BadPart(pair)
        tags[key.strip()] = tag.strip()
    return tags


def parse_duration(value: Any) -> timedelta:
    duration = value if isinstance(value, timedelta) else units.parse_duration(parse_text(value))
    if duration < timedelta(0):
        raise ValueError(value)
    return duration


def parse_retention(value: Any) -> timedelta | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_duration(value) or None


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    size = value if isinstance(value, int) else units.parse_size(parse_text(value))
    if size <= 0:
        raise ValueError(value)
    return size


# The same choices as dkron_lab.model.job.CATCHUP_POLICIES (a test keeps them equal); not
# imported, so that loading a config does not load the schedule engine.
CATCHUP_POLICIES = ("skip", "once", "all")


def parse_catchup(value: Any) -> str:
    policy = parse_text(value).lower()
    if policy not in CATCHUP_POLICIES:
        raise ValueError(value)
    return policy


NOTIFY_ON = ("always", "failure", "recovery", "never")


def parse_notify_on(value: Any) -> str:
    when = parse_text(value).lower()
    if when not in NOTIFY_ON:
        raise ValueError(value)
    return when


def parse_limits(value: Any) -> dict[str, int]:
    counts = parse_whole(0)
    return {key: counts(limit) for key, limit in parse_tags(value).items()}


FSYNC_MODES = ("always", "batch", "never")


def parse_fsync(value: Any) -> str:
    mode = parse_text(value).lower()
    if mode not in FSYNC_MODES:
        raise ValueError(value)
    return mode


def parse_optional_path(value: Any) -> Path | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_path(value)


def parse_log_level(value: Any) -> str:
    level = parse_text(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(value)
    return level


def parse_path(value: Any) -> Path:
    return Path(parse_name(value)).expanduser()


def parse_gossip_key(value: Any) -> str:
    text = parse_text(value)
    if text and len(base64.b64decode(text, validate=True)) not in (16, 24, 32):
        raise ValueError(value)
    return text


def split_host_port(address: str, *, default_port: int) -> tuple[str, int]:
    """``"host:port"``, ``":port"``, ``"host"`` or ``"[::1]:port"`` into ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        host, port = address, ""
    host = host.strip("[]")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValidationError(
            f"invalid port in address {address!r}: use host:port, e.g. 127.0.0.1:8080"
        )
    return host, int(port)


def show_size(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"
