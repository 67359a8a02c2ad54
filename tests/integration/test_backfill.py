"""Backfills for real (issue 13): a one-node server process and real shell runs. A backfill of
1,000 past instants, started twice at once while the job's live fires go on, runs every instant
exactly once (the history says so); runs carry their instant and the backfill's id; mode latest,
cancelling, and the 400s."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from dkron_lab import codec
from dkron_lab.testing import DkronNode, auth_headers, one_node, wait_for

TICK = {
    "name": "tick",
    "schedule": "@every 1s",
    "executor": "shell",
    "executor_config": {"command": "true"},
}


@pytest.fixture
def node(tmp_path: Path):
    with one_node(tmp_path / "dkron") as started:
        yield started


@pytest.fixture
def http(node: DkronNode):
    with httpx.Client(base_url=node.url, headers=auth_headers(node.token), timeout=30) as client:
        yield client


def instant(seconds_ago: float) -> str:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)
    return codec.format_time(at) or ""


def ended(http: httpx.Client, backfill_id: str) -> dict | None:
    found = http.get(f"/v1/backfills/{backfill_id}").json()
    return found if found["state"] != "running" and found["running"] == 0 else None


def scheduled_counts(http: httpx.Client, job: str) -> Counter[str]:
    query = f"SELECT scheduled_at::VARCHAR, backfill FROM executions WHERE job_name = '{job}'"
    rows = http.post("/v1/sql", json={"query": query, "max_rows": 100_000}).json()["rows"]
    return Counter(row[0] for row in rows if row[0] is not None)


def test_two_backfills_of_1000_instants_racing_live_fires_run_each_instant_once(node, http):
    http.post("/v1/jobs", json=TICK).raise_for_status()
    wait_for(lambda: http.get("/v1/jobs/tick").json()["success_count"] >= 2, 20, "live fires")
    body = {"from": instant(1000), "to": instant(0), "max_parallel": 25}
    with ThreadPoolExecutor(2) as pool:  # the same range twice, at once
        answers = list(pool.map(lambda _: http.post("/v1/jobs/tick/backfill", json=body), "ab"))
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    first, second = (a.json() for a in answers)
    assert first["total"] >= 990 and answers[0].headers["Location"].startswith("/v1/backfills/")
    done = [
        wait_for(lambda b=b: ended(http, b["id"]), 240, "backfill done") for b in (first, second)
    ]
    assert all(d["state"] == "done" and d["failed"] == 0 for d in done), done
    # Every instant of the range that either backfill ran, ran once: live, or in one backfill.
    ran = sum(d["done"] for d in done)
    assert ran >= 990 and sum(d["lost"] for d in done) + ran == first["total"] + second["total"]
    wait_for(lambda: http.get("/v1/jobs/tick").json()["success_count"] >= ran, 30, "recorded")
    counts = scheduled_counts(http, "tick")
    assert [at for at, n in counts.items() if n > 1] == []
    assert len(counts) >= ran
    runs = http.get("/v1/jobs/tick/executions", params={"_end": 2000}).json()
    marked = [r for r in runs if r["backfill"]]
    assert len(marked) == ran and {r["backfill"] for r in marked} <= {first["id"], second["id"]}
    assert all(r["scheduled_at"] for r in marked)
    # The live fires went on meanwhile, and the job is not called late for the backfill.
    assert http.get("/v1/jobs/tick").json()["health"] == "ok"


def test_mode_latest_runs_only_the_latest_instant(node, http):
    job = {**TICK, "name": "hourly", "schedule": "0 0 * * * *"}
    http.post("/v1/jobs", json=job).raise_for_status()
    body = {"from": instant(6 * 3600), "to": instant(0), "mode": "latest"}
    started = http.post("/v1/jobs/hourly/backfill", json=body).json()
    assert started["total"] == 1
    done = wait_for(lambda: ended(http, started["id"]), 30, "backfill done")
    assert (done["done"], done["state"]) == (1, "done")
    (run,) = http.get("/v1/jobs/hourly/executions").json()
    latest = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert run["scheduled_at"] == codec.format_time(latest) and run["backfill"] == started["id"]


def test_a_cancelled_backfill_claims_no_more(node, http):
    job = {**TICK, "name": "slow", "executor_config": {"command": "sleep 1"}}
    http.post("/v1/jobs", json=job).raise_for_status()
    body = {"from": instant(100), "to": instant(50), "max_parallel": 1}
    started = http.post("/v1/jobs/slow/backfill", json=body).json()
    cancelled = http.delete(f"/v1/backfills/{started['id']}").json()
    assert cancelled["state"] == "cancelled"
    done = wait_for(lambda: ended(http, started["id"]), 30, "the run in flight ends")
    assert done["done"] <= 2 and done["total"] >= 49
    listed = http.get("/v1/backfills", params={"job": "slow"}).json()
    assert [b["id"] for b in listed] == [started["id"]]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"to": "2026-01-01T00:00:00Z"}, "'from' is required"),
        ({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, "'from' is not an RFC 3339"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "is before from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "mode": "some"}, "mode"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "max_parallel": 0},
         "max_parallel must be from 1"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "split the range"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "when": 1}, "unknown"),
    ],
)  # fmt: skip
def test_a_bad_backfill_is_a_400_and_starts_nothing(node, http, body, says):
    http.post("/v1/jobs", json=TICK).raise_for_status()
    answer = http.post("/v1/jobs/tick/backfill", json=body)
    assert answer.status_code == 400 and says in answer.json()["error"], answer.text
    assert http.get("/v1/backfills").json() == []


def test_the_cli_backfills_and_waits(node, http):
    http.post("/v1/jobs", json={**TICK, "name": "cli-tick", "schedule": "@every 10s"})
    cli = Path(sys.executable).with_name("dkron-lab")
    ran = subprocess.run(
        [str(cli), "jobs", "backfill", "cli-tick", "--from", instant(60), "--to", instant(1),
         "--wait", "--address", node.url, "--token", node.token],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    first, last = ran.stdout.splitlines()
    assert first.startswith("backfill bf-") and "of job cli-tick: " in first
    assert last.startswith("done: ") and " 0 failed, 0 running" in last
    assert len(http.get("/v1/jobs/cli-tick/executions").json()) >= 5
