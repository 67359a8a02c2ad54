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


class SystemClock:
    """The real clock. Sleeps are measured on the wall clock, re-checked after each wake-up,
    so a clock step (NTP, suspend) does not make a fire late by the size of the step."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        while True:
            delay = when.timestamp() - time.time()
            if delay <= 0:
                return
            # Long sleeps are cut in pieces so a wall-clock jump is noticed within a minute.
            await asyncio.sleep(min(delay, 60.0))
