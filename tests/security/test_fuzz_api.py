"""schemathesis over the served ``/v1/openapi.json`` (the short form, for CI): a real one-node
server (Raft, DuckDB, the real validation of every executor) takes ~30 generated requests per
operation with the admin token, and must never answer 5xx; afterwards every job it lists can be
fetched whole and its JSON decodes (nothing was half-written).

Left out, because a valid call makes every later answer a designed 503 and the run meaningless:
``POST /v1/leave`` (the node leaves its cluster), ``POST /v1/pause`` (new jobs refused until
unpaused) and the Raft membership changes ``POST /v1/raft/peers`` and
``DELETE /v1/raft/peers/{peer}``. Executors validate as usual but never run a generated command
or URL: this is a fuzz of the API, not of the host."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.core.result import Ok

from dkron_lab.plugins import Emit, ExecutionRequest, Executor, ExecutorResult
from dkron_lab.registry import PluginRegistry
from dkron_lab.testing import auth_headers, wait_for
from tests.security.conftest import serving

EXAMPLES = 30
SEED = "fuzz-seed"  # a job that exists, so operations on {job} get past the 404 too
WRITES = {("POST", "/v1/jobs"), ("PATCH", "/v1/jobs"), ("PUT", "/v1/jobs/{job}")}
RUNNABLE = {"schedule": "@every 1h", "executor": "shell", "executor_config": {"command": "true"}}
EXCLUDED = {
    ("POST", "/v1/leave"),
    ("POST", "/v1/pause"),
    ("POST", "/v1/raft/peers"),
    ("DELETE", "/v1/raft/peers/{peer}"),
}


class Inert:
    """Validates like ``real`` and succeeds without running anything."""

    def __init__(self, real: Executor) -> None:
        self._real = real

    def validate(self, config: Mapping[str, str]) -> None:
        validate = getattr(self._real, "validate", None)
        if validate is not None:
            validate(config)

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        return ExecutorResult(success=True, output=b"not run: fuzzing")


def inert_registry() -> PluginRegistry:
    registry = PluginRegistry()
    for name in registry.executor_names:
        registry.register_executor(name, Inert(registry.executor(name)))
    return registry


class Server:
    """A node and its API on a loop of their own thread, so synchronous clients can call it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self.token = ""
        self._started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-node")

    def __enter__(self) -> Server:
        self._thread.start()
        self._started.wait(timeout=60)
        if self._error is not None or not self._started.is_set():
            raise RuntimeError(f"the node did not start: {self._error!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        async with serving(self.data_dir, node_name="fuzz", registry=inert_registry()) as api:
            self.url, self.token, self._stop = api.url, api.node.api_token, asyncio.Event()
            self._started.set()
            await self._stop.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with Server(tmp_path / "node") as running:
        yield running


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~1 min alone; the CI machine may be shared
def test_no_5xx_and_nothing_half_written(server: Server) -> None:
    headers = auth_headers(server.token) | {"Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        wait_for(lambda: http.get("/v1/leader").status_code == 200, 30, "a leader")
        document = http.get("/v1/openapi.json").json()
        assert http.post("/v1/jobs", json={"name": SEED, **RUNNABLE}).status_code == 201
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the served schema has an invalid operation: {result}"
        operation = result.ok()
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        for strategy in strategies(operation):
            failures += fuzz(strategy, server.url, headers)
    assert not failures, "\n".join(failures[:20])
    assert_nothing_half_written(server.url, headers)


def strategies(operation: Any) -> Iterator[Any]:
    """Cases of ``operation`` as generated; on the seed job; and, for job writes, with a valid
    schedule and executor so that many are saved (and all their other fields random)."""
    yield operation.as_strategy()
    if "{job}" in operation.path:
        yield operation.as_strategy(path_parameters={"job": SEED})
    if (operation.method.upper(), operation.path) in WRITES:
        yield operation.as_strategy().map(runnable)


def runnable(case: Any) -> Any:
    if isinstance(case.body, dict):
        body = {key: value for key, value in case.body.items() if key != "parent_job"}
        name = "fuzz-" + hashlib.sha256(repr(body).encode()).hexdigest()[:12]
        if case.operation.path == "/v1/jobs/{job}":
            case.path_parameters = {"job": name}
        case.body = body | RUNNABLE | {"name": name}
    return case


def fuzz(strategy: Any, url: str, headers: dict[str, str]) -> list[str]:
    """Up to ``EXAMPLES`` calls drawn from ``strategy``; the 5xx answers, as curl commands."""
    failures: list[str] = []

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        if response.status_code >= 500:
            failures.append(
                f"{response.status_code} {case.as_curl_command()}: {response.text[:300]}"
            )

    call()
    return failures


def assert_nothing_half_written(url: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        listed = http.get("/v1/jobs")
        assert listed.status_code == 200, listed.text
        assert len(listed.json()) >= 10, "the fuzz should have saved many jobs"
        for job in listed.json():
            one = http.get("/v1/jobs/" + httpx.URL(path=job["name"]).raw_path.decode())
            assert one.status_code == 200, (job["name"], one.text)
            assert one.json()["name"] == job["name"]
            executions = http.get(
                f"/v1/jobs/{httpx.URL(path=job['name']).raw_path.decode()}/executions"
            )
            assert executions.status_code in (200, 404), executions.text
        assert http.get("/health").status_code == 200
