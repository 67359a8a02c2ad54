"""A real server process, killed with SIGKILL while it schedules and runs jobs, restarted on the
same data dir: every job, counter and recorded execution is still there, and runs that were in
flight when it died are recorded as failed instead of blocking their job for ever."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.testing import auth_headers, free_port

pytestmark = pytest.mark.slow

TOKEN = "restart-test-token"


def get(url: str, **options: Any) -> httpx.Response:
    return httpx.get(url, headers=auth_headers(TOKEN), **options)


def post(url: str, **options: Any) -> httpx.Response:
    return httpx.post(url, headers=auth_headers(TOKEN), **options)


class Server:
    """One `dkron-lab agent --server --bootstrap-expect 1` subprocess."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.raft_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, *extra: str) -> None:
        command = [
            sys.executable, "-m", "dkron_lab.cli", "agent", "--server",
            "--bootstrap-expect", "1", "--node-name", "crashy",
            "--data-dir", str(self.data_dir), "--log-level", "warn",
            "--http-addr", f"127.0.0.1:{self.http_port}",
            "--bind-addr", f"127.0.0.1:{self.raft_port}", *extra,
        ]  # fmt: skip
        env = {**os.environ, "DKRON_API_TOKEN": TOKEN}  # not on the command line: ps shows it
        self.process = subprocess.Popen(command, start_new_session=True, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            assert self.process.poll() is None, "the server exited during start-up"
            time.sleep(0.05)
        raise AssertionError("the server did not become healthy within 30 s")

    def kill(self) -> None:
        """SIGKILL the server and every process it started (its session)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data")
    try:
        yield server
    finally:
        server.kill()


def job(name: str, **fields: object) -> dict[str, object]:
    return {
        "name": name,
        "schedule": "@every 1s",
        "executor": "shell",
        "executor_config": {"command": "echo tick"},
        **fields,
    }


def executions(server: Server, name: str) -> list[dict[str, object]]:
    response = get(f"{server.url}/v1/jobs/{name}/executions", timeout=10)
    response.raise_for_status()
    return list(response.json())


def test_kill_9_loses_no_job_counter_or_execution(server: Server) -> None:
    server.start()
    for i in range(20):
        post(f"{server.url}/v1/jobs", json=job(f"tick-{i}"), timeout=10).raise_for_status()
    post(
        f"{server.url}/v1/jobs",
        json=job(
            "slow",
            schedule="@every 1h",
            executor_config={"command": "sleep 30"},
            concurrency="forbid",
        ),
        timeout=10,
    ).raise_for_status()
    assert post(f"{server.url}/v1/jobs/slow/run", timeout=10).status_code == 202
    until(lambda: succeeded(server) >= 20, "20 runs recorded")
    until(lambda: any(e["job_name"] == "slow" for e in busy(server)), "slow running")

    before = {j["name"]: j for j in get(f"{server.url}/v1/jobs", timeout=10).json()}
    recorded = {name: {e["id"] for e in executions(server, name)} for name in before}
    server.kill()

    server.start()
    after = {j["name"]: j for j in get(f"{server.url}/v1/jobs", timeout=10).json()}
    assert set(after) == set(before) == {f"tick-{i}" for i in range(20)} | {"slow"}
    for name, seen in before.items():
        assert after[name]["success_count"] >= seen["success_count"]
        assert after[name]["executor_config"] == seen["executor_config"]
        assert recorded[name] <= {e["id"] for e in executions(server, name)}
    assert sum(j["success_count"] for j in before.values()) >= 20

    # The interrupted forbid run is recorded failed, so the job can run again.
    deadline = time.monotonic() + 10
    while not executions(server, "slow") and time.monotonic() < deadline:
        time.sleep(0.1)
    (lost,) = executions(server, "slow")
    assert lost["success"] is False and "outcome of this execution is unknown" in lost["output"]
    rerun = post(f"{server.url}/v1/jobs/slow/run", timeout=10)
    assert rerun.status_code == 202


def test_counters_match_history_after_repeated_kills(server: Server) -> None:
    """Kill during steady firing several times; counters and history agree exactly."""
    server.start()
    for i in range(5):
        post(f"{server.url}/v1/jobs", json=job(f"j{i}"), timeout=10).raise_for_status()
    for _ in range(4):  # each time once every job has fired again: kill it while it fires
        fired = succeeded(server)
        until(lambda fired=fired: succeeded(server) >= fired + 5, "5 more runs")
        server.kill()
        server.start()
    for i in range(5):  # stop the firing, so counters and history can be compared at rest
        post(f"{server.url}/v1/jobs/j{i}/toggle", timeout=10).raise_for_status()
    for i in range(5):
        view, runs = at_rest(server, f"j{i}")
        successes = sum(1 for e in runs if e["success"])
        assert view["success_count"] == successes
        assert view["error_count"] == len(runs) - successes
        assert len({e["id"] for e in runs}) == len(runs)
        scheduled = [e["scheduled_at"] for e in runs if e["scheduled_at"]]
        assert len(scheduled) == len(set(scheduled)), "an instant ran twice"


def succeeded(server: Server) -> int:
    jobs = get(f"{server.url}/v1/jobs", timeout=10).json()
    return sum(int(j["success_count"]) for j in jobs)


def busy(server: Server) -> list[dict[str, object]]:
    return list(get(f"{server.url}/v1/busy", timeout=10).json())


def until(probe: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``probe`` until it holds (these tests wait for runs, never for a fixed time)."""
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.05)


def at_rest(server: Server, name: str) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The job and its executions once they agree (history is written in batches)."""
    deadline = time.monotonic() + 5
    while True:
        view = get(f"{server.url}/v1/jobs/{name}", timeout=10).json()
        runs = executions(server, name)
        counted = view["success_count"] + view["error_count"]
        if counted == len(runs) or time.monotonic() > deadline:
            return view, runs
        time.sleep(0.1)
