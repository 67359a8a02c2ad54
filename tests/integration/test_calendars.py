"""Calendars on real servers: the API (real HTTP, a real one-node server process), a holiday
skipped while the server runs (an in-process node with a fake clock, real Raft and DuckDB),
and a calendar made on one server of three read on the others."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.plugins import ExecutionRequest, ExecutorResult
from dkron_lab.registry import PluginRegistry
from dkron_lab.testing import DkronNode, FakeClock, auth_headers, one_node, server_config, wait_for
from tests.harness import Cluster

HOLIDAYS = {"name": "holidays", "dates": ["2026-12-25", "2027-01-01"], "weekdays": ["sun"]}


@pytest.fixture
def http(dkron_node: DkronNode) -> Iterator[httpx.Client]:
    headers = auth_headers(dkron_node.token)
    with httpx.Client(base_url=dkron_node.url, headers=headers, trust_env=False) as client:
        yield client


def shell_job(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1s",
        "executor": "shell",
        "executor_config": {"command": "true"},
        **fields,
    }


def test_calendars_are_made_read_replaced_and_deleted(http: httpx.Client) -> None:
    made = http.post("/v1/calendars", json=HOLIDAYS)
    assert made.status_code == 201, made.text
    assert made.headers["Location"] == "/v1/calendars/holidays"
    assert made.json()["weekdays"] == ["sun"]
    again = http.put("/v1/calendars/holidays", json={"dates": ["2026-12-25"]})
    assert again.status_code == 200
    assert http.get("/v1/calendars/holidays").json()["dates"] == ["2026-12-25"]
    assert [c["name"] for c in http.get("/v1/calendars").json()] == ["holidays"]
    assert http.delete("/v1/calendars/holidays").status_code == 200
    missing = http.get("/v1/calendars/holidays")
    assert missing.status_code == 404
    assert "POST /v1/calendars" in missing.json()["error"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"name": "c", "dates": ["2026-02-30"]}, "'2026-02-30' is not a date"),
        ({"name": "c", "ranges": [{"from": "2026-12-31", "to": "2026-12-24"}]}, "reversed"),
        ({"name": "c", "weekdays": ["someday"]}, "unknown weekday 'someday'"),
        ({"name": "c", "dates": ["2026-01-01"] * 10_001}, "at most 10000 dates"),
        ({"name": "no spaces"}, "invalid calendar name"),
    ],
)
def test_bad_calendars_are_a_400_saying_what_to_fix(
    http: httpx.Client, body: dict[str, Any], says: str
) -> None:
    answer = http.post("/v1/calendars", json=body)
    assert answer.status_code == 400
    assert says in answer.json()["error"]


def test_a_job_needs_its_calendar_and_a_used_calendar_stays(http: httpx.Client) -> None:
    refused = http.post("/v1/jobs", json=shell_job("j", calendar="holidays"))
    assert refused.status_code == 400
    assert (
        "calendar 'holidays' does not exist: create it with POST /v1/calendars"
        in (refused.json()["error"])
    )
    http.post("/v1/calendars", json=HOLIDAYS).raise_for_status()
    http.post("/v1/jobs", json=shell_job("j", schedule="@daily", calendar="holidays"))
    conflict = http.delete("/v1/calendars/holidays")
    assert conflict.status_code == 409
    assert "used by job(s) j" in conflict.json()["error"]


def test_the_schedule_preview_and_a_jobs_next_skip_the_calendar(http: httpx.Client) -> None:
    http.post("/v1/calendars", json=HOLIDAYS).raise_for_status()
    params = {"schedule": "0 0 3 * * *", "timezone": "Europe/Paris", "count": 3}
    params |= {"after": "2026-12-23T12:00:00Z", "calendar": "holidays"}
    preview = http.get("/v1/schedule", params=params).json()
    assert preview["next"] == [  # the 25th is a holiday, the 27th a Sunday
        "2026-12-24T03:00:00+01:00",
        "2026-12-26T03:00:00+01:00",
        "2026-12-28T03:00:00+01:00",
    ]
    assert preview["calendar"] == "holidays"
    only = http.get("/v1/schedule", params=params | {"calendar_mode": "only"}).json()
    assert only["next"] == [
        "2026-12-25T03:00:00+01:00",
        "2026-12-27T03:00:00+01:00",
        "2027-01-01T03:00:00+01:00",
    ]
    assert http.get("/v1/schedule", params=params | {"calendar": "nope"}).status_code == 404
    # A job's next jumps over every calendar day from today on.
    today = datetime.now(UTC).date()
    days = [(today + timedelta(days=n)).isoformat() for n in range(3)]
    http.put("/v1/calendars/soon", json={"dates": days}).raise_for_status()
    job = shell_job("skips", calendar="soon")
    http.post("/v1/jobs", json=job).raise_for_status()
    shown = http.get("/v1/jobs/skips").json()
    assert datetime.fromisoformat(shown["next"]).date() == today + timedelta(days=3)
    assert shown["calendar"] == "soon"


def test_fires_on_excluded_days_are_skipped_not_run(http: httpx.Client) -> None:
    """Every second, on a calendar holding today (and the next days, should midnight pass):
    in exclude mode nothing runs and the skip is recorded (reason calendar); in only mode
    the same calendar lets the job run."""
    today = datetime.now(UTC).date()
    days = [(today + timedelta(days=n)).isoformat() for n in range(3)]
    http.put("/v1/calendars/now", json={"dates": days}).raise_for_status()
    http.post("/v1/jobs", json=shell_job("excluded", calendar="now")).raise_for_status()
    only = shell_job("included", calendar="now", calendar_mode="only")
    http.post("/v1/jobs", json=only).raise_for_status()

    def ran() -> int:
        return int(http.get("/v1/jobs/included").json()["success_count"])

    wait_for(lambda: ran() >= 2, 20, "the job on its calendar's days did not run")
    spans = wait_for(
        lambda: http.get("/v1/jobs/excluded/skipped").json(), 20, "no skip was recorded"
    )
    assert {span["reason"] for span in spans} == {"calendar"}
    assert spans[-1]["count"] == 1  # the day's first excluded fire, on its instant
    assert http.get("/v1/jobs/excluded/executions").json() == []
    excluded = http.get("/v1/jobs/excluded").json()
    assert excluded["success_count"] == excluded["error_count"] == 0
    assert datetime.fromisoformat(excluded["next"]).date() == today + timedelta(days=3)


def test_calendar_writes_need_a_writer(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yml"
    viewer = "viewer-token-0123456789"
    tokens.write_text(f"tokens:\n  - name: v\n    role: viewer\n    token: {viewer}\n")
    with one_node(tmp_path / "n", args=["--api-tokens-file", str(tokens)]) as node:
        headers = auth_headers(viewer)
        with httpx.Client(base_url=node.url, headers=headers, trust_env=False) as client:
            assert client.get("/v1/calendars").status_code == 200
            refused = client.post("/v1/calendars", json=HOLIDAYS)
            assert refused.status_code == 403, refused.text


# -- a holiday skipped, in fake time ------------------------------------------------------------


class Noop:
    async def execute(self, request: ExecutionRequest, emit: object) -> ExecutorResult:
        return ExecutorResult(success=True, output=b"")


T0 = datetime(2026, 12, 24, 22, 0, 30, tzinfo=UTC)


async def test_a_holiday_is_skipped_while_the_server_runs(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    node = Node(
        server_config(tmp_path, node_name="n1"),
        clock=clock,
        registry=PluginRegistry(executors={"noop": Noop()}, entry_points=False),
    )
    await node.start()
    try:
        await node.jobs.set_calendar(node_calendar())
        job = Job(name="six", schedule="0 0 */6 * * *", executor="noop", calendar="holidays")
        await node.jobs.set_job(job)
        assert node.jobs.get_job("six").next_fire == datetime(2026, 12, 26, tzinfo=UTC)
        while clock.now() < datetime(2026, 12, 26, 7, tzinfo=UTC):
            clock.advance(timedelta(minutes=30))
            await asyncio.sleep(0.05)
        await node.outcomes.done.drain()
        await asyncio.sleep(0.2)
        runs, _, _ = await node.jobs.list_executions("six")
        assert sorted(e.scheduled_at for e in runs if e.scheduled_at) == [
            datetime(2026, 12, 26, 0, tzinfo=UTC),
            datetime(2026, 12, 26, 6, tzinfo=UTC),
        ]
        spans = await node.jobs.skipped("six")
        assert [(s["reason"], s["count"]) for s in reversed(spans)] == [
            ("calendar", 1),  # 00:00 on the 25th, on its instant
            ("calendar", 3),  # 06:00 to 18:00, at 18:00
        ]
        assert node.jobs.get_job("six").next_fire == datetime(2026, 12, 26, 12, tzinfo=UTC)
    finally:
        await node.stop()


def node_calendar() -> Any:
    from dkron_lab.model.calendar import calendar_from_json

    return calendar_from_json({"name": "holidays", "dates": [date(2026, 12, 25).isoformat()]})


# -- three servers -------------------------------------------------------------------------------


def test_a_calendar_made_on_one_server_is_on_the_others(tmp_path: Path) -> None:
    with Cluster(tmp_path, servers=3) as cluster:
        cluster.start_all()
        leader = cluster.leader()
        follower = cluster.followers()[0]
        made = cluster.http.post(cluster.url(follower) + "/v1/calendars", json=HOLIDAYS)
        assert made.status_code == 201, made.text
        for name in cluster.servers:
            found = wait_for(
                lambda name=name: cluster.get(name, "/v1/calendars/holidays"),
                15,
                f"the calendar did not reach {name}",
            )
            assert found["dates"] == HOLIDAYS["dates"]
        job = shell_job("on-holidays", schedule="@daily", calendar="holidays")
        cluster.http.post(cluster.url(leader) + "/v1/jobs", json=job).raise_for_status()
        nexts = {
            name: wait_for(
                lambda name=name: (cluster.get(name, "/v1/jobs/on-holidays") or {}).get("next"),
                15,
                f"{name} does not show the job's next",
            )
            for name in cluster.servers
        }
        assert len(set(nexts.values())) == 1, nexts
