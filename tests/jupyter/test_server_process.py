"""A real ``jupyter server`` process with the extension enabled by the file the wheel installs:
the node starts with its data in the Jupyter data dir, serves the API behind the Jupyter token,
stops cleanly on SIGTERM, and finds its jobs again after a restart."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dkron_lab.testing import free_port, wait_for
from tests.harness import Child, Processes

pytestmark = pytest.mark.slow

ENABLE_FILE = Path(__file__).parents[2] / "jupyter-config/jupyter_server_config.d/dkron_lab.json"
TOKEN = "jupyter-test-token"


@pytest.fixture
def jupyter_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DKRON_", "JUPYTER_", "JPY_"))}
    dirs = {name: tmp_path / name.lower() for name in ("CONFIG", "DATA", "RUNTIME")}
    for name, path in dirs.items():
        path.mkdir()
        env[f"JUPYTER_{name}_DIR"] = str(path)
    (dirs["CONFIG"] / "jupyter_server_config.d").mkdir()
    shutil.copy(ENABLE_FILE, dirs["CONFIG"] / "jupyter_server_config.d")
    return env | {"JUPYTER_PLATFORM_DIRS": "1"}


@pytest.fixture
def processes() -> Iterator[Processes]:
    with Processes() as started:
        yield started


def start(processes: Processes, env: dict[str, str], tmp_path: Path, port: int) -> Child:
    args = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
        f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={tmp_path}",
        "--DkronLab.node_name=jnode", "--DkronLab.tags=role=notebook",
    ]  # fmt: skip
    return processes.start(args, env=env, stderr=tmp_path / "jupyter.log")


def api(port: int) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}/dkron",
        headers={"Authorization": f"token {TOKEN}"},
        timeout=30,
    )


def ready(http: httpx.Client) -> bool:
    try:
        return http.get("/v1/leader").status_code == 200
    except httpx.HTTPError:
        return False


def test_jupyter_runs_the_node_and_stops_it_on_sigterm(
    jupyter_env: dict[str, str], processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "jupyter.log"
    server = start(processes, jupyter_env, tmp_path, port)
    with api(port) as http:
        wait_for(lambda: ready(http), 90, f"the node in Jupyter to lead (see {log})")
        anonymous = httpx.get(f"http://127.0.0.1:{port}/dkron/v1/jobs", timeout=30)
        assert anonymous.status_code == 403
        (member,) = http.get("/v1/members").json()
        assert (member["Name"], member["Tags"]["role"]) == ("jnode", "notebook")
        job = {"name": "kept", "schedule": "@every 1h", "executor": "shell",
               "executor_config": {"command": "echo kept"}}  # fmt: skip
        assert http.post("/v1/jobs", json=job).status_code == 201
        run = http.post("/v1/jobs/kept/run", params={"wait": "true"})
        assert run.status_code == 200, run.text
    data_dir = Path(jupyter_env["JUPYTER_DATA_DIR"]) / "dkron-lab"
    assert (data_dir / "history.duckdb").exists()

    server.signal(signal.SIGTERM)
    wait_for(lambda: not server.alive, 60, "Jupyter to exit on SIGTERM")
    assert server.returncode == 0
    assert "dkron-lab: node jnode stopped" in log.read_text()

    again = start(processes, jupyter_env, tmp_path, port)
    with api(port) as http:
        wait_for(lambda: ready(http), 90, f"the node to start again (see {log})")
        (kept,) = http.get("/v1/jobs").json()
        assert (kept["name"], kept["success_count"]) == ("kept", 1)
        assert http.get("/v1/jobs/kept/executions").json()[0]["output"].strip() == "kept"
    again.terminate(timeout=60)
