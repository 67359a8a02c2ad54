"""The clients under the secure defaults, driven as a user (and an intruder) would.

* A real ``dkron-lab agent`` started with its default data dir (``./dkron.data``) in a temp
  directory generates its token; ``dkron-lab jobs list`` run from that directory finds it with
  nothing given, and so does the kernel-side ``Client()``; from another directory, without the
  token, both are refused and the CLI says where the token is and how to pass it.
* Over HTTPS with a certificate made here, the CLI trusts it only with ``--tls-ca``.
* Inside Jupyter, the server's ``Authorizer`` is asked with the action of the role the headless
  server would require: a user allowed only ``read`` (a viewer) lists and queries but cannot
  create a job; one allowed ``read`` and ``execute`` (an operator) runs and toggles but cannot
  delete.

On the code before the secure defaults, the agent answered everyone (the CLI from another
directory succeeded) and Jupyter asked ``write`` for every POST (an operator could not run,
a viewer could not query).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from jupyter_server.auth import Authorizer

# pytest-jupyter's fixtures (an in-process Jupyter server) for this module's tests only.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from dkron_lab.client import KERNEL_TOKEN_HEADER, Client
from dkron_lab.errors import Unauthorized
from dkron_lab.jupyter.extension import DkronLab
from dkron_lab.testing import free_port, wait_for
from tests.harness import Processes
from tests.jupyter.conftest import extension_of, wait_ready
from tests.jupyter.test_extension import fetch
from tests.security.certs import make_pki

CLI = str(Path(sys.executable).with_name("dkron-lab"))
JOB = {
    "name": "report",
    "schedule": "@every 1h",
    "executor": "shell",
    "executor_config": {"command": "echo report"},
}


def clean_env() -> dict[str, str]:
    """This environment without any ``DKRON_*`` (no token, address or data dir given)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}


@dataclass(frozen=True)
class Agent:
    url: str
    home: Path
    """The directory it was started in: its data dir is ``home/dkron.data``."""


def _healthy(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def start_agent(procs: Processes, home: Path, *flags: str, tls_ca: Path | None = None) -> Agent:
    """``dkron-lab agent --server`` with no token and no data dir given, started in ``home``;
    over HTTPS (its certificate signed by ``tls_ca``) when ``flags`` give ``--tls-cert``."""
    home.mkdir(exist_ok=True)
    port = free_port()
    args = [
        CLI, "agent", "--server", "--bootstrap-expect", "1", "--node-name", "n1",
        "--http-addr", f"127.0.0.1:{port}", "--bind-addr", f"127.0.0.1:{free_port()}",
        "--config", str(home / "empty.yml"), *flags,
    ]  # fmt: skip
    (home / "empty.yml").write_text("")
    child = procs.start(args, env=clean_env(), cwd=home, stderr=home / "agent.log")
    url = f"{'https' if '--tls-cert' in flags else 'http'}://127.0.0.1:{port}"
    token = home / "dkron.data" / "api-token"
    wait_for(lambda: token.exists() or not child.alive, 60, "the agent to write its token")
    verify: ssl.SSLContext | bool = True
    if tls_ca is not None:
        verify = ssl.create_default_context(cafile=str(tls_ca))
    wait_for(lambda: _healthy(url, verify) or not child.alive, 60, "the agent's /health")
    assert child.alive, (home / "agent.log").read_text()
    return Agent(url=url, home=home)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with Processes() as procs:
        yield start_agent(procs, tmp_path_factory.mktemp("server") / "home")


async def test_the_cli_finds_the_generated_token_from_the_server_s_directory(
    agent: Agent, tmp_path: Path
) -> None:
    listed = cli("jobs", "list", "--address", agent.url, cwd=agent.home)
    assert listed.returncode == 0, listed.stderr
    assert "no jobs yet" in listed.stdout

    refused = cli("jobs", "list", "--address", agent.url, cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "missing or wrong API token" in refused.stderr
    assert str(tmp_path / "dkron.data" / "api-token") in refused.stderr  # where it looked
    assert "--token" in refused.stderr and "--data-dir" in refused.stderr  # how to pass it

    data_dir = str(agent.home / "dkron.data")
    named = cli("jobs", "list", "--address", agent.url, "--data-dir", data_dir, cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    token = (agent.home / "dkron.data" / "api-token").read_text().strip()
    given = cli("jobs", "list", "--address", agent.url, "--token", token, cwd=tmp_path)
    assert given.returncode == 0, given.stderr


async def test_the_kernel_side_client_finds_it_too(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DKRON_LAB_URL", "DKRON_LAB_TOKEN", "JPY_PARENT_PID", "DKRON_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DKRON_ADDRESS", agent.url)
    monkeypatch.chdir(agent.home)
    with Client() as client:
        assert client.jobs() == []
    monkeypatch.chdir(tmp_path)
    with Client() as client, pytest.raises(Unauthorized, match="API token"):
        client.jobs()


async def test_https_with_a_private_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with Processes() as procs:
        home = tmp_path / "home"
        tls = start_agent(
            procs, home, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), tls_ca=pki.ca
        )
        untrusted = cli("jobs", "list", "--address", tls.url, cwd=home)
        assert untrusted.returncode == 1 and "--tls-ca" in untrusted.stderr
        trusted = cli("jobs", "list", "--address", tls.url, "--tls-ca", str(pki.ca), cwd=home)
        assert trusted.returncode == 0, trusted.stderr


# -- roles inside Jupyter ------------------------------------------------------------------------


class RoleAuthorizer(Authorizer):
    """Allows the actions of ``role`` only, the way a JupyterHub admin would grant them."""

    role: ClassVar[str] = "viewer"
    ACTIONS: ClassVar[dict[str, set[str]]] = {
        "viewer": {"read"},
        "operator": {"read", "execute"},
        "admin": {"read", "execute", "write"},
    }

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action in self.ACTIONS[RoleAuthorizer.role]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"dkron_lab": True},
            "authorizer_class": RoleAuthorizer,
        }
    }


