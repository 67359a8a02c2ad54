from datetime import timedelta

import pytest

from dkron_lab.errors import InvalidSchedule, ValidationError
from dkron_lab.model.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("1h30m10s", timedelta(hours=1, minutes=30, seconds=10)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("0", timedelta(0)),
        ("-5m", timedelta(minutes=-5)),
    ],
)
def test_go_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1d", "m", "1h 30m", "abc"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(InvalidSchedule, match="write a number and a unit"):
        parse_duration(text)


def test_format_duration():
    assert format_duration(timedelta(hours=1, minutes=30, seconds=10)) == "1h30m10s"
    assert format_duration(timedelta(0)) == "0s"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("512MB", 512 * 1024**2),
        ("1.5GB", int(1.5 * 1024**3)),
        ("10KB", 10240),
        ("512m", 512 * 1024**2),
        ("2TB", 2 * 1024**4),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


def test_bad_size():
    with pytest.raises(ValidationError, match="invalid memory size"):
        parse_size("lots")
