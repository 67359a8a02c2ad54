"""Helpers to test jobs and executor plugins against dkron-lab, and the pytest plugin that offers
them as fixtures. Installing dkron-lab registers the plugin (entry point ``pytest11``), so these
fixtures need no import:

- ``dkron_node``: a one-node dkron-lab server for the test, a real ``dkron-lab agent`` process on
  a free loopback port with its data in ``tmp_path`` (a ``DkronNode``: ``url``, ``token``,
  ``client()``), killed by pid afterwards;
- ``fake_clock``: a ``FakeClock``, for code that takes a clock.

To call directly: ``one_node`` (the context manager behind ``dkron_node``, to start a node after
``install_plugin``), ``FakeClock``, ``free_port``, ``wait_for``, ``install_plugin`` and
``auth_headers``. ::

    def test_my_job_runs(dkron_node):
        with dkron_node.client() as client:
            client.put_job({"name": "hello", "schedule": "@every 1s", "executor": "shell",
                            "executor_config": {"command": "echo hi"}})
            wait_for(lambda: client.executions("hello"), 30, "no execution of hello")

Loaded by every pytest run where dkron-lab is installed, it imports nothing heavy until a
fixture runs (``pytest -p no:dkron_lab`` turns it off). The multi-process harness of
dkron-lab's own tests (clusters, proxies, network namespaces) stays in the repository's
``tests/harness/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from dkron_lab.netaddr import free_port

if TYPE_CHECKING:
    from dkron_lab.client import Client
    from dkron_lab.config import Config

__all__ = [
    "DkronNode",
    "FakeClock",
    "auth_headers",
    "dkron_node",
    "fake_clock",
    "free_port",
    "install_plugin",
    "one_node",
    "server_config",
    "wait_for",
]

_T = TypeVar("_T")


class FakeClock:
    """A clock that moves only when told to; sleepers wake when it passes their instant."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime, *, exact: bool = True) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        await future

    def advance(self, delta: timedelta | float) -> None:
        """Move time forward and wake every sleeper whose instant has come."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self._now += delta
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())


def auth_headers(token: str) -> dict[str, str]:
    """The headers that authenticate with ``token`` (none for ``""``)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def server_config(
    data_dir: Path, *, node_name: str = "t1", host: str = "127.0.0.1", **settings: Any
) -> Config:
    """The ``Config`` of a server that bootstraps alone (for a ``Node`` in this process): its
    API on ``host`` and its Raft listener on loopback, each at a free port, its data in
    ``data_dir``; ``settings`` are more ``Config`` fields."""
    from dkron_lab.config import Config

    return Config(
        server=True,
        bootstrap_expect=1,
        node_name=node_name,
        data_dir=data_dir,
        http_addr=settings.pop("http_addr", None) or f"{host}:{free_port()}",
        bind_addr=f"127.0.0.1:{free_port()}",
        **settings,
    )


def wait_for(probe: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """``probe()`` once it returns something truthy; ``TimeoutError`` naming ``what`` if it
    does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def install_plugin(
    directory: Path,
    module: str,
    source: str,
    entry_points: Mapping[str, Mapping[str, str]],
    *,
    monkeypatch: Any = None,
) -> None:
    """Install a one-module package the way pip would (the module beside a ``.dist-info``
    holding its ``entry_points.txt``) into ``directory``, and put ``directory`` on
    ``PYTHONPATH`` so that nodes started afterwards load it. ``entry_points`` maps a group
    (``dkron_lab.executors``) to ``{name: "module:Target"}``; ``monkeypatch`` (pytest's)
    undoes the ``PYTHONPATH`` change after the test."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(source)
    dist_info = directory / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in names.items())
            for group, names in entry_points.items()
        )
    )
    path = os.pathsep.join([str(directory), *filter(None, [os.environ.get("PYTHONPATH")])])
    if monkeypatch is not None:
        monkeypatch.setenv("PYTHONPATH", path)
    else:
        os.environ["PYTHONPATH"] = path


# -- one node --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DkronNode:
    """A running one-node server, as ``one_node`` and the ``dkron_node`` fixture give it."""

    url: str
    """``http://127.0.0.1:<port>``, its HTTP API."""
    token: str
    """Its admin token (``auth_headers(token)``, or ``client()``, send it)."""
    pid: int
    data_dir: Path
    log: Path
    """Its stderr: where to look when it misbehaves."""

    def client(self) -> Client:
        """A ``dkron_lab.Client`` for this node; close it (or use it in a ``with``)."""
        from dkron_lab.client import Client

        return Client(self.url, self.token)


@contextlib.contextmanager
def one_node(
    directory: Path, *, token: str | None = None, args: Sequence[str] = (), timeout: float = 60.0
) -> Iterator[DkronNode]:
    """A ``dkron-lab agent --server --bootstrap-expect 1`` process, ready (it leads) when the
    block starts and killed by pid, with the jobs it runs, when it ends. Its data dir
    (``directory/data``) and log (``directory/node.log``) are in ``directory``; its API is on a
    free loopback port with ``token`` (default: a new random one); ``args`` are more ``agent``
    flags. Plugins that ``install_plugin`` put on ``PYTHONPATH`` before are loaded; the
    ``DKRON_*`` variables of this process are not passed on."""
    directory.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_urlsafe(16)
    port, log = free_port(), directory / "node.log"
    command = [sys.executable, "-m", "dkron_lab.cli", "agent", "--server"]
    command += ["--bootstrap-expect", "1", "--node-name", "node1", "--log-level", "warn"]
    command += ["--data-dir", str(directory / "data"), "--http-addr", f"127.0.0.1:{port}"]
    command += ["--bind-addr", f"127.0.0.1:{free_port()}", "--api-token", token, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
    with open(log, "ab") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=directory,
            env=env,
            start_new_session=True,  # its own process group, killed as one
        )
    try:
        node = DkronNode(
            url=f"http://127.0.0.1:{port}",
            token=token,
            pid=process.pid,
            data_dir=directory / "data",
            log=log,
        )
        wait_for(lambda: _leads(node, process), timeout, f"the node did not lead (see {log})")
        yield node
    finally:
        _kill(process)


def _leads(node: DkronNode, process: subprocess.Popen[bytes]) -> bool:
    import httpx

    if process.poll() is not None:
        raise RuntimeError(f"the node exited with code {process.returncode}: see {node.log}")
    try:
        response = httpx.get(
            f"{node.url}/v1/leader", headers=auth_headers(node.token), timeout=2, trust_env=False
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _kill(process: subprocess.Popen[bytes]) -> None:
    """kill -9 the node's process group, and the jobs it runs (each in a session of its own)."""
    import psutil

    try:
        jobs = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    except psutil.Error:
        jobs = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in jobs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(10)


# -- the fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def dkron_node(tmp_path: Path) -> Iterator[DkronNode]:
    """A one-node dkron-lab server for this test (``one_node`` in ``tmp_path/dkron``)."""
    with one_node(tmp_path / "dkron") as node:
        yield node


@pytest.fixture
def fake_clock() -> FakeClock:
    """A ``FakeClock`` at 2026-01-01 00:00 UTC, which moves only on ``advance``."""
    return FakeClock()
