"""dkron_lab.model.schedule: the grammar, zones and DST, @every/@at, the ~ hash, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dkron_lab.errors import InvalidSchedule
from dkron_lab.model import schedule as schedule_module
from dkron_lab.model.schedule import Schedule, fires, next_fire, parse, zone


def t(text: str) -> datetime:
    """An aware instant from RFC3339 text ('Z' or an offset)."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None
    return value


# (spec, job timezone, after, the next fires). Expected instants are written in the zone that
# makes them easy to check by hand; they are compared as instants.
CASES: list[tuple[str, str, str, list[str]]] = [
    # --- 6 fields, seconds first; 5 fields (seconds = 0)
    ("0 */5 * * * *", "", "2024-01-01T00:03:00Z", ["00:05", "00:10", "00:15"]),
    ("*/5 * * * *", "", "2024-01-01T00:03:00Z", ["00:05", "00:10", "00:15"]),
    ("30 * * * * *", "", "2024-01-01T00:00:00Z", ["00:00:30", "00:01:30"]),
    ("*/20 * * * * *", "", "2024-01-01T00:00:00Z", ["00:00:20", "00:00:40", "00:01:00"]),
    # 'N/step' means 'N-max/step'
    ("5/20 * * * * *", "", "2024-01-01T00:00:00Z", ["00:00:05", "00:00:25", "00:00:45"]),
    ("0 0 9-17/4 * * *", "", "2024-01-01T00:00:00Z", ["09:00", "13:00", "17:00", "2T09:00"]),
    ("0 0,30 8 * * ?", "", "2024-01-01T08:00:00Z", ["08:30", "2T08:00", "2T08:30"]),
    # strictly after: a fire at `after` itself is not returned
    ("0 0 12 * * *", "", "2024-01-01T12:00:00Z", ["2T12:00"]),
    ("0 0 12 * * *", "", "2024-01-01T11:59:59.999Z", ["12:00"]),
    # names, any case; weekday 7 is Sunday; 2024-01-01 is a Monday
    ("0 0 12 * * MON-FRI", "", "2024-01-06T00:00:00Z", ["8T12:00", "9T12:00"]),
    ("0 0 0 1 jan,Jul ?", "", "2024-01-01T00:00:00Z", ["2024-07-01T00:00Z", "2025-01-01T00:00Z"]),
    ("0 0 0 * * sun", "", "2024-01-01T00:00:00Z", ["7T00:00", "14T00:00"]),
    ("0 0 0 * * 7", "", "2024-01-01T00:00:00Z", ["7T00:00", "14T00:00"]),
    ("0 0 0 * * 5-7", "", "2024-01-01T00:00:00Z", ["5T00:00", "6T00:00", "7T00:00", "12T00:00"]),
    ("0 0 0 * * 1/2", "", "2024-01-01T00:00:00Z", ["3T00:00", "5T00:00", "8T00:00"]),
    # --- DOM/DOW as robfig: a star in either day field -> both must match, else either
    ("0 0 0 1,15 * MON", "", "2024-01-01T00:00:00Z", ["8T00:00", "15T00:00", "22T00:00"]),
    ("0 0 0 13 * FRI", "", "2024-01-01T00:00:00Z", ["5T00:00", "12T00:00", "13T00:00"]),
    ("0 0 0 * * MON", "", "2024-01-01T00:00:00Z", ["8T00:00", "15T00:00"]),
    ("0 0 0 ? * MON", "", "2024-01-01T00:00:00Z", ["8T00:00", "15T00:00"]),
    ("0 0 0 1 * ?", "", "2024-01-01T00:00:00Z", ["2024-02-01T00:00Z", "2024-03-01T00:00Z"]),
    # '*/1' is still a star (croniter alone would OR it: every day)
    ("0 0 0 */1 * MON", "", "2024-01-01T00:00:00Z", ["8T00:00", "15T00:00"]),
    # '*/2' is not a star: odd days or Mondays
    ("0 0 0 */2 * MON", "", "2024-01-01T00:00:00Z", ["3T00:00", "5T00:00", "7T00:00", "8T00:00"]),
    # '1-31' is not a star: every day OR Mondays = every day
    ("0 0 0 1-31 * MON", "", "2024-01-01T00:00:00Z", ["2T00:00", "3T00:00"]),
    # --- descriptors
    ("@yearly", "", "2024-05-01T00:00:00Z", ["2025-01-01T00:00Z"]),
    ("@annually", "", "2024-05-01T00:00:00Z", ["2025-01-01T00:00Z"]),
    ("@monthly", "", "2024-05-01T00:00:00Z", ["2024-06-01T00:00Z"]),
    ("@weekly", "", "2024-05-01T00:00:00Z", ["2024-05-05T00:00Z", "2024-05-12T00:00Z"]),
    ("@daily", "", "2024-05-01T00:00:00Z", ["2024-05-02T00:00Z"]),
    ("@midnight", "", "2024-05-01T00:00:00Z", ["2024-05-02T00:00Z"]),
    ("@hourly", "", "2024-05-01T00:00:00Z", ["2024-05-01T01:00Z"]),
    ("@minutely", "", "2024-05-01T00:00:00Z", ["2024-05-01T00:01Z", "2024-05-01T00:02Z"]),
    ("@Daily", "", "2024-05-01T00:00:00Z", ["2024-05-02T00:00Z"]),
    # --- the job's zone applies to every form, descriptors too
    ("@daily", "Europe/Berlin", "2024-05-01T00:00:00Z", ["2024-05-02T00:00+02:00"]),
    ("@weekly", "America/New_York", "2024-05-01T00:00:00Z", ["2024-05-05T00:00-04:00"]),
    ("@hourly", "Asia/Kolkata", "2024-05-01T00:00:00Z", ["2024-05-01T00:30Z"]),
    ("0 0 9 * * *", "Asia/Tokyo", "2024-05-01T00:00:00Z", ["2024-05-02T09:00+09:00"]),
    # --- TZ= / CRON_TZ= prefixes override the job zone, with descriptors too
    (
        "TZ=Europe/Berlin @daily",
        "America/New_York",
        "2024-05-01T00:00:00Z",
        ["2024-05-02T00:00+02:00"],
    ),
    (
        "CRON_TZ=Asia/Tokyo 0 0 9 * * *",
        "Europe/Berlin",
        "2024-05-01T00:00:00Z",
        ["2024-05-02T09:00+09:00"],
    ),
    ("TZ=America/New_York @minutely", "", "2024-05-01T00:00:30Z", ["2024-05-01T00:01Z"]),
    (
        "TZ=America/New_York @at 2030-07-01T10:00",
        "",
        "2024-01-01T00:00:00Z",
        ["2030-07-01T10:00-04:00"],
    ),
    ("TZ=UTC 0 0 9 * * *", "Asia/Tokyo", "2024-05-01T00:00:00Z", ["2024-05-01T09:00Z"]),
    # --- America/New_York 2024: 10 Mar 02:00 EST -> 03:00 EDT; 3 Nov 02:00 EDT -> 01:00 EST
    # a daily time that does not exist is skipped that day (robfig)
    (
        "0 30 2 * * *",
        "America/New_York",
        "2024-03-09T12:00:00Z",
        ["2024-03-11T02:30-04:00", "2024-03-12T02:30-04:00"],
    ),
    # 10 March 02:30 does not exist in 2024; in 2025 DST starts on 9 March
    ("0 30 2 10 3 *", "America/New_York", "2024-03-09T00:00:00Z", ["2025-03-10T02:30-04:00"]),
    # hourly keeps one fire per real hour
    (
        "0 0 * * * *",
        "America/New_York",
        "2024-03-10T00:30:00-05:00",
        ["2024-03-10T01:00-05:00", "2024-03-10T03:00-04:00", "2024-03-10T04:00-04:00"],
    ),
    (
        "0 */20 * * * *",
        "America/New_York",
        "2024-03-10T01:30:00-05:00",
        ["2024-03-10T01:40-05:00", "2024-03-10T03:00-04:00", "2024-03-10T03:20-04:00"],
    ),
    # fall back: hourly fires at both 01:00 instants
    (
        "0 0 * * * *",
        "America/New_York",
        "2024-11-03T00:30:00-04:00",
        ["2024-11-03T01:00-04:00", "2024-11-03T01:00-05:00", "2024-11-03T02:00-05:00"],
    ),
    # a quarter-hourly job in the first pass of the repeated hour goes on into the second
    (
        "0 */15 * * * *",
        "America/New_York",
        "2024-11-03T01:20:00-04:00",
        [
            "2024-11-03T01:30-04:00",
            "2024-11-03T01:45-04:00",
            "2024-11-03T01:00-05:00",
            "2024-11-03T01:15-05:00",
        ],
    ),
    (
        "0 45 * * * *",
        "America/New_York",
        "2024-11-03T01:50:00-04:00",
        ["2024-11-03T01:45-05:00", "2024-11-03T02:45-05:00"],
    ),
    # a daily time in the repeated hour fires once, at its first occurrence (robfig: twice)
    (
        "0 30 1 * * *",
        "America/New_York",
        "2024-11-03T00:00:00-04:00",
        ["2024-11-03T01:30-04:00", "2024-11-04T01:30-05:00"],
    ),
    ("0 30 1 * * *", "America/New_York", "2024-11-03T01:10:00-05:00", ["2024-11-04T01:30-05:00"]),
    # every second in hour 1 only: from the second pass, nothing until the next day
    (
        "* * 1 * * *",
        "America/New_York",
        "2024-11-03T01:10:00-05:00",
        ["2024-11-04T01:00:00-05:00", "2024-11-04T01:00:01-05:00"],
    ),
    (
        "@daily",
        "America/New_York",
        "2024-11-02T12:00:00Z",
        ["2024-11-03T00:00-04:00", "2024-11-04T00:00-05:00"],
    ),
    # where midnight itself is skipped (Havana, 10 March 2024 00:00 -> 01:00), so is @daily
    (
        "@daily",
        "America/Havana",
        "2024-03-08T12:00:00-05:00",
        ["2024-03-09T00:00-05:00", "2024-03-11T00:00-04:00"],
    ),
    # --- Europe/Berlin 2024: 31 Mar 02:00 CET -> 03:00 CEST; 27 Oct 03:00 CEST -> 02:00 CET
    (
        "0 30 2 * * *",
        "Europe/Berlin",
        "2024-03-30T12:00:00Z",
        ["2024-04-01T02:30+02:00", "2024-04-02T02:30+02:00"],
    ),
    (
        "@hourly",
        "Europe/Berlin",
        "2024-03-31T01:30:00+01:00",
        ["2024-03-31T03:00+02:00", "2024-03-31T04:00+02:00"],
    ),
    (
        "0 0 * * * *",
        "Europe/Berlin",
        "2024-10-27T01:30:00+02:00",
        ["2024-10-27T02:00+02:00", "2024-10-27T02:00+01:00", "2024-10-27T03:00+01:00"],
    ),
    (
        "0 30 2 * * *",
        "Europe/Berlin",
        "2024-10-26T12:00:00Z",
        ["2024-10-27T02:30+02:00", "2024-10-28T02:30+01:00"],
    ),
    # --- impossible dates never fire; the rare ones are found (within 5 years)
    ("0 0 0 30 2 *", "", "2024-01-01T00:00:00Z", []),
    ("0 0 0 31 4,6,9,11 ?", "", "2024-01-01T00:00:00Z", []),
    ("0 0 0 30 2 *", "America/New_York", "2024-01-01T00:00:00Z", []),
    ("0 0 0 29 2 *", "", "2024-03-01T00:00:00Z", ["2028-02-29T00:00Z", "2032-02-29T00:00Z"]),
    # --- @every: anchored at the Unix epoch, 1h30m10s = 5410 s; 1704068850 = 314985 * 5410
    (
        "@every 1h30m10s",
        "",
        "2024-01-01T00:00:00Z",
        ["2024-01-01T00:27:30Z", "2024-01-01T01:57:40Z", "2024-01-01T03:27:50Z"],
    ),
    (
        "@every 1h",
        "America/New_York",
        "2024-11-03T00:30:00-04:00",
        ["2024-11-03T01:00-04:00", "2024-11-03T01:00-05:00", "2024-11-03T02:00-05:00"],
    ),
    ("@every 2500ms", "", "2024-01-01T00:00:00Z", ["00:00:02", "00:00:04", "00:00:06"]),
    # --- @at: once, strictly after; RFC3339 or a local time in the job's zone
    ("@at 2030-01-01T00:00:00Z", "", "2024-01-01T00:00:00Z", ["2030-01-01T00:00Z"]),
    (
        "@at 2030-01-01T10:00:00+06:00",
        "Europe/Berlin",
        "2024-01-01T00:00:00Z",
        ["2030-01-01T04:00Z"],
    ),
    ("@at 2030-01-01T00:00:00.25Z", "", "2024-01-01T00:00:00Z", ["2030-01-01T00:00:00.25Z"]),
    ("@at 2030-01-01T10:00", "Europe/Berlin", "2024-01-01T00:00:00Z", ["2030-01-01T09:00Z"]),
    (
        "@at 2030-03-10T02:30",
        "America/New_York",
        "2024-01-01T00:00:00Z",
        ["2030-03-10T03:30-04:00"],
    ),
    ("@at 2020-01-01T00:00:00Z", "", "2024-01-01T00:00:00Z", []),
    ("@at 2030-01-01T00:00:00Z", "", "2030-01-01T00:00:00Z", []),
    ("@manually", "", "2024-01-01T00:00:00Z", []),
    ("TZ=Europe/Berlin @manually", "", "2024-01-01T00:00:00Z", []),
]


