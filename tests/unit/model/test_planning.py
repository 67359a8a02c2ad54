"""Catch-up planning: what counts as missed, each policy, the window, the limit, DST, one-shots,
and huge gaps counted without walking them. Time is a parameter: ``now`` is just a value."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dkron_lab.errors import InvalidJob
from dkron_lab.model import schedule
from dkron_lab.model.job import Job, parse_job_schedule, validate_job
from dkron_lab.model.planning import (
    CATCHUP_POLICIES,
    CatchUp,
    SkippedFires,
    count_fires,
    effective_policy,
    plan_catchup,
)
from dkron_lab.scheduler import next_run

NOW = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)  # a Friday
HOUR = timedelta(hours=1)


def at(text: str) -> datetime:
    """``"09:51"`` (on NOW's day) or a full ISO time, as aware UTC."""
    if len(text) <= 8:
        text = f"2026-03-27T{text}"
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def job(spec: str = "0 * * * * *", **fields: Any) -> Job:
    return Job(name="j", schedule=spec, executor="shell", **fields)


def plan(
    j: Job,
    *,
    last: datetime | None,
    now: datetime = NOW,
    policy: str = "once",
    window: timedelta = HOUR,
    limit: int = 1000,
    sample: int = 100,
) -> CatchUp:
    return plan_catchup(
        j,
        parse_job_schedule(j),
        last_fired=last,
        now=now,
        policy=policy,
        window=window,
        limit=limit,
        sample=sample,
    )


def spans(result: CatchUp) -> list[tuple[str, datetime, datetime, int]]:
    return [(s.reason, s.first, s.last, s.count) for s in result.skipped]


# -- the rules, case by case ------------------------------------------------------------------

MINUTELY = job()
HOURLY = job("0 0 * * * *")
CASES = [
    # (id, job, last, now, policy, window, limit, fire, skipped spans)
    ("never-fired", MINUTELY, None, NOW, "all", HOUR, 1000, [], []),
    ("nothing-missed", MINUTELY, NOW, NOW, "all", HOUR, 1000, [], []),
    ("fire-at-now-is-missed", MINUTELY, at("09:59"), NOW, "once", HOUR, 1000, [NOW], []),
    ("last-after-now", MINUTELY, NOW + HOUR, NOW, "all", HOUR, 1000, [], []),
    (
        "once",
        MINUTELY,
        at("09:50"),
        NOW,
        "once",
        HOUR,
        1000,
        [NOW],
        [("superseded", at("09:51"), at("09:59"), 9)],
    ),
    (
        "all",
        MINUTELY,
        at("09:50"),
        NOW,
        "all",
        HOUR,
        1000,
        [at(f"09:{m}") for m in range(51, 60)] + [NOW],
        [],
    ),
    (
        "skip",
        MINUTELY,
        at("09:50"),
        NOW,
        "skip",
        HOUR,
        1000,
        [],
        [("policy", at("09:51"), NOW, 10)],
    ),
    (
        "once-gap-longer-than-window",
        MINUTELY,
        at("07:30"),
        NOW,
        "once",
        HOUR,
        1000,
        [NOW],
        [("window", at("07:31"), at("08:59"), 89), ("superseded", at("09:00"), at("09:59"), 60)],
    ),
    (
        "all-limit-keeps-the-newest",
        MINUTELY,
        at("09:50"),
        NOW,
        "all",
        HOUR,
        3,
        [at("09:58"), at("09:59"), NOW],
        [("limit", at("09:51"), at("09:57"), 7)],
    ),
    (
        "window-edge-is-inside",
        HOURLY,
        at("07:00"),
        NOW,
        "all",
        HOUR,
        1000,
        [at("09:00"), NOW],
        [("window", at("08:00"), at("08:00"), 1)],
    ),
    (
        "window-edge-a-microsecond-late",
        HOURLY,
        at("07:00"),
        NOW + timedelta(microseconds=1),
        "all",
        HOUR,
        1000,
        [NOW],
        [("window", at("08:00"), at("09:00"), 2)],
    ),
    (
        "window-zero-only-now",
        MINUTELY,
        at("09:50"),
        NOW,
        "once",
        timedelta(0),
        1000,
        [NOW],
        [("window", at("09:51"), at("09:59"), 9)],
    ),
    (
        "window-zero-nothing-at-now",
        MINUTELY,
        at("09:50"),
        at("10:00:30"),
        "all",
        timedelta(0),
        1000,
        [],
        [("window", at("09:51"), NOW, 10)],
    ),
    ("disabled", job(disabled=True), at("09:50"), NOW, "all", HOUR, 1000, [], []),
    ("child-job", job(parent_job="p"), at("09:50"), NOW, "all", HOUR, 1000, [], []),
    ("manual", job("@manually"), at("09:50"), NOW, "all", HOUR, 1000, [], []),
    (
        "starts-at-inclusive",
        job(starts_at=at("09:55")),
        at("09:50"),
        NOW,
        "all",
        HOUR,
        1000,
        [at(f"09:{m}") for m in range(55, 60)] + [NOW],
        [],
    ),
    (
        "expired-during-the-gap",
        job(expires_at=at("09:55:30")),
        at("09:50"),
        NOW,
        "once",
        HOUR,
        1000,
        [],
        [("expired", at("09:51"), at("09:55"), 5)],
    ),
    (
        "expires-now-still-runs",
        job(expires_at=NOW),
        at("09:50"),
        NOW,
        "once",
        HOUR,
        1000,
        [NOW],
        [("superseded", at("09:51"), at("09:59"), 9)],
    ),
    (
        "at-within-window",
        job("@at 2026-03-27T09:30:00Z"),
        at("09:00"),
        NOW,
        "once",
        HOUR,
        1000,
        [at("09:30")],
        [],
    ),
    (
        "at-older-than-window",
        job("@at 2026-03-27T08:30:00Z"),
        at("08:00"),
        NOW,
        "all",
        HOUR,
        1000,
        [],
        [("window", at("08:30"), at("08:30"), 1)],
    ),
    (
        "at-already-fired",
        job("@at 2026-03-27T09:30:00Z"),
        at("09:30"),
        NOW,
        "all",
        HOUR,
        1000,
        [],
        [],
    ),
    (
        "dst-spring-forward-gap-never-missed",
        job("0 30 2 * * *", timezone="America/New_York"),
        at("2026-03-07T07:30Z"),  # 02:30 EST, the last real fire
        at("2026-03-09T12:00Z"),
        "all",
        timedelta(days=3),
        1000,
        [at("2026-03-09T06:30Z")],  # 8 March has no 02:30; 9 March 02:30 EDT
        [],
    ),
    (
        "dst-fall-back-hourly-fires-both-passes",
        job("0 0 * * * *", timezone="America/New_York"),
        at("2026-11-01T04:00Z"),  # 00:00 EDT
        at("2026-11-01T07:00Z"),  # 02:00 EST
        "all",
        timedelta(days=1),
        1000,
        [at("2026-11-01T05:00Z"), at("2026-11-01T06:00Z"), at("2026-11-01T07:00Z")],
        [],
    ),
    (
        "dst-fall-back-daily-fires-the-first-pass-once",
        job("0 30 1 * * *", timezone="America/New_York"),
        at("2026-10-31T05:30Z"),
        at("2026-11-02T12:00Z"),
        "all",
        timedelta(days=3),
        1000,
        [at("2026-11-01T05:30Z"), at("2026-11-02T06:30Z")],  # 01:30 EDT, then 01:30 EST
        [],
    ),
    (
        "weekend-gap-across-dst-start",
        job("0 0 9 * * MON-FRI", timezone="Europe/Berlin"),
        at("2026-03-27T08:00Z"),  # Friday 09:00 CET
        at("2026-03-30T12:00Z"),  # Monday; Berlin moved to CEST on Sunday
        "once",
        HOUR,
        1000,
        [],
        [("window", at("2026-03-30T07:00Z"), at("2026-03-30T07:00Z"), 1)],
    ),
]


@pytest.mark.parametrize(
    ("j", "last", "now", "policy", "window", "limit", "fire", "skipped"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan(
    j: Job,
    last: datetime | None,
    now: datetime,
    policy: str,
    window: timedelta,
    limit: int,
    fire: list[datetime],
    skipped: list[tuple[str, datetime, datetime, int]],
) -> None:
    result = plan(j, last=last, now=now, policy=policy, window=window, limit=limit)
    assert list(result.fire) == fire
    assert spans(result) == skipped
    assert result.missed_count == len(fire) + sum(span[3] for span in skipped)
    assert result == reference(j, last=last, now=now, policy=policy, window=window, limit=limit)


# -- an independent reference: walk the scheduler's own next_run ------------------------------


def reference(
    j: Job,
    *,
    last: datetime | None,
    now: datetime,
    policy: str,
    window: timedelta,
    limit: int = 1000,
    sample: int = 100,
) -> CatchUp:
    """The plan by brute force: every missed instant listed, then filtered."""
    sched = parse_job_schedule(j)
    missed: list[datetime] = []
    cursor = last
    while cursor is not None and (cursor := next_run(j, sched, cursor)) is not None:
        if cursor > now:
            break
        missed.append(cursor)

    def span(reason: Any, items: list[datetime]) -> list[SkippedFires]:
        if not items:
            return []
        listed = items
        if len(items) > sample:
            listed = items[: sample // 2] + items[len(items) - (sample - sample // 2) :]
        return [
            SkippedFires(
                reason=reason,
                first=items[0],
                last=items[-1],
                count=len(items),
                listed=tuple(listed),
            )
        ]

    if policy == "skip":
        return CatchUp(skipped=tuple(span("policy", missed)))
    if missed and j.expires_at is not None and now > j.expires_at:
        return CatchUp(skipped=tuple(span("expired", missed)))
    old = [t for t in missed if t < now - window]
    recent = [t for t in missed if t >= now - window]
    keep = 1 if policy == "once" else limit
    reason = "superseded" if policy == "once" else "limit"
    return CatchUp(
        fire=tuple(recent[-keep:]),
        skipped=tuple(span("window", old) + span(reason, recent[:-keep])),
    )


SPECS = [
    "0 0 * * * *",
    "0 */15 * * * *",
    "0 30 1 * * *",
    "0 30 2 * * *",
    "*/20 * 1-2 * * *",
    "0 0,30 0-2 * * *",
    "0 0 9 * * MON-FRI",
    "0 0 0 1,15 * MON",
    "@daily",
    "@every 25m",
    "@at 2026-03-08T07:30:00Z",
]
# UTC instants of clock changes: New York, Berlin, Lord Howe (30 min), Havana (at midnight).
CHANGES = {
    "America/New_York": ["2026-03-08T07:00Z", "2026-11-01T06:00Z"],
    "Europe/Berlin": ["2026-03-29T01:00Z", "2026-10-25T01:00Z"],
    "Australia/Lord_Howe": ["2026-04-04T15:00Z", "2026-10-03T15:30Z"],
    "America/Havana": ["2026-03-08T05:00Z", "2026-11-01T05:00Z"],
    "": ["2026-03-08T07:00Z"],
}


def random_case(rng: random.Random) -> dict[str, Any]:
    zone = rng.choice(list(CHANGES))
    change = at(rng.choice(CHANGES[zone]))
    last = change + timedelta(
        seconds=rng.randint(-4 * 3600, 3 * 3600), microseconds=rng.choice([0, 1])
    )
    now = last + timedelta(seconds=rng.randint(0, 30 * 3600))
    fields: dict[str, Any] = {"timezone": zone}
    if rng.random() < 0.2:
        fields["starts_at"] = last + (now - last) * rng.random()
    if rng.random() < 0.2:
        fields["expires_at"] = last + (now - last) * rng.random() * 1.5
    return {
        "j": job(rng.choice(SPECS), **fields),
        "last": last,
        "now": now,
        "policy": rng.choice(CATCHUP_POLICIES),
        "window": timedelta(seconds=rng.choice([0, 60, 3600, 5 * 3600, 86400])),
        "limit": rng.choice([1, 3, 1000]),
        "sample": rng.choice([0, 1, 4, 100]),
    }


def test_plans_agree_with_walking_next_run_across_dst_changes() -> None:
    rng = random.Random(20260327)  # seeded: the same cases on every run
    for _ in range(250):
        case = random_case(rng)
        args = {k: v for k, v in case.items() if k != "j"}
        expected = reference(case["j"], **args)
        assert plan(case["j"], **args) == expected, case


# -- listing, counting, bounded work ----------------------------------------------------------


def test_long_spans_list_their_oldest_and_newest_and_count_the_rest() -> None:
    result = plan(job("@every 1s"), last=NOW - HOUR, policy="skip", sample=10)
    (span,) = result.skipped
    assert span.count == 3600 and span.unlisted == 3590
    assert span.listed == tuple(
        NOW - timedelta(seconds=s) for s in (3599, 3598, 3597, 3596, 3595)
    ) + tuple(NOW - timedelta(seconds=s) for s in (4, 3, 2, 1, 0))
    assert (span.first, span.last) == (NOW - timedelta(seconds=3599), NOW)
    (bare,) = plan(job("@every 1s"), last=NOW - HOUR, policy="skip", sample=0).skipped
    assert bare.listed == () and bare.count == 3600 and bare.last == NOW


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts schedule steps (``next_fire`` calls): the work a plan does."""
    calls = [0]
    real = schedule.next_fire

    def counting(sched: schedule.Schedule, after: datetime) -> datetime | None:
        calls[0] += 1
        return real(sched, after)

    monkeypatch.setattr(schedule, "next_fire", counting)
    return calls


MONTH = timedelta(days=30)


@pytest.mark.parametrize(
    ("spec", "zone", "gap", "missed"),
    [
        ("@every 1s", "", MONTH, 30 * 86400),
        ("* * * * * *", "Europe/Berlin", timedelta(days=5 * 365), 5 * 365 * 86400),
        ("0 * * * * *", "America/New_York", timedelta(days=365), 365 * 1440),
        ("*/10 * * * * *", "Australia/Lord_Howe", timedelta(days=400), 400 * 8640),
        # One 01:30 a day in New York, whichever side of a clock change.
        ("0 30 1 * * *", "America/New_York", NOW - at("2023-03-27T05:30Z"), 1096),
    ],
)
def test_huge_gaps_are_counted_exactly_without_walking(
    spec: str, zone: str, gap: timedelta, missed: int, steps: list[int]
) -> None:
    j = job(spec, timezone=zone)
    skipped = plan(j, last=NOW - gap, policy="skip")
    assert skipped.skipped_count == missed and skipped.fire == ()
    once = plan(j, last=NOW - gap, policy="once")
    assert once.missed_count == missed and len(once.fire) <= 1
    everything = plan(j, last=NOW - gap, policy="all", limit=1000)
    assert everything.missed_count == missed and len(everything.fire) <= 1000
    assert [s.reason for s in everything.skipped][:1] == ["window"]
    # Three plans: each walks at most its limit and samples, plus a few steps per search.
    assert steps[0] < 3 * 200 + 1000 + 600


def test_a_restricted_days_schedule_over_years_matches_the_walk() -> None:
    j = job("0 0 9 * * MON-FRI", timezone="Europe/Berlin")
    last = at("2023-03-27T07:00Z")
    result = plan(j, last=last, policy="skip", sample=4)
    walked = reference(j, last=last, now=NOW, policy="skip", window=HOUR, sample=4)
    assert result == walked and result.skipped_count == 784


@pytest.mark.parametrize(
    ("spec", "zone", "after", "until", "count"),
    [
        ("0 0 * * * *", "America/New_York", "2026-11-01T04:00Z", "2026-11-01T08:00Z", 4),
        ("0 30 1 * * *", "America/New_York", "2026-11-01T00:00Z", "2026-11-02T00:00Z", 1),
        ("0 30 2 * * *", "America/New_York", "2026-03-07T12:00Z", "2026-03-09T12:00Z", 1),
        ("@every 1m", "", "2026-03-27T09:00:00.5Z", "2026-03-27T10:00Z", 60),
        ("@at 2026-03-27T09:30:00Z", "", "2026-03-27T09:00Z", "2026-03-27T10:00Z", 1),
        ("@manually", "", "2026-03-27T09:00Z", "2026-03-27T10:00Z", 0),
        ("0 0 0 30 2 *", "", "2020-01-01T00:00Z", "2026-01-01T00:00Z", 0),
    ],
)
def test_count_fires(spec: str, zone: str, after: str, until: str, count: int) -> None:
    sched = schedule.parse(spec, timezone=zone)
    assert count_fires(sched, at(after), at(until)) == count
    assert count_fires(sched, at(until), at(after)) == 0


# -- policies, arguments, the job field ------------------------------------------------------


def test_the_job_policy_wins_over_the_server_default() -> None:
    assert effective_policy(job(), "once") == "once"
    assert effective_policy(job(catchup="skip"), "once") == "skip"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"policy": ""}, "resolve a job's empty catchup with effective_policy"),
        ({"policy": "twice"}, "not one of skip, once, all"),
        ({"window": -HOUR}, "must not be negative"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"sample": -1}, "sample must be 0 or more"),
        ({"now": NOW.replace(tzinfo=None)}, "now must be a timezone-aware datetime"),
        ({"last": NOW.replace(tzinfo=None) - HOUR}, "last_fired must be a timezone-aware"),
    ],
)
def test_bad_arguments_are_refused(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(job(), **{"last": NOW - HOUR, **arguments})


@pytest.mark.parametrize("policy", ["", "skip", "once", "all"])
def test_valid_catchup_values(policy: str) -> None:
    validate_job(job(catchup=policy))


@pytest.mark.parametrize("policy", ["Once", "never", "none", " all"])
def test_invalid_catchup_names_the_choices(policy: str) -> None:
    with pytest.raises(InvalidJob, match=r"use 'skip', 'once' or 'all', or leave it empty"):
        validate_job(replace(job(), catchup=policy))
