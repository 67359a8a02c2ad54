"""Time as a parameter: every loop takes a ``Clock`` so tests can run fake time.

``FakeClock`` lives in ``dkron_lab.testing``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time for schedules; always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return at ``when`` (or at once if it has passed)."""
        ...


# The event loop's timers wake up to a millisecond late (epoll rounds its timeout up to whole
# milliseconds); the last stretch before an instant is waited out by spinning instead.
_SPIN = 0.002


class SystemClock:
    """The real clock. Sleeps are measured on the wall clock, re-checked after each wake-up,
    so a clock step (NTP, suspend) does not make a fire late by the size of the step."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        target = when.timestamp()
        while (delay := target - time.time()) > _SPIN:
            # Long sleeps are cut in pieces so a wall-clock jump is noticed within a minute.
            await asyncio.sleep(min(delay - _SPIN, 60.0))
        while time.time() < target:
            pass