def _expected(after: str, texts: list[str]) -> list[datetime]:
    """Short forms: 'HH:MM[:SS]' on after's day, 'DTHH:MM' on day D of after's month (UTC)."""
    base = t(after).astimezone(UTC)
    result = []
    for text in texts:
        if len(text) > 12:
            result.append(t(text))
            continue
        day, _, clock = text.rpartition("T")
        parts = [int(p) for p in clock.split(":")] + [0]
        result.append(
            base.replace(
                day=int(day) if day else base.day,
                hour=parts[0],
                minute=parts[1],
                second=parts[2],
                microsecond=0,
            )
        )
    return result


@pytest.mark.parametrize(
    ("spec", "timezone", "after", "expected"), CASES, ids=[f"{c[0]}|{c[1]}|{c[2]}" for c in CASES]
)
def test_fires(spec: str, timezone: str, after: str, expected: list[str]) -> None:
    schedule = parse(spec, timezone=timezone, job_name="job")
    want = _expected(after, expected)
    got = fires(schedule, t(after), len(want) + 1)
    assert got[: len(want)] == want
    assert len(got) == len(want) + 1 or not want or schedule.one_shot
    for fire in got:
        assert fire.tzinfo is UTC
    first = next_fire(schedule, t(after))
    assert first == (want[0] if want else None)


