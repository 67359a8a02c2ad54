"""binder/start and the notebooks, as a Binder visitor meets them: ``binder/start`` starts two
agents and then a real ``jupyter server`` whose dkron-lab extension runs the cluster's server;
the cluster forms with three nodes; then every notebook in ``notebooks/`` runs top to bottom in
a real kernel that finds the server as a kernel of that Jupyter would (``DKRON_LAB_URL``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nbformat
import pytest
from nbclient import NotebookClient

from dkron_lab.testing import free_port, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TOKEN = "binder-test-token"


@dataclass(frozen=True)
class Binder:
    url: str  # .../dkron
    root: Path
    log: Path


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DKRON", "JUPYTER"))}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "HOME": str(tmp / "home"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "DKRON_LAB_BINDER_DIR": str(tmp / "binder"),
        "DKRON_LAB_SERVER_RAFT": f"127.0.0.1:{free_port()}",
        "DKRON_LAB_AGENT_HTTP": f"{free_port()} {free_port()}",
    }
    return env


def _members(url: str) -> list[dict] | None:
    try:
        response = httpx.get(f"{url}/v1/members", headers={"Authorization": f"token {TOKEN}"})
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


@pytest.fixture(scope="module")
def binder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Binder]:
    tmp = tmp_path_factory.mktemp("binder")
    root = tmp / "work"
    shutil.copytree(REPO / "notebooks", root)
    port = free_port()
    log = tmp / "jupyter.log"
    command = [
        str(REPO / "binder" / "start"),
        sys.executable, "-m", "jupyter", "server", "--no-browser", "--allow-root",
        f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=_environment(tmp), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        yield Binder(f"http://127.0.0.1:{port}/dkron", root, log)
    finally:
        # The agents started by binder/start are in the same session: one signal for all.
        for signum, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, signum)
                process.wait(grace)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)


def test_binder_start_forms_a_three_node_cluster(binder: Binder) -> None:
    def formed() -> list[dict] | None:
        members = _members(binder.url) or []
        alive = [m for m in members if m["statusText"] == "alive"]
        return alive if len(alive) == 3 else None

    alive = wait_for(formed, 90.0, f"three live members (see {binder.log})")
    assert sorted(m["Name"] for m in alive) == ["agent-1", "agent-2", "notebook"]
    tags = {m["Name"]: m["Tags"].get("role") for m in alive}
    assert tags == {"agent-1": "agent", "agent-2": "agent", "notebook": "notebook"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs_top_to_bottom(
    binder: Binder, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_binder_start_forms_a_three_node_cluster(binder)
    # What the extension exports to the kernels it starts, with the Jupyter token.
    monkeypatch.setenv("DKRON_LAB_URL", binder.url)
    monkeypatch.setenv("DKRON_LAB_TOKEN", TOKEN)
    notebook = nbformat.read(binder.root / path.name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(binder.root)}},
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
