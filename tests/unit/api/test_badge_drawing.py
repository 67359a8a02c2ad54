"""Badges as values: the message and colour of a job and of a tag's jobs, and an SVG that
escapes every name."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from dkron_lab.api.badges import GREEN, GREY, ORANGE, RED, Badge, job_badge, render_svg, tag_badge
from dkron_lab.model.job import Job, JobStats
from dkron_lab.views import JobView

AT = datetime(2026, 12, 7, tzinfo=UTC)


def view(name: str, status: str = "", **job: Any) -> JobView:
    stats = JobStats(status=status, last_success=AT if status == "success" else None)
    made = Job(name=name, schedule="@daily", executor="shell", **job)
    return JobView(job=made, stats=stats, next_fire=None)


@pytest.mark.parametrize(
    ("status", "message", "color"),
    [
        ("success", "success", GREEN),
        ("failed", "failed", RED),
        ("partially_failed", "partially failed", ORANGE),
        ("", "never run", GREY),
    ],
)
def test_a_jobs_badge_says_its_last_status(status: str, message: str, color: str) -> None:
    badge = job_badge(view("nightly", status))
    assert badge == Badge(label="nightly", message=message, color=color)
    assert badge.to_json() == {
        "schemaVersion": 1,
        "label": "nightly",
        "message": message,
        "color": color,
    }


def test_the_label_is_the_display_name_when_there_is_one() -> None:
    assert job_badge(view("n", "success", displayname="Nightly report")).label == "Nightly report"


def test_a_tags_badge_counts_its_jobs_and_takes_the_worst_colour() -> None:
    ok = [view("a", "success"), view("b", "success")]
    assert tag_badge("team", "data", ok) == Badge(label="team=data", message="2 ok", color=GREEN)
    partly = tag_badge("team", "data", [*ok, view("c", "partially_failed")])
    assert (partly.message, partly.color) == ("1 failing of 3", ORANGE)
    failing = tag_badge("team", "data", [*ok, view("c", "failed"), view("d", "partially_failed")])
    assert (failing.message, failing.color) == ("2 failing of 4", RED)
    fresh = tag_badge("team", "data", [view("a", "success"), view("e")])
    assert (fresh.message, fresh.color) == ("1 ok, 1 never run", GREY)
    assert tag_badge("team", "none", []).message == "no jobs"


def test_the_svg_escapes_every_name() -> None:
    svg = render_svg(Badge(label='<script>alert("x")</script>', message="a & b", color=RED))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg and "a &amp; b" in svg
    assert 'aria-label="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;: a &amp; b"' in svg
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    evil = render_svg(Badge(label="x", message="y", color='red" onload="alert(1)'))
    assert 'onload="' not in evil


@pytest.mark.parametrize(
    ("health", "message", "color"),
    [("late", "late", ORANGE), ("overdue", "overdue", RED), ("missed", "missed", RED)],
)
def test_a_job_behind_its_schedule_says_so(health: str, message: str, color: str) -> None:
    behind = replace(view("nightly", "success"), health=(health, "2026-12-07T00:00:00Z", "why"))
    assert job_badge(behind) == Badge(label="nightly", message=message, color=color)
    tag = tag_badge("team", "data", [view("a", "success"), behind])
    assert (tag.message, tag.color) == ("1 late of 2", color)


def test_a_healthy_or_failing_health_leaves_the_last_status() -> None:
    failing = replace(view("n", "failed"), health=("failing", "", "its latest run failed"))
    assert (job_badge(failing).message, job_badge(failing).color) == ("failed", RED)
    ok = replace(view("n", "success"), health=("ok", "", ""))
    assert job_badge(ok).message == "success"
