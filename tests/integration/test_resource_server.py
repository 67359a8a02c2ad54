"""Resource use per run (issue 13) through a real one-node server (a subprocess: Raft, DuckDB,
the shell executor): what a run's process tree used reaches the execution JSON, the history
(SQL), and ``/metrics``; ``cpu_limit_seconds`` is checked when the job is saved and kills a run
that goes over it."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.testing import DkronNode, auth_headers, one_node

MB = 1024 * 1024
# A grandchild (sh -> python) that burns 0.4 s of user CPU, then holds 60 MB for 1.5 s.
WORK = (
    "import os, time\n"
    "t = os.times().user + 0.4\n"
    "while os.times().user < t:\n"
    "    for _ in range(100_000): pass\n"
    "b = bytearray(60 * 1024 * 1024)\n"
    "b[::4096] = b'x' * len(b[::4096])\n"
    "time.sleep(1.5)\n"
)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DkronNode]:
    with one_node(tmp_path / "dkron", args=["--enable-prometheus"]) as node:
        yield node


@pytest.fixture
def http(node: DkronNode) -> Iterator[httpx.Client]:
    headers = auth_headers(node.token)
    with httpx.Client(base_url=node.url, headers=headers, timeout=60) as client:
        yield client


def save(http: httpx.Client, name: str, **config: str) -> httpx.Response:
    job = {"name": name, "schedule": "@manually", "executor": "shell", "executor_config": config}
    return http.post("/v1/jobs", json=job)


def run(http: httpx.Client, name: str) -> dict[str, Any]:
    answer = http.post(f"/v1/jobs/{name}", params={"wait": "true"})
    assert answer.status_code == 200, answer.text
    (execution,) = http.get(f"/v1/jobs/{name}/executions").json()
    return dict(execution)


def test_what_a_grandchild_used_reaches_the_json_the_history_and_metrics(
    http: httpx.Client,
) -> None:
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(WORK)} & wait"
    assert save(http, "heavy", command=command, shell="true").status_code == 201

    execution = run(http, "heavy")

    assert execution["success"], execution
    assert execution["cpu_user_seconds"] >= 0.3
    assert 0 <= execution["cpu_system_seconds"] < 5
    assert execution["max_rss_bytes"] >= 60 * MB
    sql = http.post(
        "/v1/sql",
        json={
            "query": "SELECT cpu_user_seconds, cpu_system_seconds, max_rss_bytes FROM executions"
        },
    )
    assert sql.status_code == 200, sql.text
    assert sql.json()["rows"] == [
        [
            execution["cpu_user_seconds"],
            execution["cpu_system_seconds"],
            execution["max_rss_bytes"],
        ]
    ]
    scrape = http.get("/metrics").text
    assert "dkron_execution_cpu_seconds_count 1.0" in scrape
    assert "dkron_execution_max_rss_bytes_count 1.0" in scrape
    assert 'dkron_execution_max_rss_bytes_bucket{le="1.6777216e+07"} 0.0' in scrape


def test_a_run_over_cpu_limit_seconds_is_killed_and_says_so(http: httpx.Client) -> None:
    burn = f"{shlex.quote(sys.executable)} -c 'while True: pass'"
    assert save(http, "spin", command=burn, cpu_limit_seconds="0.5").status_code == 201

    execution = run(http, "spin")

    assert not execution["success"]
    last_line = execution["output"].splitlines()[-1]
    assert last_line.startswith("shell: CPU limit hit: the run used ")
    assert last_line.endswith("over cpu_limit_seconds=0.5; it was killed with all its processes")
    assert execution["cpu_user_seconds"] + execution["cpu_system_seconds"] > 0.5


def test_a_bad_cpu_limit_is_a_400_naming_the_key(http: httpx.Client) -> None:
    answer = save(http, "bad", command="true", cpu_limit_seconds="ten")
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(
        'shell executor: "cpu_limit_seconds" must be a positive number of CPU seconds'
    )
    assert http.get("/v1/jobs/bad").status_code == 404


def test_an_http_run_has_no_resource_use(http: httpx.Client, node: DkronNode) -> None:
    job = {
        "name": "ping",
        "schedule": "@manually",
        "executor": "http",
        "executor_config": {"method": "GET", "url": f"{node.url}/health", "expectCode": "200"},
    }
    assert http.post("/v1/jobs", json=job).status_code == 201
    execution = run(http, "ping")
    assert execution["success"], execution
    assert (
        execution["cpu_user_seconds"],
        execution["cpu_system_seconds"],
        execution["max_rss_bytes"],
    ) == (None, None, None)