@pytest.mark.parametrize(
    ("spec", "job_name", "expression"),
    [
        # 'backup': 98+97+99+107+117+112 = 630 -> sec/min 30, hour 6, dom 15, month 7, dow 0
        ("~ ~ ~ * * *", "backup", "30 30 6 * * *"),
        ("0 0 0 ~ ~ *", "backup", "0 0 0 15 7 *"),
        ("0 0 0 * * ~", "backup", "0 0 0 * * 0"),
        ("~ ~ * * *", "backup", "0 30 6 * * *"),  # 5 fields: by meaning
        ("~ ~ ~ ~ ~", "backup", "0 30 6 15 7 0"),
        ("TZ=UTC ~ * * * * *", "backup", "30 * * * * *"),  # TZ= is not a field
        ("~ * * * * *", "é", "53 * * * * *"),  # code points: ord('é') = 233
        ("~ * * * * *", "", "0 * * * * *"),
    ],
)
def test_name_hash(spec: str, job_name: str, expression: str) -> None:
    assert parse(spec, job_name=job_name).expression == expression


def test_name_hash_spreads_and_fires_at_the_hashed_time() -> None:
    schedule = parse("0 ~ ~ * * *", job_name="backup")
    assert next_fire(schedule, t("2024-01-01T00:00:00Z")) == t("2024-01-01T06:30:00Z")
    assert (
        parse("0 ~ * * * *", job_name="a").expression
        != parse("0 ~ * * * *", job_name="b").expression
    )


