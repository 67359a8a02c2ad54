"""The clock every service reads: ``interval_seconds`` measures TTLs and rate limits on the
system's monotonic clock, or on a fake clock's ``now()`` so tests move intervals too."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from dkron_lab.clock import Clock, Monotonic, SystemClock, interval_seconds
from dkron_lab.testing import FakeClock


def test_the_system_clock_measures_intervals_on_the_monotonic_clock():
    clock = SystemClock()
    assert isinstance(clock, Clock) and isinstance(clock, Monotonic)
    before = time.monotonic()
    assert before <= interval_seconds(clock)() <= time.monotonic()


def test_a_fake_clock_measures_intervals_as_the_test_moves_it():
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    seconds = interval_seconds(clock)
    start = seconds()
    clock.advance(timedelta(seconds=4.5))
    assert seconds() - start == 4.5
