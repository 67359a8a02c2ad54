"""How many ``next_fire`` calls per second ``dkron_lab.model.schedule`` answers.

Run: ``python benchmarks/bench_schedule.py [--calls N]``. Each row parses once, then calls
``next_fire`` with a moving ``after`` (a different instant each call, as the scheduler does for
different jobs). Prints the median of three runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from dkron_lab.model.schedule import _compile, next_fire, parse

CASES = [
    ("0 */5 * * * *", ""),
    ("*/5 * * * *", ""),
    ("0 0 12 * * MON-FRI", ""),
    ("0 30 2 * * *", ""),
    ("0 0 0 29 2 *", ""),
    ("@hourly", ""),
    ("@every 1h30m10s", ""),
    ("@at 2030-01-01T00:00:00Z", ""),
    ("0 */5 * * * *", "Europe/Berlin"),
    ("0 30 2 * * *", "America/New_York"),
    ("@daily", "America/New_York"),
    ("0 0 * * * *", "America/New_York"),
]
START = datetime(2024, 1, 1, tzinfo=UTC)
# 7 min 13 s: crosses minutes, hours, days and (over 10k calls) both 2024 DST changes
STEP = timedelta(minutes=7, seconds=13)


def calls_per_second(spec: str, timezone: str, calls: int) -> float:
    schedule = parse(spec, timezone=timezone, job_name="bench")
    afters = [START + i * STEP * 5 for i in range(calls)]
    began = time.perf_counter()
    for after in afters:
        next_fire(schedule, after)
    return calls / (time.perf_counter() - began)


def parses_per_second(calls: int) -> float:
    specs = [f"{i % 60} {i // 60 % 60} {i // 3600 % 24} * * *" for i in range(calls)]
    _compile.cache_clear()
    began = time.perf_counter()
    for spec in specs:
        parse(spec)
    return calls / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    print(f"{'expression':<28} {'timezone':<18} {'next_fire calls/s':>18}")
    print(f"{'-' * 28} {'-' * 18} {'-' * 18}")
    for spec, timezone in CASES:
        rate = statistics.median(calls_per_second(spec, timezone, args.calls) for _ in range(3))
        print(f"{spec:<28} {timezone or '(UTC)':<18} {rate:>18,.0f}")
    rate = statistics.median(parses_per_second(args.calls // 5) for _ in range(3))
    print(f"{'parse (distinct specs, cold)':<47} {rate:>18,.0f}")


if __name__ == "__main__":
    main()
