"""Go-style durations (``1h30m10s``) and memory sizes (``512MB``), as Dkron writes them."""

from __future__ import annotations

import re
from datetime import timedelta

from dkron_lab.errors import InvalidSchedule, ValidationError

__all__ = ["format_duration", "parse_codes", "parse_duration", "parse_size"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Go's longest duration, an int64 of nanoseconds (~292 years): longer is an error there too.
_MAX_SECONDS = (2**63 - 1) / 1e9


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration such as ``"30s"``, ``"1h30m10s"`` or ``"1.5h"``.

    Raises ``InvalidSchedule`` naming the text and the accepted units, or the longest duration
    when it is longer than Go's (``2562047h``, about 292 years).
    """
    raw = text.strip()
    body = raw.lstrip("+-")
    sign = -1 if raw.startswith("-") else 1
    if body == "0":
        return timedelta(0)
    position, seconds = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise InvalidSchedule(
            f"invalid duration {text!r}: write a number and a unit, e.g. '30s', '5m', '1h30m' "
            "(units: ns, us, ms, s, m, h)"
        )
    if not seconds <= _MAX_SECONDS:  # also catches inf from a number of hundreds of digits
        raise InvalidSchedule(
            f"duration {text!r} is too long: the longest is 2562047h (about 292 years, Go's "
            "limit); write a shorter one"
        )
    return timedelta(seconds=sign * seconds)


def format_duration(value: timedelta) -> str:
    """The shortest Go-style spelling of whole seconds (``timedelta(minutes=90)`` -> ``1h30m``)."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return ("-" if total < 0 else "") + "".join(parts)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?|[KMGT]I?B)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """Parse a memory size in bytes: ``"1048576"``, ``"512MB"``, ``"1.5GB"`` (1024-based)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValidationError(
            f"invalid memory size {text!r}: write bytes or a number with KB, MB, GB or TB, "
            "e.g. '512MB'"
        )
    unit = (match.group(2) or "").upper().replace("I", "")
    factor = _SIZE_FACTOR[unit[:1] if unit[:1] in "KMGT" else ""]
    return int(float(match.group(1)) * factor)


def parse_codes(text: str, *, low: int, high: int) -> frozenset[int]:
    """A comma list of whole numbers from ``low`` to ``high`` (``"0,3"``, ``"200, 206"``);
    empty means none. Raises ``ValueError`` naming the first item that is not one."""
    codes = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not low <= int(item) <= high:
            raise ValueError(item)
        codes.add(int(item))
    return frozenset(codes)
