"""One case per executor for the contract suite (``test_executor_contract.py``).

A case knows how to write, for its executor, each kind of job the contract needs: one that
succeeds, one that fails, one that writes a lot, one that runs until cancelled, one that prints
secrets, and configs its ``validate`` must refuse. The tests never look inside an executor:
they build a ``Job`` with the case, hand it to a real ``Runner`` over a real ``PluginRegistry``
(built-ins plus entry points, the third-party plugin among them), and judge what the runner
reports.

- ``shell``: commands run by ``/bin/sh``.
- ``http``: a tornado server on a free loopback port, started and stopped by the fixture.
- ``notebook``: small notebooks written to ``tmp_path``, run by the ``python3`` kernel. Every
  run starts a kernel (seconds), so its cases are marked ``slow``, and the suite runs it only
  where it has something of its own at stake.
- ``relay``: ``plugin/relay_executor.py``, installed as a third-party package with
  ``dkron_lab.testing.install_plugin``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import nbformat
import pytest
import tornado.httpserver
import tornado.web

from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.plugins import EXECUTOR_ENTRY_POINTS
from dkron_lab.registry import PluginRegistry
from dkron_lab.runner import Runner
from dkron_lab.testing import FakeClock, free_port, install_plugin

START = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
"""Where every runner's fake clock stands: the times of an execution come from it."""

PLUGIN_SOURCE = Path(__file__).parent / "plugin" / "relay_executor.py"

EXECUTORS = ("shell", "http", "notebook", "relay")
"""Every executor the contract runs against, by registry name."""

SLOW = frozenset({"notebook"})
"""Executors whose every run takes seconds."""


class Failure(NamedTuple):
    """A job that fails: ``shown`` is in its output before ``reason``, part of its error."""

    job: Job
    shown: str
    reason: str


class ExecutorCase:
    """The jobs of one executor that the contract runs. ``name`` is its registry name."""

    name = ""

    def job(self, config: Mapping[str, str], **fields: Any) -> Job:
        return Job(
            name=f"contract-{self.name}",
            schedule="@manually",
            executor=self.name,
            executor_config=dict(config),
            **fields,
        )

    def succeeding(self, marker: str) -> Job:
        """Prints ``marker`` (its output ends with it) and succeeds."""
        raise NotImplementedError

    def failing(self, marker: str) -> Failure:
        """Prints ``marker``, then fails."""
        raise NotImplementedError

    def writing(self, size: int, end: str) -> Job:
        """Writes ``size`` bytes, the last of them ``end``, and succeeds (a notebook writes
        more: its runner adds its progress lines)."""
        raise NotImplementedError

    def holding(self, marker: str) -> tuple[Job, str]:
        """Runs until cancelled; the second item shows in its live output once it runs."""
        raise NotImplementedError

    def leaking(self, secret: str, credential: str) -> Job:
        """Prints ``secret``, a secret of the job, and ``credential``, which the job does not
        declare (the node's own, given to the runner as ``hidden``); a job that runs in a
        process of its own prints its environment too."""
        raise NotImplementedError

    def bad_configs(self) -> list[tuple[dict[str, str], str]]:
        """Configs ``validate`` must refuse, each with a fragment of the message naming the
        key at fault."""
        raise NotImplementedError

    def stopped(self) -> bool:
        """After a cancel: the executor's own evidence that the work stopped (processes are
        checked for every executor by the suite)."""
        return True

    def ran(self) -> int | None:
        """How many runs reached the executor's side (``None``: not observable)."""
        return None


# -- shell ---------------------------------------------------------------------------------------


class ShellCase(ExecutorCase):
    name = "shell"

    def sh(self, script: str, **config: str) -> dict[str, str]:
        return {"command": script, "shell": "true", **config}

    def succeeding(self, marker: str) -> Job:
        return self.job(self.sh(f"echo {marker}"))

    def failing(self, marker: str) -> Failure:
        return Failure(self.job(self.sh(f"echo {marker}; exit 3")), marker, "exit status 3")

    def writing(self, size: int, end: str) -> Job:
        script = f"head -c {size - len(end)} /dev/zero | tr '\\0' x; printf {end}"
        return self.job(self.sh(script))

    def holding(self, marker: str) -> tuple[Job, str]:
        return self.job(self.sh(f"echo {marker}; sleep 600")), marker

    def leaking(self, secret: str, credential: str) -> Job:
        script = (
            'printf "deploy with %s\\n" "$DEPLOY_TOKEN"; '
            f'printf "node uses %s\\n" {shlex.quote(credential)}; env'
        )
        return self.job(self.sh(script, env=f"DEPLOY_TOKEN={secret}"))

    def bad_configs(self) -> list[tuple[dict[str, str], str]]:
        return [
            ({}, '"command" is required'),
            ({"command": "true", "timeout": "soon"}, '"timeout"'),
            ({"command": "echo 'unclosed"}, 'cannot split "command"'),
            ({"command": "true", "shell": "sure"}, '\'shell\' must be "true" or "false"'),
        ]