@pytest.fixture
async def jp_asyncio_loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()


@pytest.fixture
async def jupyter(jp_serverapp: Any, jp_fetch: Any) -> DkronLab:
    """The extension's node, ready, with one job created by this server's own kernel."""
    await jp_serverapp.extension_manager.start_all_extensions()
    app = await wait_ready(extension_of(jp_serverapp))
    owner = {KERNEL_TOKEN_HEADER: app.kernel_secret}
    created = await fetch(jp_fetch, "v1", "jobs", method="POST", body=json.dumps(JOB),
                          headers=owner)  # fmt: skip
    assert created.code == 201, created.body
    return app


async def test_a_viewer_in_jupyter_lists_and_queries_but_cannot_create(
    jupyter: DkronLab, jp_fetch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RoleAuthorizer, "role", "viewer")
    listed = await fetch(jp_fetch, "v1", "jobs")
    assert listed.code == 200 and [j["name"] for j in json.loads(listed.body)] == ["report"]
    query = json.dumps({"query": "SELECT 1 AS one"})
    assert (await fetch(jp_fetch, "v1", "sql", method="POST", body=query)).code == 200
    other = json.dumps(JOB | {"name": "mine"})
    created = await fetch(jp_fetch, "v1", "jobs", method="POST", body=other)
    assert created.code == 403 and "admin" in json.loads(created.body)["error"]
    ran = await fetch(jp_fetch, "v1", "jobs", "report", "run", method="POST", body="")
    assert ran.code == 403


async def test_an_operator_in_jupyter_runs_but_cannot_delete(
    jupyter: DkronLab, jp_fetch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RoleAuthorizer, "role", "operator")
    ran = await fetch(jp_fetch, "v1", "jobs", "report", "run", method="POST", body="")
    assert ran.code in (200, 202), ran.body
    toggled = await fetch(jp_fetch, "v1", "jobs", "report", "toggle", method="POST", body="")
    assert toggled.code == 200 and json.loads(toggled.body)["disabled"] is True
    deleted = await fetch(jp_fetch, "v1", "jobs", "report", method="DELETE")
    assert deleted.code == 403
    assert (await fetch(jp_fetch, "v1", "jobs", "report")).code == 200  # still there


async def test_the_jupyter_node_s_data_dir_is_private_and_its_token_not_needed(
    jupyter: DkronLab, jp_fetch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = jupyter.node
    assert node is not None
    assert node.config.data_dir.stat().st_mode & 0o777 == 0o700
    for secret in ("api-token", "cluster-key"):
        assert (node.config.data_dir / secret).stat().st_mode & 0o777 == 0o600
    # A kernel's client sends the secret the extension exported, never the node's own token.
    monkeypatch.setattr(RoleAuthorizer, "role", "viewer")
    kernel = {KERNEL_TOKEN_HEADER: jupyter.kernel_secret}
    deleted = await fetch(jp_fetch, "v1", "jobs", "report", method="DELETE", headers=kernel)
    assert deleted.code == 200
    # The node's own admin token is no Jupyter credential: it opens nothing here.
    with_node_token = {"Authorization": f"Bearer {node.api_token}"}
    assert (await fetch(jp_fetch, "v1", "jobs", headers=with_node_token)).code == 403