def test_every_is_anchored_and_the_same_from_any_starting_point() -> None:
    anchor = t("2024-01-01T00:00:05Z")
    schedule = parse("@every 10s", anchor=anchor)
    assert fires(schedule, t("2024-01-01T00:00:00Z"), 2) == [anchor, t("2024-01-01T00:00:15Z")]
    assert next_fire(schedule, anchor) == t("2024-01-01T00:00:15Z")
    assert next_fire(schedule, t("2024-01-01T00:00:14.9Z")) == t("2024-01-01T00:00:15Z")
    # any integer k: before the anchor the grid goes on (the caller enforces starts_at)
    assert next_fire(schedule, t("2023-12-31T23:59:50Z")) == t("2023-12-31T23:59:55Z")
    # an anchor in another zone is the same instant
    same = parse("@every 10s", anchor=anchor.astimezone(ZoneInfo("Asia/Tokyo")))
    assert next_fire(same, t("2024-05-01T12:00:01Z")) == next_fire(
        schedule, t("2024-05-01T12:00:01Z")
    )
    assert schedule.interval == timedelta(seconds=10)


def test_after_in_any_zone_means_the_same_instant() -> None:
    schedule = parse("0 0 * * * *", timezone="Europe/Berlin")
    utc_after = t("2024-10-27T00:30:00Z")
    for zone_name in ("UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata"):
        local = utc_after.astimezone(ZoneInfo(zone_name))
        assert next_fire(schedule, local) == t("2024-10-27T01:00:00Z")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(parse("@hourly"), datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("@every 1m", anchor=datetime(2024, 1, 1))


# Around each DST change, a brute-force oracle: walk every minute of real (UTC) time; an instant
# fires when its wall time matches, unless it is the second occurrence of a repeated wall time and
# the hour field is not '*'. The schedule must give exactly those instants.
ORACLE_CASES: list[tuple[str, str, str, Callable[[datetime], bool], bool]] = [
    ("0 * * * * *", "America/New_York", "2024-03-10", lambda w: True, True),
    ("0 * * * * *", "America/New_York", "2024-11-03", lambda w: True, True),
    ("0 */15 * * * *", "Europe/Berlin", "2024-03-31", lambda w: w.minute % 15 == 0, True),
    ("0 */15 * * * *", "Europe/Berlin", "2024-10-27", lambda w: w.minute % 15 == 0, True),
    ("0 7 * * * *", "America/New_York", "2024-11-03", lambda w: w.minute == 7, True),
    (
        "0 30 1 * * *",
        "America/New_York",
        "2024-11-03",
        lambda w: (w.hour, w.minute) == (1, 30),
        False,
    ),
    (
        "0 */10 1-2 * * *",
        "America/New_York",
        "2024-11-03",
        lambda w: w.hour in (1, 2) and w.minute % 10 == 0,
        False,
    ),
    (
        "0 */10 1-3 * * *",
        "America/New_York",
        "2024-03-10",
        lambda w: w.hour in (1, 2, 3) and w.minute % 10 == 0,
        False,
    ),
    (
        "0 */10 2 * * *",
        "Europe/Berlin",
        "2024-10-27",
        lambda w: w.hour == 2 and w.minute % 10 == 0,
        False,
    ),
    (
        "0 0,30 * * * *",
        "Australia/Lord_Howe",
        "2024-04-07",  # a 30-minute DST shift
        lambda w: w.minute in (0, 30),
        True,
    ),
    (
        "0 45 1 * * *",
        "Australia/Lord_Howe",
        "2024-04-07",
        lambda w: (w.hour, w.minute) == (1, 45),
        False,
    ),
]


@pytest.mark.parametrize(
    ("spec", "zone_name", "day", "matches", "every_hour"),
    ORACLE_CASES,
    ids=[f"{c[0]}|{c[1]}|{c[2]}" for c in ORACLE_CASES],
)
def test_dst_days_against_a_brute_force_oracle(
    spec: str, zone_name: str, day: str, matches: Callable[[datetime], bool], every_hour: bool
) -> None:
    tz = ZoneInfo(zone_name)
    start = datetime.fromisoformat(day).replace(tzinfo=tz).astimezone(UTC) - timedelta(hours=2)
    minutes = [start + timedelta(minutes=i) for i in range(1, 28 * 60)]
    expected = []
    for instant in minutes:
        local = instant.astimezone(tz)
        if matches(local) and (every_hour or local.fold == 0):
            expected.append(instant)
    got = fires(parse(spec, timezone=zone_name), start, len(expected) + 1)
    assert got[:-1] == expected
    assert got[-1] > minutes[-1]
    assert len(set(got)) == len(got)


def test_every_hour_schedules_fire_once_per_real_hour_through_both_changes() -> None:
    for zone_name, day in (
        ("America/New_York", "2024-03-10"),
        ("America/New_York", "2024-11-03"),
        ("Europe/Berlin", "2024-03-31"),
        ("Europe/Berlin", "2024-10-27"),
    ):
        start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone_name))
        got = fires(parse("@hourly", timezone=zone_name), start, 30)
        gaps = {b - a for a, b in zip(got, got[1:], strict=False)}
        assert gaps == {timedelta(hours=1)}, (zone_name, day)