# -- http ----------------------------------------------------------------------------------------


class _Say(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_status(int(self.get_argument("status", "200")))
        self.write(self.get_argument("text"))


class _Bytes(tornado.web.RequestHandler):
    async def get(self) -> None:
        size, end = int(self.get_argument("size")), self.get_argument("end")
        sent = 0
        while sent < size:
            piece = min(16_384, size - sent)
            self.write(b"x" * piece)
            await self.flush()
            sent += piece
        self.write(end)


class _Echo(tornado.web.RequestHandler):
    """Sends back the Authorization header and the body, byte for byte."""

    def post(self) -> None:
        # tornado decodes header bytes as latin-1: encoding them back gives the bytes sent.
        authorization = self.request.headers.get("Authorization", "").encode("latin-1")
        self.write(b"Authorization: " + authorization + b"\n" + self.request.body)


class _Hold(tornado.web.RequestHandler):
    """Sends ``text`` at once, then nothing more until the client hangs up."""

    server: HttpServer

    def initialize(self, server: HttpServer) -> None:
        self.server = server

    async def get(self) -> None:
        self.hung_up = asyncio.Event()
        self.server.holding += 1
        self.write(self.get_argument("text"))
        await self.flush()
        await self.hung_up.wait()

    def on_connection_close(self) -> None:
        self.server.holding -= 1
        self.hung_up.set()


class HttpServer:
    """A tornado server on a free loopback port; ``holding`` counts open ``/hold`` requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.holding = 0
        self.served = 0
        app = tornado.web.Application(
            [
                (r"/say", _Say),
                (r"/bytes", _Bytes),
                (r"/echo", _Echo),
                (r"/hold", _Hold, {"server": self}),
            ],
            log_function=self._served,
        )
        self._server = tornado.httpserver.HTTPServer(app)

    def _served(self, handler: tornado.web.RequestHandler) -> None:
        self.served += 1

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._server.listen(self.port, "127.0.0.1")

    async def stop(self) -> None:
        self._server.stop()
        await self._server.close_all_connections()


class HttpCase(ExecutorCase):
    name = "http"

    def __init__(self, server: HttpServer) -> None:
        self.server = server

    def get(self, path: str, **config: str) -> dict[str, str]:
        return {"method": "GET", "url": self.server.url(path), **config}

    def succeeding(self, marker: str) -> Job:
        return self.job(self.get(f"/say?text={marker}", expectCode="200"))

    def failing(self, marker: str) -> Failure:
        config = self.get(f"/say?text={marker}&status=500", expectCode="200")
        return Failure(self.job(config), marker, "received response code 500 does not match")

    def writing(self, size: int, end: str) -> Job:
        return self.job(self.get(f"/bytes?size={size - len(end)}&end={end}"))

    def holding(self, marker: str) -> tuple[Job, str]:
        return self.job(self.get(f"/hold?text={marker}", timeout="0")), marker

    def leaking(self, secret: str, credential: str) -> Job:
        config = {
            "method": "POST",
            "url": self.server.url("/echo"),
            "headers": json.dumps([f"Authorization: Bearer {secret}"]),
            "body": f"node uses {credential}",
            "debug": "true",  # the config is printed first
        }
        return self.job(config)

    def bad_configs(self) -> list[tuple[dict[str, str], str]]:
        return [
            ({"method": "GET"}, '"url" is required'),
            (self.get("/say", timeout="2.5s"), '"timeout" is whole seconds'),
            (self.get("/say", headers='["no colon"]'), 'is not "Name: value"'),
            (self.get("/say", tlsNoVerifyPeer="sure"), "'tlsNoVerifyPeer' must be"),
        ]

    def stopped(self) -> bool:
        return self.server.holding == 0

    def ran(self) -> int:
        return self.server.served


# -- notebook ------------------------------------------------------------------------------------


class NotebookCase(ExecutorCase):
    name = "notebook"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written = 0

    def notebook(self, *cells: str, **config: str) -> Job:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        self.written += 1
        path = self.folder / f"contract-{self.written}.ipynb"
        nbformat.write(nb, path)
        return self.job({"path": str(path), **config})

    def succeeding(self, marker: str) -> Job:
        return self.notebook(f"print({marker!r})")

    def failing(self, marker: str) -> Failure:
        job = self.notebook(f"print({marker!r})", 'raise ValueError("the input is bad")')
        # On a failure the output is the progress lines and the traceback; what the cells
        # printed is in the executed notebook that was saved.
        return Failure(job, "cell 1/2 ok", "cell 2/2 raised ValueError: the input is bad")

    def writing(self, size: int, end: str) -> Job:
        return self.notebook(f"print('x' * {size} + {end!r})")

    def holding(self, marker: str) -> tuple[Job, str]:
        # The runner shows a cell's own output only at the end; its progress line is live.
        return self.notebook(f"print({marker!r})", "import time\ntime.sleep(600)"), "cell 1/2 ok"

    def leaking(self, secret: str, credential: str) -> Job:
        parameters = json.dumps({"api_token": secret, "greeting": credential})
        cell = (
            "import os\n"
            'print("deploy with", api_token, "node uses", greeting)\n'
            'print("\\n".join(f"{name}={value}" for name, value in os.environ.items()))'
        )
        return self.notebook(cell, parameters=parameters)

    def bad_configs(self) -> list[tuple[dict[str, str], str]]:
        path = str(self.folder / "report.ipynb")
        return [
            ({}, '"path" is required'),
            ({"path": path, "parameters": "[1, 2]"}, '"parameters" must be a JSON object'),
            ({"path": path, "colour": "red"}, "unknown key(s) 'colour'"),
        ]


# -- relay (third party) -------------------------------------------------------------------------


class RelayCase(ExecutorCase):
    name = "relay"

    def __init__(self, module: ModuleType) -> None:
        self.module = module  # imported afresh for each test: its records start empty

    def succeeding(self, marker: str) -> Job:
        return self.job({"text": marker})

    def failing(self, marker: str) -> Failure:
        job = self.job({"text": marker, "fail": "the upstream is down"})
        return Failure(job, marker, "the upstream is down")

    def writing(self, size: int, end: str) -> Job:
        return self.job({"text": "x" * (size - len(end)) + end})

    def holding(self, marker: str) -> tuple[Job, str]:
        return self.job({"text": marker, "hold": "true"}), marker

    def leaking(self, secret: str, credential: str) -> Job:
        text = f"deploy with {secret}; node uses {credential}"
        config = {"text": text, "upstream_ref": secret, "fail": f"refused {secret}"}
        return self.job(config, secret_keys=("upstream_ref",))

    def bad_configs(self) -> list[tuple[dict[str, str], str]]:
        return [
            ({}, '"text" is required'),
            ({"text": "hi", "repeat": "-2"}, '"repeat" must be a positive whole number'),
            ({"text": "hi", "hold": "maybe"}, '\'hold\' must be "true" or "false"'),
        ]

    def stopped(self) -> bool:
        return len(self.module.CANCELLED) > 0

    def ran(self) -> int:
        return len(self.module.RUNS)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def shell_case() -> ShellCase:
    return ShellCase()


@pytest.fixture
async def http_case() -> AsyncIterator[HttpCase]:
    server = HttpServer()
    server.start()
    yield HttpCase(server)
    await server.stop()


@pytest.fixture
def notebook_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NotebookCase:
    # Kernel connection files go to the test's own folder; the runner and kernel inherit it.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    return NotebookCase(folder)


@pytest.fixture
def relay_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RelayCase:
    site = tmp_path / "site"
    install_plugin(
        site,
        "relay_executor",
        PLUGIN_SOURCE.read_text(),
        {EXECUTOR_ENTRY_POINTS: {"relay": "relay_executor:RelayExecutor"}},
        monkeypatch=monkeypatch,
    )
    # install_plugin prepares PYTHONPATH for nodes started later; this process reads sys.path.
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "relay_executor", raising=False)
    (entry_point,) = importlib.metadata.entry_points(group=EXECUTOR_ENTRY_POINTS, name="relay")
    entry_point.load()  # imports the module, as the registry will
    return RelayCase(sys.modules["relay_executor"])


@pytest.fixture
def case(request: pytest.FixtureRequest) -> ExecutorCase:
    """The case of the executor named by the test's (indirect) parameter."""
    found: ExecutorCase = request.getfixturevalue(f"{request.param}_case")
    return found


@pytest.fixture
async def registry(case: ExecutorCase) -> AsyncIterator[PluginRegistry]:
    """Built-ins and entry points, as a node loads them (after the case installed its plugin)."""
    plugins = PluginRegistry()
    yield plugins
    await plugins.aclose()


class Harness:
    """A real ``Runner`` on a fake clock, keeping what it reports."""

    def __init__(
        self, registry: PluginRegistry, *, output_limit: int, hidden: frozenset[str]
    ) -> None:
        self.clock = FakeClock(START)
        self.reports: list[Execution] = []
        self.runner = Runner(
            node_name="contract-node",
            registry=registry,
            clock=self.clock,
            report=self.reports.append,
            output_limit=output_limit,
            hidden=hidden,
        )

    async def run(self, job: Job, *, timeout: float = 90.0) -> Execution:
        async with asyncio.timeout(timeout):
            return await self.runner.execute(job, group=1)


@pytest.fixture
def harness(registry: PluginRegistry) -> Callable[..., Harness]:
    def make(*, output_limit: int = 64_000, hidden: frozenset[str] = frozenset()) -> Harness:
        return Harness(registry, output_limit=output_limit, hidden=hidden)

    return make
