"""A real one-node server in this process (Raft, DuckDB, the built-in executors) behind
``serve``, for the tests that call its API over HTTP as a client would: ``serving`` as a
context manager, ``start_api`` as a fixture that starts any number of them.

The node runs on the real clock unless given one: these tests are about what the API lets a
caller do, not about when jobs fire."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tornado.httpserver

from dkron_lab.api.app import serve
from dkron_lab.clock import Clock
from dkron_lab.node import Node
from dkron_lab.registry import PluginRegistry
from dkron_lab.testing import auth_headers, server_config


@dataclass(frozen=True, kw_only=True)
class Api:
    node: Node
    url: str
    """``http(s)://127.0.0.1:<port>``, whatever address the API listens on."""
    port: int
    http: httpx.AsyncClient
    """Based at ``url``; sends the node's admin token."""


StartApi = Callable[..., Awaitable[Api]]
"""``await start_api(**options)``: an ``Api`` as ``serving(**options)`` starts it."""


@contextlib.asynccontextmanager
async def serving(
    data_dir: Path,
    *,
    node_name: str = "n1",
    host: str = "127.0.0.1",
    clock: Clock | None = None,
    registry: PluginRegistry | None = None,
    **settings: Any,
) -> AsyncIterator[Api]:
    """A server that bootstraps alone, its API on ``host`` at a free port; ``settings`` are
    more ``Config`` fields. Stopped (not gracefully) on exit, or when ``serve`` refuses."""
    config = server_config(data_dir, node_name=node_name, host=host, **settings)
    node = Node(config, clock=clock, registry=registry)
    async with contextlib.AsyncExitStack() as running:
        await node.start()
        running.push_async_callback(node.stop, graceful=False)
        running.push_async_callback(_close, await serve(node))
        port = config.http_host_port[1]
        url = f"{'https' if config.tls_cert else 'http'}://127.0.0.1:{port}"
        headers = auth_headers(node.api_token)
        http = httpx.AsyncClient(base_url=url, headers=headers, timeout=60, trust_env=False)
        async with http:
            yield Api(node=node, url=url, port=port, http=http)


async def _close(server: tornado.httpserver.HTTPServer) -> None:
    server.stop()
    await server.close_all_connections()


@pytest.fixture
async def start_api(tmp_path: Path) -> AsyncIterator[StartApi]:
    """Starts servers with data dirs ``tmp_path/data0``, ``data1``...; stops them after the
    test, the last started first."""
    numbers = itertools.count()
    async with contextlib.AsyncExitStack() as started:

        async def start(**options: Any) -> Api:
            options.setdefault("data_dir", tmp_path / f"data{next(numbers)}")
            return await started.enter_async_context(serving(**options))

        yield start
