"""The notebook executor with real kernels (ipykernel's python3), and once through a real node."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nbformat
import psutil
import pytest

from dkron_lab.errors import InvalidJob
from dkron_lab.executors.notebook import (
    NotebookExecutor,
    inject_parameters,
    parse_config,
    render_output_path,
    render_parameters,
)
from dkron_lab.plugins import ExecutionRequest, Executor, ExecutorResult
from dkron_lab.registry import PluginRegistry
from dkron_lab.testing import FakeClock, auth_headers, server_config, wait_for

DATA = Path(__file__).parents[2] / "data" / "notebooks"
NOW = datetime(2026, 3, 27, 10, 5, 9, tzinfo=UTC)
EXECUTION_ID = "1774605909000000000-node-a"


class Chunks:
    """An ``emit`` that records what it was given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Kernel connection files go to the test's own folder; runners and kernels inherit it."""
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    return runtime


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    """A copy of the test notebooks, so that executed ones are written under ``tmp_path``."""
    folder = tmp_path / "notebooks"
    shutil.copytree(DATA, folder)
    return folder


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids a test learns about; any still alive at the end are killed."""
    found: list[int] = []
    yield found
    for pid in found:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def descendants() -> list[int]:
    return [child.pid for child in psutil.Process().children(recursive=True)]


async def run(
    config: Mapping[str, str], *, job: str = "nightly report", **kwargs: Any
) -> tuple[ExecutorResult, Chunks]:
    chunks = Chunks()
    executor = NotebookExecutor(clock=FakeClock(NOW), **kwargs)
    request = ExecutionRequest(job_name=job, execution_id=EXECUTION_ID, config=config)
    return await executor.execute(request, chunks), chunks


def read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)


def outputs_text(cell: Any) -> str:
    return "".join(output.get("text", "") for output in cell.outputs)


# -- the contract and the configuration --------------------------------------------------------


def test_is_an_executor_loaded_from_its_entry_point() -> None:
    executor = PluginRegistry().executor("notebook")
    assert isinstance(executor, NotebookExecutor)
    assert isinstance(executor, Executor)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({}, '"path" is required'),
        ({"path": "report.ipynb"}, '"path" must be absolute'),
        ({"path": "/srv/report.py"}, "must name an .ipynb file"),
        ({"path": "/srv/r.ipynb", "parameters": "{region: eu}"}, '"parameters" is not valid JSON'),
        ({"path": "/srv/r.ipynb", "parameters": "[1, 2]"}, "must be a JSON object"),
        ({"path": "/srv/r.ipynb", "parameters": '{"a b": 1}'}, "'a b' are not Python variable"),
        ({"path": "/srv/r.ipynb", "parameters": '{"class": 1}'}, "'class' are not Python"),
        ({"path": "/srv/r.ipynb", "parameters": '{"x": NaN}'}, "NaN has no Python literal"),
        ({"path": "/srv/r.ipynb", "timeout": "10"}, "invalid duration '10'"),
        ({"path": "/srv/r.ipynb", "timeout": "0s"}, '"timeout" must be positive'),
        ({"path": "/srv/r.ipynb", "kernel": "python 3"}, "is not a kernel name"),
        ({"path": "/srv/r.ipynb", "output_path": "out/{jobname}.ipynb"}, "placeholder {jobname}"),
        ({"path": "/srv/r.ipynb", "output_path": "out/{date:%Y}.ipynb"}, "no format spec"),
        ({"path": "/srv/r.ipynb", "output_path": "out/{job.ipynb"}, "literal braces"),
        ({"path": "/srv/r.ipynb", "params": "{}"}, "unknown key(s) 'params'"),
    ],
)
def test_validate_rejects(config: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidJob) as raised:
        NotebookExecutor().validate(config)
    assert fragment in str(raised.value)


def test_registry_rejects_a_bad_config_when_the_job_is_saved() -> None:
    with pytest.raises(InvalidJob, match='"parameters" is not valid JSON'):
        PluginRegistry().validate("notebook", {"path": "/a.ipynb", "parameters": "{"}, {})


def test_parse_config_full() -> None:
    config = parse_config(
        {
            "path": "/srv/nb/report.ipynb",
            "kernel": "python3",
            "parameters": '{"region": "eu", "days": 7}',
            "timeout": "1m30s",
            "output_path": "/srv/nb/data/{job}/{date}.ipynb",
            "cwd": "work",
        }
    )
    assert config.path == Path("/srv/nb/report.ipynb")
    assert (config.kernel, config.timeout, config.timeout_text) == ("python3", 90.0, "1m30s")
    assert config.parameters == {"region": "eu", "days": 7}
    assert (config.output_path, config.cwd) == ("/srv/nb/data/{job}/{date}.ipynb", "work")


def test_parameters_render_as_literals_that_cannot_run_code() -> None:
    parameters = json.loads(
        '{"name": "x\\"); import os #", "n": 3, "ratio": 0.5, "on": true, "none": null,'
        ' "nested": {"k": [1, "two"]}}'
    )
    source = render_parameters(parameters)
    assert source.splitlines()[0] == "# Parameters"
    assert "n = 3\n" in source and "on = True\n" in source and "none = None\n" in source
    namespace: dict[str, Any] = {}
    exec(source, {"__builtins__": {}}, namespace)
    assert namespace == parameters


def notebook_with(*tags: list[str]) -> Any:
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(f"c{i}", metadata={"tags": t}) for i, t in enumerate(tags)]
    )


def test_parameters_go_right_after_the_tagged_cell() -> None:
    nb = notebook_with([], ["parameters"], [])
    assert inject_parameters(nb, {"a": 1}) == 2
    assert [cell.source for cell in nb.cells] == ["c0", "c1", "# Parameters\na = 1\n", "c2"]
    assert nb.cells[2].metadata.tags == ["injected-parameters"]


def test_parameters_go_first_without_a_tagged_cell_and_replace_an_old_injection() -> None:
    nb = notebook_with([], ["injected-parameters"], [])
    assert inject_parameters(nb, {"a": "b"}) == 0
    assert [cell.source for cell in nb.cells] == ["# Parameters\na = 'b'\n", "c0", "c2"]


def test_output_path_template() -> None:
    notebook = Path("/srv/nb/daily report.ipynb")
    path = render_output_path(
        "runs/{notebook}/{job}-{date}T{time}-{execution_id}.ipynb",
        notebook=notebook,
        job="../etc/passwd",
        execution_id="17-node a",
        now=NOW,
    )
    assert path == Path("/srv/nb/runs/daily_report/_etc_passwd-2026-03-27T100509-17-node_a.ipynb")
    absolute = render_output_path(
        "/out/{job}.ipynb", notebook=notebook, job="j", execution_id="1", now=NOW
    )
    assert absolute == Path("/out/j.ipynb")


# -- real kernels ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_success_injects_parameters_and_ends_with_the_last_cell_output(
    notebooks: Path,
) -> None:
    config = {"path": str(notebooks / "report.ipynb"), "parameters": '{"region": "eu", "days": 7}'}
    result, chunks = await run(config)

    assert result.success, result
    assert result.error == ""
    summary = "{'region': 'eu', 'days': 7, 'job': 'nightly report'}"
    assert result.output.decode().rstrip("\n").endswith(summary)
    for number in range(1, 5):
        assert f"cell {number}/4 ok" in chunks.text  # streamed as the cells finished
    executed = notebooks / "dkron-lab-notebooks/nightly_report/2026-03-27T100509-"
    saved = read(Path(f"{executed}{EXECUTION_ID}.ipynb"))
    assert saved.cells[2].metadata.tags == ["injected-parameters"]
    assert saved.cells[2].source == "# Parameters\nregion = 'eu'\ndays = 7\n"
    assert outputs_text(saved.cells[3]) == f"report for eu over 7 days in {notebooks}\n"
    assert saved.metadata.dkron_lab.success is True
    assert read(notebooks / "report.ipynb").cells[1].outputs == []  # the input is untouched


@pytest.mark.slow
async def test_output_path_and_cwd_keys(notebooks: Path, tmp_path: Path) -> None:
    (notebooks / "work").mkdir()
    template = str(notebooks / "out/{notebook}-{job}.ipynb")
    config = {"path": str(notebooks / "report.ipynb"), "output_path": template, "cwd": "work"}
    result, _ = await run(config, job="daily")
    assert result.success, result
    saved = read(notebooks / "out/report-daily.ipynb")
    assert outputs_text(saved.cells[2]) == f"report for us over 1 days in {notebooks / 'work'}\n"


@pytest.mark.slow
async def test_a_raising_cell_fails_with_its_traceback_and_the_notebook_is_saved(
    notebooks: Path, tmp_path: Path
) -> None:
    output = notebooks / "raised.ipynb"
    config = {"path": str(notebooks / "raises.ipynb"), "output_path": str(output)}
    result, chunks = await run(config)

    assert not result.success
    assert result.error == "notebook: cell 2/3 raised ValueError: bad input: 42"
    text = result.output.decode()
    assert "cell 1/3 ok" in text and "cell 2/3 failed" in text and "cell 3/3" not in text
    assert "\x1b[" not in text  # ANSI colours stripped
    tail = text[text.index("ValueError: bad input: 42") :]
    assert "Traceback (most recent call last)" in tail
    assert 'raise ValueError(f"bad input: {value}")' in tail
    assert tail.rstrip().endswith("ValueError: bad input: 42")
    assert chunks.text == text
    saved = read(output)
    assert saved.cells[1].outputs[0].output_type == "error"
    assert saved.cells[2].outputs == []  # never ran
    assert saved.metadata.dkron_lab.error == result.error


@pytest.mark.slow
async def test_timeout_fails_stops_the_kernel_and_saves_what_ran(
    notebooks: Path, tmp_path: Path, pids: list[int], runtime_dir: Path
) -> None:
    output = notebooks / "hung.ipynb"
    config = {"path": str(notebooks / "hangs.ipynb"), "timeout": "10s", "output_path": str(output)}
    result, _ = await run(config)

    assert not result.success
    assert result.error == "notebook: timed out after 10s while running cell 2/2"
    saved = read(output)
    kernel = int(outputs_text(saved.cells[0]))
    pids.append(kernel)
    assert wait_for(lambda: gone(kernel), 10, "the kernel gone")
    assert descendants() == []
    assert runtime_dir.is_dir() and list(runtime_dir.iterdir()) == []  # connection file removed


@pytest.mark.slow
async def test_a_runner_that_does_not_stop_is_killed_with_its_kernel(
    notebooks: Path, pids: list[int]
) -> None:
    # SIGSTOP freezes the runner at its own timeout: only the kill after the grace ends it.
    chunks = Chunks()
    executor = NotebookExecutor(stop_grace=1.0)
    config = {"path": str(notebooks / "hangs.ipynb"), "timeout": "20s"}
    request = ExecutionRequest(job_name="j", execution_id=EXECUTION_ID, config=config)
    task = asyncio.ensure_future(executor.execute(request, chunks))
    await wait_until(lambda: "cell 1/2 ok" in chunks.text)
    pids.extend(descendants())
    runner = psutil.Process().children()[0]
    runner.suspend()
    result = await task

    assert not result.success
    assert result.error == (
        "notebook: timed out after 20s, and the runner did not stop within 1s more; "
        "it was killed with its kernel"
    )
    assert len(pids) >= 2 and wait_for(lambda: all(map(gone, pids)), 10, "runner and kernel gone")


@pytest.mark.slow
async def test_cancellation_kills_the_runner_and_the_kernel(
    notebooks: Path, pids: list[int]
) -> None:
    chunks = Chunks()
    request = ExecutionRequest(
        job_name="j", execution_id=EXECUTION_ID, config={"path": str(notebooks / "hangs.ipynb")}
    )
    task = asyncio.ensure_future(NotebookExecutor().execute(request, chunks))
    await wait_until(lambda: "cell 1/2 ok" in chunks.text)
    pids.extend(descendants())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pids) >= 2 and wait_for(lambda: all(map(gone, pids)), 10, "runner and kernel gone")


@pytest.mark.slow
async def test_a_kernel_that_dies_fails_the_run(notebooks: Path, tmp_path: Path) -> None:
    output = notebooks / "died.ipynb"
    config = {"path": str(notebooks / "dies.ipynb"), "output_path": str(output)}
    result, _ = await run(config)
    assert not result.success
    assert result.error == "notebook: the kernel died while running cell 2/2"
    assert outputs_text(read(output).cells[0]) == "alive\n"


async def wait_until(condition: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_missing_notebook_fails_with_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ipynb"
    result, _ = await run({"path": str(missing)})
    assert not result.success
    assert result.error == f'notebook: no notebook at {str(missing)!r} on this node; check "path"'


@pytest.mark.slow
async def test_unknown_kernel_fails_naming_the_installed_ones(notebooks: Path) -> None:
    result, _ = await run({"path": str(notebooks / "report.ipynb"), "kernel": "julia-1.10"})
    assert not result.success
    assert "no kernel 'julia-1.10' on this node (installed: " in result.error
    assert "python3" in result.error


@pytest.mark.slow
async def test_an_unwritable_output_path_fails_the_run(notebooks: Path) -> None:
    # Below a file, so that it cannot be created even by root.
    config = {"path": str(notebooks / "report.ipynb"), "output_path": "report.ipynb/out.ipynb"}
    result, _ = await run(config)
    assert not result.success
    assert result.error.startswith("notebook: cannot save the executed notebook to ")
    assert result.error.endswith("report.ipynb/out.ipynb': File exists")


async def test_invalid_config_at_run_time_is_a_failed_result() -> None:
    result, _ = await run({"path": "/srv/report.ipynb", "timeout": "soon"})
    assert (result.success, result.output) == (False, b"")
    assert "timeout" in result.error


# -- through a real node -----------------------------------------------------------------------


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A real one-node server (Raft, DuckDB, the executors from the registry) over HTTP."""
    from dkron_lab.api.app import serve
    from dkron_lab.node import Node

    config = server_config(tmp_path / "node")
    port = config.http_host_port[1]
    node = Node(config, clock=FakeClock(NOW))
    await node.start()
    server = await serve(node)
    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=90, headers=auth_headers(node.api_token)
    )
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()
        await server.close_all_connections()
        await node.stop(graceful=False)


@pytest.mark.slow
async def test_a_notebook_job_through_the_http_api(
    http: httpx.AsyncClient, notebooks: Path
) -> None:
    job = {
        "name": "report",
        "schedule": "@every 1h",
        "executor": "notebook",
        "executor_config": {
            "path": str(notebooks / "report.ipynb"),
            "parameters": json.dumps({"region": "apac", "days": 30}),
            "timeout": "90s",
        },
    }
    created = await http.post("/v1/jobs", json=job)
    assert created.status_code == 201, created.text
    bad = await http.post("/v1/jobs", json={**job, "executor_config": {"path": "report.ipynb"}})
    assert bad.status_code == 400 and '"path" must be absolute' in bad.json()["error"]

    ran = await http.post("/v1/jobs/report?wait=true")
    assert ran.status_code == 200, ran.text
    assert (ran.json()["success_count"], ran.json()["status"]) == (1, "success")
    (execution,) = (await http.get("/v1/jobs/report/executions")).json()
    assert execution["success"] is True
    assert "cell 4/4 ok" in execution["output"]
    assert execution["output"].rstrip().endswith("{'region': 'apac', 'days': 30, 'job': 'report'}")
