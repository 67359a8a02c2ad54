"""The kernel side for real: an IPython kernel started by a real (in-process) Jupyter server
with the extension finds the API with no configuration, and the magics work in it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_server.serverapp import ServerApp

from dkron_lab.jupyter.extension import DkronLab

pytestmark = pytest.mark.slow


class Kernel:
    """Runs code in a kernel and returns what the cell showed."""

    def __init__(self, client: AsyncKernelClient) -> None:
        self.client = client

    async def run(self, code: str) -> dict[str, Any]:
        """``{"status", "result" (text/plain of the last expression), "stdout", "ename"}``."""
        shown: dict[str, Any] = {"result": None, "stdout": "", "stderr": ""}

        def collect(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "execute_result":
                shown["result"] = content["data"].get("text/plain")
            elif kind == "stream":
                shown[content["name"]] += content["text"]

        reply = await self.client.execute_interactive(code, output_hook=collect, timeout=90)
        content = reply["content"]
        return shown | {
            "status": content["status"],
            "ename": content.get("ename"),
            "evalue": content.get("evalue"),
        }

    async def value(self, expression: str) -> Any:
        """The value of a JSON-able expression, evaluated in the kernel."""
        shown = await self.run(f"import json as _json; print(_json.dumps({expression}))")
        assert shown["status"] == "ok", shown
        return json.loads(shown["stdout"])


@pytest.fixture
async def kernel(dkron_app: DkronLab, jp_serverapp: ServerApp) -> AsyncIterator[Kernel]:
    manager = jp_serverapp.kernel_manager
    kernel_id = await manager.start_kernel(kernel_name="python3")
    client = manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=90)
        yield Kernel(client)
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(kernel_id, now=True)


async def test_magics_in_a_kernel_started_by_jupyter(kernel: Kernel, dkron_app: DkronLab) -> None:
    loaded = await kernel.run("%load_ext dkron_lab")
    assert loaded["status"] == "ok", loaded
    assert (await kernel.run("import dkron_lab"))["status"] == "ok"
    assert await kernel.value("dkron_lab.Client().connection.source") == "DKRON_LAB_URL"

    created = await kernel.run('%%dkron job hello --schedule "@every 1h"\necho hello from a kernel')
    assert created["status"] == "ok", created
    assert "hello" in created["result"]
    assert dkron_app.node is not None
    assert dkron_app.node.jobs.get_job("hello").job.executor == "shell"

    assert (await kernel.run("x = %dkron jobs"))["status"] == "ok"
    assert await kernel.value("[j['name'] for j in x]") == ["hello"]

    assert (await kernel.run("run = %dkron run hello --wait"))["status"] == "ok"
    assert await kernel.value("[e['success'] for e in run]") == [True]
    logs = await kernel.run("%dkron logs hello")
    assert "hello from a kernel" in logs["result"]

    bad = await kernel.run("%dkron run")
    assert (bad["status"], bad["ename"]) == ("error", "UsageError")
    assert "required: name" in bad["evalue"]
    missing = await kernel.run("%dkron show nope")
    assert (missing["status"], missing["ename"]) == ("error", "JobNotFound")


async def test_the_runtime_file_is_the_fallback(kernel: Kernel) -> None:
    """Without the exported variables, the kernel reads its server's jpserver-<pid>.json and
    authenticates with the Jupyter token."""
    code = (
        "import os, dkron_lab\n"
        "os.environ.pop('DKRON_LAB_URL'); os.environ.pop('DKRON_LAB_TOKEN')\n"
        "c = dkron_lab.Client()\n"
        "print(c.connection.source, c.jobs())"
    )
    shown = await kernel.run(code)
    assert shown["status"] == "ok", shown
    source, jobs = shown["stdout"].split(" ", 1)
    assert source.endswith(".json") and "jpserver-" in source
    assert jobs.strip() == "[]"


async def test_sql_cell_returns_a_dataframe(kernel: Kernel, jp_fetch: Any) -> None:
    from tornado.httpclient import HTTPClientError

    try:
        await jp_fetch("dkron", "v1", "sql", method="POST", body=json.dumps({"query": "SELECT 1"}))
    except HTTPClientError as error:
        if error.code == 404:
            pytest.skip("this server has no POST /v1/sql yet (404)")
    await kernel.run("%load_ext dkron_lab")
    shown = await kernel.run("%%dkron sql counts <<\nSELECT 42 AS answer")
    assert shown["status"] == "ok", shown
    assert await kernel.value("[type(counts).__name__, int(counts['answer'][0])]") == [
        "DataFrame",
        42,
    ]
    arrow = await kernel.run("%%dkron sql --out arrow\nSELECT 1 AS one")
    assert "pyarrow.Table" in arrow["result"]
