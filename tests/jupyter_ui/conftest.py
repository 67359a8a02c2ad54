"""Fixtures for the dashboard's tests: a real headless dkron-lab server in a subprocess, and a
comm that records what the widget sends to the front end (no kernel, no browser)."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import comm
import pytest
from comm.base_comm import BaseComm

from dkron_lab.client import Client
from dkron_lab.errors import DkronError
from dkron_lab.testing import free_port, wait_for
from tests.harness import Child, Processes

CLI = str(Path(sys.executable).with_name("dkron-lab"))


def lab_env(home: Path) -> dict[str, str]:
    """This process's environment for a JupyterLab of its own: every Jupyter directory under
    ``home``, and no ``DKRON_*`` or ``JUPYTER*`` variable of the caller's."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("DKRON_", "JUPYTER"))}
    return kept | {
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }


@dataclass
class Server:
    """A headless one-node dkron-lab server started by the test."""

    url: str
    token: str
    child: Child
    log: Path


def _healthy(client: Client) -> bool:
    try:
        return client.health().get("status") == "healthy" and bool(client.leader())
    except DkronError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``dkron-lab agent --server --bootstrap-expect 1`` on loopback ports, stopped by pid."""
    config = tmp_path / "empty.yml"
    config.write_text("")
    http = f"127.0.0.1:{free_port()}"
    args = [
        CLI, "agent", "--server", "--bootstrap-expect", "1", "--node-name", "t",
        "--config", str(config), "--data-dir", str(tmp_path / "data"),
        "--bind-addr", f"127.0.0.1:{free_port()}", "--http-addr", http,
    ]  # fmt: skip
    token = secrets.token_urlsafe(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
    env["DKRON_API_TOKEN"] = token
    log = tmp_path / "server.log"
    with Processes() as procs, Client(f"http://{http}", token, timeout=5) as probe:
        child = procs.start(args, env=env, stderr=log)
        wait_for(lambda: _healthy(probe) or not child.alive, 60, "dkron-lab answers /health")
        assert child.alive, f"dkron-lab exited:\n{log.read_text()}"
        yield Server(url=f"http://{http}", token=token, child=child, log=log)
        child.terminate()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, server.token, timeout=30) as made:
        yield made


class RecordingComm(BaseComm):
    """A comm whose messages to the front end are kept in ``messages`` instead of sent."""

    def __init__(self, **kwargs: Any) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        super().__init__(**kwargs)

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, **keys: Any
    ) -> None:
        self.messages.append((msg_type, data or {}))


@pytest.fixture(autouse=True)
def recording_comms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widgets created in these tests get a ``RecordingComm``."""
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
