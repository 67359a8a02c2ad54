"""Heartbeat checks for real (issue 13): a one-node server process, pings over HTTP. A check
whose pings stop is missed (a failed run recorded for the instant, the job ``missed``); pings
that come are runs with their body as output; the ping key opens the ping routes of its job and
nothing else."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dkron_lab.testing import DkronNode, auth_headers, one_node, wait_for

CHECK = {
    "name": "legacy-backup",
    "schedule": "@every 2s",
    "executor": "heartbeat",
    "max_lateness": "1s",
}


@pytest.fixture
def node(tmp_path: Path):
    with one_node(tmp_path / "dkron") as started:
        yield started


def job(node: DkronNode, name: str) -> dict:
    with node.client() as client:
        return client.job(name)


def runs(node: DkronNode, name: str) -> list[dict]:
    with node.client() as client:
        return client.executions(name)


def test_a_check_without_pings_is_missed_and_its_pings_are_runs(node):
    with node.client() as client:
        created = client.put_job(CHECK)
    ping_url = created["ping_url"]
    assert ping_url.startswith("/v1/jobs/legacy-backup/ping?key=")
    # No ping: the first instant's grace ends, a failed run is recorded and the job is missed.
    missed = wait_for(lambda: runs(node, "legacy-backup"), 6, "a missed run recorded")
    assert missed[0]["success"] is False and "no ping for" in missed[0]["output"]
    assert missed[0]["scheduled_at"]
    wait_for(lambda: job(node, "legacy-backup")["health"] == "missed", 3, "the check missed")
    # The watched process pings (with the key only, no token) every second: ok again.
    with httpx.Client(base_url=node.url, trust_env=False) as http:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            answer = http.post(ping_url, content=b"backup done: 42 files")
            assert answer.status_code == 200, answer.text
            if job(node, "legacy-backup")["health"] == "ok":
                break
            time.sleep(1)
    assert job(node, "legacy-backup")["health"] == "ok"
    pinged = [r for r in runs(node, "legacy-backup") if r["success"]]
    assert pinged and pinged[0]["output"] == "backup done: 42 files"
    assert pinged[0]["scheduled_at"] is not None


def test_ping_start_then_fail_is_one_failed_run_from_start_to_end(node):
    with node.client() as client:
        key = parse_qs(urlsplit(client.put_job(CHECK)["ping_url"]).query)["key"][0]
    with httpx.Client(base_url=node.url, trust_env=False) as http:
        started = http.post("/v1/jobs/legacy-backup/ping/start", headers={"X-Ping-Key": key})
        assert started.status_code == 200 and started.json()["started"] is True
        time.sleep(0.5)
        failed = http.post(f"/v1/jobs/legacy-backup/ping/fail?key={key}", content=b"disk full")
    assert failed.status_code == 200
    run = failed.json()
    assert run["success"] is False and run["output"] == "disk full"
    duration = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(
        run["started_at"]
    )
    assert duration.total_seconds() >= 0.4
    recorded = wait_for(
        lambda: [r for r in runs(node, "legacy-backup") if r["output"] == "disk full"],
        5,
        "the failed ping in the history",
    )
    assert recorded[0]["id"] == run["id"]


def test_the_ping_key_opens_its_own_ping_routes_only(node):
    with node.client() as client:
        key = parse_qs(urlsplit(client.put_job(CHECK)["ping_url"]).query)["key"][0]
        client.put_job({**CHECK, "name": "other-check"})
        client.put_job(
            {"name": "plain", "schedule": "@manually", "executor": "shell",
             "executor_config": {"command": "true"}}
        )  # fmt: skip
    with httpx.Client(base_url=node.url, trust_env=False) as http:
        assert http.post(f"/v1/jobs/other-check/ping?key={key}").status_code == 401
        assert http.get(f"/v1/jobs/legacy-backup?key={key}").status_code == 401
        assert http.get("/v1/jobs", headers={"X-Ping-Key": key}).status_code == 401
        assert http.post(f"/v1/jobs/legacy-backup/run?key={key}").status_code == 401
        assert http.post("/v1/jobs/legacy-backup/ping?key=wrong").status_code == 401
        # With the token: a ping of a job that is not a heartbeat check is a clear 400.
        headers = auth_headers(node.token)
        plain = http.post("/v1/jobs/plain/ping", headers=headers)
        assert plain.status_code == 400 and "is not a heartbeat check" in plain.json()["error"]
        # Running a heartbeat check now is refused: it runs nothing.
        run = http.post("/v1/jobs/legacy-backup/run", headers=headers)
        assert run.status_code == 400 and "runs nothing" in run.json()["error"]


def test_the_client_pings_with_its_token(node):
    with node.client() as client:
        client.put_job(CHECK)
        assert client.ping("legacy-backup", "start") == {"job": "legacy-backup", "started": True}
        run = client.ping("legacy-backup", body="backup done: 42 files")
    assert run["success"] is True and run["output"] == "backup done: 42 files"
    assert run["started_at"] < run["finished_at"]
