"""Time as a parameter: every loop takes a ``Clock`` so tests can run fake time.

A ``Clock`` has two methods, ``now()`` and ``sleep_until()``. Intervals that must not jump when
the wall clock is stepped (NTP, suspend), such as the heartbeats' TTL, are measured with
``interval_seconds(clock)``: the clock's own ``monotonic()`` when it has one (``SystemClock``),
else its ``now()`` in seconds (a fake clock only moves when told, so it never steps back).

``FakeClock`` lives in ``dkron_lab.testing``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "Monotonic", "SystemClock", "interval_seconds"]


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time for schedules; always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    async def sleep_until(self, when: datetime, *, exact: bool = True) -> None:
        """Return at ``when`` (or at once if it has passed). ``exact=False`` for loops that
        only pace themselves (heartbeats, retries): they may wake a millisecond late, and
        spend no CPU to be on time."""
        ...


@runtime_checkable
class Monotonic(Protocol):
    """What a clock may offer besides ``Clock``: seconds that never step back (their origin
    is arbitrary: only differences mean something)."""

    def monotonic(self) -> float: ...


def interval_seconds(clock: Clock) -> Callable[[], float]:
    """How to read seconds for intervals (TTLs, rate limits) on ``clock``: its ``monotonic()``
    when it has one (a step of the wall clock must not make every node look dead), else its
    ``now()`` as Unix seconds (a fake clock: intervals move exactly as the test moves it)."""
    if isinstance(clock, Monotonic):
        return clock.monotonic
    return lambda: clock.now().timestamp()


# The event loop's timers wake up to a millisecond late (epoll rounds its timeout up to whole
# milliseconds); the last stretch before an instant is waited out by spinning instead.
_SPIN = 0.002


class SystemClock:
    """The real clock. Sleeps are measured on the wall clock, re-checked after each wake-up,
    so a clock step (NTP, suspend) does not make a fire late by the size of the step."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, when: datetime, *, exact: bool = True) -> None:
        target = when.timestamp()
        spin = _SPIN if exact else 0.0
        while (delay := target - time.time()) > spin:
            # Long sleeps are cut in pieces so a wall-clock jump is noticed within a minute.
            await asyncio.sleep(min(delay - spin, 60.0))
        while time.time() < target:
            pass