def test_schedule_properties() -> None:
    cron = parse(" 0 */5 * * * * ", timezone="Europe/Berlin")
    assert cron.spec == " 0 */5 * * * * "
    assert cron.timezone == "Europe/Berlin"
    assert cron.kind == "cron"
    assert not cron.is_manual and not cron.one_shot
    assert parse("*/5 * * * *").expression == "0 */5 * * * *"
    assert parse("0  */5\t* * *").expression == "0 0 */5 * * *"
    assert parse("TZ=Asia/Tokyo\t@daily").timezone == "Asia/Tokyo"
    assert parse("@daily").expression == "0 0 0 * * *"
    assert parse("@daily").timezone == "UTC"
    assert parse("TZ=Asia/Tokyo @daily", timezone="Europe/Berlin").timezone == "Asia/Tokyo"
    assert parse("@manually").is_manual
    at = parse("@at 2030-01-01T00:00:00Z")
    assert at.one_shot and not at.is_manual
    assert at.at == t("2030-01-01T00:00:00Z")
    assert parse("@every 1h30m10s").interval == timedelta(hours=1, minutes=30, seconds=10)


def test_schedules_are_frozen_values() -> None:
    first, second = parse("0 0 * * * *"), parse("0 0 * * * *")
    assert first == second and hash(first) == hash(second)
    assert parse("0 0 * * * *", timezone="Europe/Berlin") != first
    with pytest.raises(AttributeError):
        first.spec = "@daily"  # type: ignore[misc]
    assert isinstance(first, Schedule)


