"""The ``dkron-lab`` console script end to end: real agent processes on free loopback ports,
real data dirs, and the client commands run as subprocesses against them."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from dkron_lab._version import __version__
from dkron_lab.client import Client
from dkron_lab.errors import (
    DkronError,
    JobNotFound,
    NotFoundError,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from dkron_lab.testing import free_port

CLI = [sys.executable, "-m", "dkron_lab.cli"]
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any DKRON_* the developer may have set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DKRON_")}
    return env | extra


def dkron_lab(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=60,
        check=False,
    )


class Agent:
    """A ``dkron-lab agent`` subprocess; its output goes to a log file shown on failure."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = workdir / f"agent-{self.http_port}.log"
        argv = [*CLI, "agent", *args, "--http-addr", f"127.0.0.1:{self.http_port}"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"agent exited with {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"agent not healthy after {STARTUP_TIMEOUT}s:\n{self.log}")

    def terminate(self) -> int:
        """SIGTERM, then the exit status (the test fails if it takes too long)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"agent still running {STOP_TIMEOUT}s after SIGTERM:\n{self.log}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)


StartAgent = Callable[..., Agent]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll another process's state (not the passing of time) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def start_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartAgent]:
    """Start a single-node server on ``tmp_path/dkron.data`` (by default) and wait for its API.

    The test runs in ``tmp_path``, so the client commands find the token the server generated
    there, as they do from the directory a server was started in. Without ``--config`` it gets
    an empty one, so no dkron.yml of the machine is read."""
    monkeypatch.chdir(tmp_path)
    agents: list[Agent] = []
    empty = tmp_path / "empty.yml"
    empty.write_text("")

    def start(*extra: str, env: dict[str, str] | None = None, defaults: bool = True) -> Agent:
        args = [*extra, "--bind-addr", f"127.0.0.1:{free_port()}"]
        if "--config" not in extra:
            args += ["--config", str(empty)]
        if defaults:
            data = str(tmp_path / "dkron.data")
            args += ["--server", "--bootstrap-expect", "1", "--node-name", "n1", "--data-dir", data]
        agent = Agent(tmp_path, args, env or clean_env())
        agents.append(agent)
        agent.wait_healthy()
        return agent

    yield start
    for agent in agents:
        agent.kill()


# commands without an agent


def test_version() -> None:
    result = dkron_lab("version")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [f"dkron-lab {__version__}", "Dkron API v1 compatible"]


def test_keygen_prints_16_random_bytes() -> None:
    keys = [dkron_lab("keygen").stdout.strip() for _ in range(2)]
    assert [len(base64.b64decode(key, validate=True)) for key in keys] == [16, 16]
    assert keys[0] != keys[1]


def test_agent_help_lists_the_flags() -> None:
    result = dkron_lab("agent", "--help")
    assert result.returncode == 0
    for flag in (
        "--server",
        "--bootstrap-expect",
        "--node-name",
        "--data-dir",
        "--http-addr",
        "--bind-addr",
        "--join",
        "--retry-join",
        "--tag",
        "--encrypt",
        "--log-level",
        "--config",
        "--api-token",
        "--max-body-size",
        "--output-limit",
        "--history-retention",
        "--no-ui",
    ):
        assert flag in result.stdout
    assert "[default: dkron.data]" in result.stdout


def test_bad_value_exits_2_with_the_message(tmp_path: Path) -> None:
    (tmp_path / "dkron.yml").write_text("bootstrap-expect: abc\n")
    result = dkron_lab("agent", "--config", str(tmp_path / "dkron.yml"))
    assert result.returncode == 2
    assert "invalid bootstrap-expect 'abc' from file" in result.stderr
    assert "Traceback" not in result.stderr
    result = dkron_lab("agent", env=clean_env(DKRON_RETRY_INTERVAL="soon"))
    assert result.returncode == 2
    assert "invalid retry-interval 'soon' from env DKRON_RETRY_INTERVAL" in result.stderr


def test_client_commands_say_when_no_agent_runs() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    result = dkron_lab("jobs", "list", "--address", address)
    assert result.returncode == 1
    assert f"cannot reach dkron-lab at {address}: is the agent running?" in result.stderr
    assert "Traceback" not in result.stderr


# against a running agent

JOB_YAML = """\
name: hello
displayname: Say hello
schedule: "@every 1h"
executor: shell
executor_config:
  command: echo hello from dkron-lab
metadata:
  team: data
"""


def test_job_lifecycle_through_the_cli(start_agent: StartAgent, tmp_path: Path) -> None:
    agent = start_agent()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(JOB_YAML)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return dkron_lab(*args, "--address", agent.url, stdin=stdin)

    assert run("jobs", "list").stdout.startswith("no jobs yet")

    applied = run("jobs", "apply", "-f", str(job_file))
    assert (applied.returncode, applied.stdout) == (0, "created job hello\n"), applied.stderr

    listed = run("jobs", "list")
    header, row = listed.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "SCHEDULE", "STATUS", "HEALTH"]
    assert row.startswith("hello") and "@every 1h" in row and "untriggered" in row
    assert row.split()[4] == "ok"

    got = json.loads(run("jobs", "get", "hello").stdout)
    assert (got["name"], got["displayname"]) == ("hello", "Say hello")
    assert got["metadata"] == {"team": "data"}

    ran = run("jobs", "run", "hello", "--wait")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["job hello succeeded on n1", "hello from dkron-lab"]

    table = run("executions", "hello").stdout.splitlines()
    assert table[0].split() == ["ID", "STARTED", "FINISHED", "NODE", "SUCCESS", "OUTPUT"]
    assert len(table) == 2 and " n1 " in table[1] and " yes " in table[1]
    (execution,) = json.loads(run("executions", "hello", "--json").stdout)
    assert (execution["success"], execution["output"]) == (True, "hello from dkron-lab\n")

    check = {"name": "backup", "schedule": "@every 1h", "executor": "heartbeat"}
    assert run("jobs", "apply", "-f", "-", stdin=json.dumps(check)).returncode == 0
    assert run("jobs", "ping", "backup", "--start").stdout == "job backup: start noted\n"
    pinged = run("jobs", "ping", "backup", "-m", "-", stdin="42 files\n")
    assert pinged.stdout.startswith("job backup: ping recorded for "), pinged.stderr
    (ping,) = json.loads(run("executions", "backup", "--json").stdout)
    assert (ping["success"], ping["output"]) == (True, "42 files\n")
    not_a_check = run("jobs", "ping", "hello", "--fail")
    assert not_a_check.returncode == 1 and "is not a heartbeat check" in not_a_check.stderr
    assert run("jobs", "delete", "backup").returncode == 0

    assert run("jobs", "toggle", "hello").stdout == "job hello disabled\n"
    assert json.loads(run("jobs", "list", "--json").stdout)[0]["disabled"] is True

    # one job or a list, from stdin: the existing one is updated
    two = json.dumps([{**got, "displayname": "again"}, {**got, "name": "second"}])
    applied = run("jobs", "apply", "-f", "-", stdin=two)
    assert applied.stdout == "updated job hello\ncreated job second\n", applied.stderr

    assert run("jobs", "delete", "second").stdout == "deleted job second\n"
    missing = run("jobs", "get", "second")
    assert missing.returncode == 1
    assert "second" in missing.stderr and "Traceback" not in missing.stderr
    with Client(agent.url) as client, pytest.raises(JobNotFound, match="second"):
        client.job("second")

    assert agent.terminate() == 0


def test_agent_on_a_taken_port_exits_1(tmp_path: Path) -> None:
    (tmp_path / "dkron.yml").write_text(
        f"server: true\nbootstrap-expect: 1\ndata-dir: {tmp_path}\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = dkron_lab(
            "agent",
            "--config",
            str(tmp_path / "dkron.yml"),
            "--http-addr",
            f"127.0.0.1:{port}",
            "--bind-addr",
            f"127.0.0.1:{free_port()}",
        )
    assert result.returncode == 1
    assert "cannot run the agent" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_run_exits_1(start_agent: StartAgent) -> None:
    agent = start_agent()
    job = {
        "name": "broken",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "echo oops; exit 3", "shell": "true"},
    }
    assert (
        dkron_lab(
            "jobs", "apply", "-f", "-", "--address", agent.url, stdin=json.dumps(job)
        ).returncode
        == 0
    )
    ran = dkron_lab("jobs", "run", "broken", "--wait", "--address", agent.url)
    assert ran.returncode == 1
    assert ran.stdout.splitlines()[0] == "job broken failed on n1"


def test_raft_list_peers_remove_peer_and_leave(start_agent: StartAgent) -> None:
    agent = start_agent()
    listed = dkron_lab("raft", "list-peers", "--address", agent.url)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NODE", "ADDRESS", "STATE", "REACHABLE"]
    assert row.split()[0] == "n1" and row.split()[2:] == ["leader", "self"]
    missing = dkron_lab("raft", "remove-peer", "--peer-id", "127.0.0.1:1", "--address", agent.url)
    assert missing.returncode == 1 and "127.0.0.1:1" in missing.stderr
    left = dkron_lab("leave", "--address", agent.url)
    assert left.returncode == 0 and "leaving" in left.stdout
    assert agent.process.wait(timeout=20) == 0


def test_sigterm_lets_a_running_job_finish(start_agent: StartAgent) -> None:
    agent = start_agent()
    job = {
        "name": "slow",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "sleep 2; echo finished", "shell": "true"},
    }
    dkron_lab("jobs", "apply", "-f", "-", "--address", agent.url, stdin=json.dumps(job))
    assert dkron_lab("jobs", "run", "slow", "--address", agent.url).returncode == 0
    wait_until(lambda: httpx.get(f"{agent.url}/v1/busy").json() != [], "slow to be running")

    assert agent.terminate() == 0

    again = start_agent()
    (execution,) = json.loads(
        dkron_lab("executions", "slow", "--json", "--address", again.url).stdout
    )
    assert (execution["success"], execution["output"]) == (True, "finished\n")


def test_env_and_config_file_reach_the_running_agent(
    start_agent: StartAgent, tmp_path: Path
) -> None:
    (tmp_path / "dkron.yml").write_text(
        "server: true\nbootstrap-expect: 1\nnode-name: file-name\nregion: file-region\n"
        f"data-dir: {tmp_path / 'data'}\ntags:\n  team: from-file\n"
        "cronitor-endpoint: https://cronitor.example.com\n"
    )
    env = clean_env(
        DKRON_NODE_NAME="env-name",
        DKRON_TAG="team=from-env,tier=1",
        DKRON_DATACENTER="env-dc",
        DKRON_API_TOKEN="s3cret",
    )
    agent = start_agent(
        "--config", str(tmp_path / "dkron.yml"), "--datacenter", "flag-dc", env=env, defaults=False
    )

    response = httpx.get(f"{agent.url}/v1", headers={"Authorization": "Bearer s3cret"})
    assert response.headers["X-Whom"] == "env-name"
    info = response.json()
    assert info["agent"]["name"] == "env-name"
    tags = info["tags"]
    assert (tags["team"], tags["tier"], tags["region"], tags["dc"]) == (
        "from-env",
        "1",
        "file-region",
        "flag-dc",
    )
    assert "accepted but not yet supported (ignored): cronitor-endpoint" in agent.log

    denied = dkron_lab("jobs", "list", "--address", agent.url)
    assert denied.returncode == 1 and "missing or wrong API token" in denied.stderr
    allowed = dkron_lab(
        "jobs", "list", "--address", agent.url, env=clean_env(DKRON_API_TOKEN="s3cret")
    )
    assert allowed.returncode == 0, allowed.stderr


# the client against a server that answers like Dkron (plain-text or empty error bodies)


class DkronLike(BaseHTTPRequestHandler):
    answers = {
        "/v1/jobs/missing": (404, b""),
        "/v1/jobs/bad": (400, b"Job validation failed: name contains illegal character"),
        "/v1/jobs/locked": (401, b""),
        "/v1/leader": (500, b"null"),
        "/v1/isleader": (404, b'"I am a follower"'),
    }

    def do_GET(self) -> None:
        status, body = self.answers[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dkron_like() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DkronLike)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_client_maps_dkron_plain_errors_by_status(dkron_like: str) -> None:
    with Client(dkron_like) as client:
        with pytest.raises(NotFoundError, match="GET /v1/jobs/missing failed: 404 Not Found"):
            client.job("missing")
        with pytest.raises(ValidationError, match="^Job validation failed: name contains"):
            client.job("bad")
        with pytest.raises(Unauthorized):
            client.job("locked")
        with pytest.raises(DkronError, match="500 Internal Server Error") as caught:
            client.leader()
        assert type(caught.value) is DkronError
        with pytest.raises(NotFoundError, match="^I am a follower$"):
            client.request("GET", "/v1/isleader")


def test_client_reports_an_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(Unavailable, match="is the agent running"):
        client.health()
