"""Fixtures for the Jupyter side: a real in-process Jupyter server with the dkron-lab extension
(pytest-jupyter) and a real headless ``dkron-lab agent`` subprocess.

pytest-jupyter's ``jp_environ`` points every Jupyter path (config, data, runtime) at a temp dir,
so the installed auto-enable file is not seen: the extension is enabled by ``jp_server_config``,
and its node keeps its data in the temp Jupyter data dir. ``jp_serverapp`` never runs the
server's start hooks, so ``dkron_app`` calls them as ``ServerApp._post_start`` would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.serverapp import ServerApp

# pytest-jupyter's fixtures and hooks for this folder only: as ``pytest_plugins`` they would
# have to be declared at the root, and its autouse fixtures (an event loop and a ServerApp
# cleanup around every test) would then wrap the whole suite.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from dkron_lab.jupyter.extension import DkronLab
from tests.harness import Cluster

READY_TIMEOUT = 60.0
HEADLESS_TOKEN = "headless-test-token"
"""The admin token of the ``headless`` server."""


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"dkron_lab": True}}}


@pytest.fixture
async def jp_asyncio_loop() -> asyncio.AbstractEventLoop:
    """pytest-asyncio's loop for pytest-jupyter too: the tests (run by pytest-asyncio) and the
    in-process server must share one loop, or requests to the server never get an answer."""
    return asyncio.get_running_loop()


def extension_of(serverapp: ServerApp) -> DkronLab:
    app = serverapp.extension_manager.extension_points["dkron_lab"].app
    assert isinstance(app, DkronLab)
    return app


async def wait_ready(app: DkronLab, timeout: float = READY_TIMEOUT) -> DkronLab:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not app.ready:
        assert app.failure is None, f"the node did not start: {app.failure}"
        assert loop.time() < deadline, "the dkron-lab node did not become ready"
        await asyncio.sleep(0.02)
    return app


@pytest.fixture
def dkron_unstarted(jp_serverapp: ServerApp, jp_fetch: Any) -> DkronLab:
    """The extension as ``initialize`` left it: node built, start hook not run yet."""
    return extension_of(jp_serverapp)


@pytest.fixture
async def dkron_app(jp_serverapp: ServerApp, jp_fetch: Any) -> DkronLab:
    """The extension, started (env exported, node ready), in a server that listens."""
    await jp_serverapp.extension_manager.start_all_extensions()
    return await wait_ready(extension_of(jp_serverapp))


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a one-node ``dkron-lab agent --server`` subprocess (killed by pid after)
    whose token is ``HEADLESS_TOKEN``."""
    base: Path = tmp_path_factory.mktemp("headless")
    with Cluster(base, servers=1, api_token=HEADLESS_TOKEN) as cluster:
        yield cluster.url("s1")