def test_fires_count_and_end() -> None:
    assert fires(parse("@hourly"), t("2024-01-01T00:00:00Z"), 0) == []
    assert fires(parse("@at 2030-01-01T00:00:00Z"), t("2024-01-01T00:00:00Z"), 5) == [
        t("2030-01-01T00:00:00Z")
    ]


@pytest.mark.parametrize(
    ("spec", "timezone", "message"),
    [
        ("0 61 * * * *", "", "minute field '61': 61 is out of range 0-59"),
        ("60 * * * * *", "", "second field '60': 60 is out of range 0-59"),
        ("0 0 24 * * *", "", "hour field '24': 24 is out of range 0-23"),
        ("0 0 0 32 * *", "", "day-of-month field '32': 32 is out of range 1-31"),
        ("0 0 0 0 * *", "", "day-of-month field '0': 0 is out of range 1-31"),
        ("0 0 0 * 13 *", "", "month field '13': 13 is out of range 1-12 or JAN-DEC"),
        ("0 0 0 * * 8", "", "day-of-week field '8': 8 is out of range 0-6 or SUN-SAT"),
        ("0 0 0 * FOO *", "", "month field 'FOO': 'FOO' is not a number or a name; write 1-12"),
        ("0 0 0 * * MON-XYZ", "", "'XYZ' is not a number or a name; write 0-6 or SUN-SAT"),
        ("0 0 JAN * * *", "", "hour field 'JAN': 'JAN' is not a number; write 0-23"),
        ("0 0 0 * * 5-1", "", "day-of-week field '5-1': range '5-1' runs backwards"),
        ("0 */0 * * * *", "", "minute field '*/0': step '0' must be a whole number of at least 1"),
        ("0 */x * * * *", "", "step 'x' must be a whole number"),
        ("0 1,,2 * * * *", "", "minute field '1,,2': a missing value is not a number"),
        ("0 -5 * * * *", "", "a missing value is not a number"),
        ("0 ~/5 * * * *", "", "'~' (the name hash) must be a whole field"),
        (
            "* * * *",
            "",
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
            "fields with seconds first",
        ),
        ("* * * * * * *", "", "got 7 fields"),
        ("", "", "the schedule is empty"),
        ("   ", "", "the schedule is empty"),
        ("@dialy", "", "unknown descriptor '@dialy': did you mean '@daily'? use one of @yearly"),
        ("@sometimes", "", "unknown descriptor '@sometimes'"),
        ("@daily now", "", "@daily takes nothing after it, got 'now'"),
        ("@every", "", "@every needs a duration, e.g. '@every 30s'"),
        ("@every 5x", "", "invalid duration '5x': write a number and a unit"),
        ("@every 1h 30m", "", "invalid duration '1h 30m'"),
        ("@every 500ms", "", "@every needs an interval of at least 1s, got '500ms'"),
        ("@every 0s", "", "at least 1s"),
        ("@every -5s", "", "at least 1s"),
        ("@at tomorrow", "", "@at needs an RFC3339 time such as '2030-05-01T09:30:00Z'"),
        ("@at 2024-02-30T10:00:00Z", "", "'2024-02-30T10:00:00Z' is not a valid time"),
        ("@at 2024-01-01T10:00:00+25:00", "", "is not a valid time"),
        ("@at 2024-01-01 10:00:00Z", "", "@at needs an RFC3339 time"),
        ("TZ=Mars/Olympus 0 * * * * *", "", "unknown time zone 'Mars/Olympus': use an IANA name"),
        ("TZ=Europe/Berlin", "", "nothing follows the TZ= prefix: write e.g. 'TZ=Europe/Berlin"),
        ("CRON_TZ=Europe/Berlin ", "", "nothing follows the CRON_TZ= prefix"),
        ("@daily", "Europe/Berln", "unknown time zone 'Europe/Berln'"),
        ("@daily", "Europe/Berln", "did you mean 'Europe/Berlin'?"),
        ("@daily", "europe/berlin", "did you mean 'Europe/Berlin'?"),
        ("@daily", "Local", "the server's local zone) is not accepted"),
        ("0 61 * * * *", "Europe/Berln", "unknown time zone"),  # the zone is checked first
    ],
)
def test_invalid_schedules_say_what_and_how(spec: str, timezone: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse(spec, timezone=timezone)
    text = str(caught.value)
    assert text.startswith(f"can't parse job schedule {spec!r}: ")
    assert message in text


@pytest.mark.parametrize(
    ("name", "offset_in_july"),
    [
        ("", timedelta(0)),
        ("UTC", timedelta(0)),
        ("Europe/Berlin", timedelta(hours=2)),
        ("America/New_York", timedelta(hours=-4)),
        ("Asia/Kolkata", timedelta(hours=5, minutes=30)),
    ],
)
def test_zone(name: str, offset_in_july: timedelta) -> None:
    assert datetime(2024, 7, 1, tzinfo=zone(name)).utcoffset() == offset_in_july


@pytest.mark.parametrize("name", ["Nowhere/City", "../etc/passwd", "/etc/localtime", "Local"])
def test_zone_rejects_unknown_names(name: str) -> None:
    with pytest.raises(InvalidSchedule, match="time zone"):
        zone(name)


def test_module_surface() -> None:
    assert sorted(schedule_module.__all__) == [
        "SEARCH_YEARS",
        "Schedule",
        "ScheduleKind",
        "fires",
        "next_fire",
        "parse",
        "zone",
    ]
