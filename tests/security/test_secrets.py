"""Secrets are write-only (issue 10, point 8), driven as a user of the API would: a real node
(Raft, DuckDB, the shell executor) behind ``serve``, called over HTTP with its token.

- ``env`` values and an ``Authorization`` header come back as ``***`` from every read (the create
  answer, ``GET /v1/jobs``, ``GET /v1/jobs/<job>``, the SQL ``jobs`` view);
- a job read from the API and saved back keeps its secrets (the run uses the real value);
- output that prints a secret is recorded, and shown live in ``/v1/busy``, as ``***``;
- a job's process never sees the node's own token or cluster key (a node started with them in
  its environment);
- the files in the data dir are 0600, the dirs 0700.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import tornado.httpserver
import tornado.web

from dkron_lab.config import Config
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.notify import Notifier
from dkron_lab.testing import auth_headers, free_port, wait_for
from tests.harness import Processes, new_cluster_key
from tests.security.conftest import Api, StartApi, serving

SECRET = "s3cret-env-value"
BEARER = "tok-0123456789abcdef"


@pytest.fixture
async def api(start_api: StartApi) -> Api:
    return await start_api()


def shell_job(name: str, command: str, **config: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true", **config},
    }


def http_job(name: str) -> dict[str, Any]:
    headers = [f"Authorization: Bearer {BEARER}", "Accept: application/json"]
    return {
        "name": name,
        "schedule": "@manually",
        "executor": "http",
        "executor_config": {
            "method": "GET",
            "url": "http://127.0.0.1:9/hook",
            "headers": json.dumps(headers),
        },
    }


async def save(http: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/v1/jobs", json=job)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def run(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await http.post(f"/v1/jobs/{name}/run", params={"wait": "true"})
    assert response.status_code == 200, response.text
    found = (await http.get(f"/v1/jobs/{name}/executions")).json()
    assert found, f"no execution of {name}"
    execution: dict[str, Any] = found[0]
    return execution


async def sql(http: httpx.AsyncClient, query: str) -> str:
    response = await http.post("/v1/sql", json={"query": query})
    assert response.status_code == 200, response.text
    return response.text


def assert_masked(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} shown in {text[:400]!r}"
    assert "***" in text


async def test_env_values_and_authorization_headers_are_masked_in_every_read(api: Api) -> None:
    env = f"SECRET={SECRET},REGION=eu-west-1"
    created = await save(api.http, shell_job("envjob", "true", env=env))
    assert created["executor_config"]["env"] == "SECRET=***,REGION=***"
    created_http = await save(api.http, http_job("hook"))
    assert json.loads(created_http["executor_config"]["headers"]) == [
        "Authorization: ***",
        "Accept: application/json",
    ]
    reads = [
        (await api.http.get("/v1/jobs")).text,
        (await api.http.get("/v1/jobs/envjob")).text,
        (await api.http.get("/v1/jobs/hook")).text,
        await sql(api.http, "SELECT name, executor_config FROM jobs ORDER BY name"),
        await sql(api.http, "SELECT executor_config['env'], executor_config['headers'] FROM jobs"),
    ]
    for text in reads:
        assert_masked(text, SECRET, "eu-west-1", BEARER)


async def test_a_job_saved_back_with_the_mask_keeps_its_secret(api: Api, tmp_path: Path) -> None:
    out = tmp_path / "used.txt"
    command = f'printf %s "$SECRET" > {out}'
    await save(api.http, shell_job("saveback", command, env=f"SECRET={SECRET}"))
    read = (await api.http.get("/v1/jobs/saveback")).json()
    assert read["executor_config"]["env"] == "SECRET=***"
    read["displayname"] = "edited in a UI"
    for method in ("PUT", "POST"):
        path = "/v1/jobs/saveback" if method == "PUT" else "/v1/jobs"
        answer = await api.http.request(method, path, json=read)
        assert answer.status_code == 201, answer.text
        assert answer.json()["executor_config"]["env"] == "SECRET=***"
    await run(api.http, "saveback")
    assert out.read_text() == SECRET


async def test_a_new_job_sent_with_the_mask_is_refused(api: Api) -> None:
    answer = await api.http.post("/v1/jobs", json=shell_job("masked", "true", env="SECRET=***"))
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert "masked" in message and "give the real value" in message
    assert (await api.http.get("/v1/jobs/masked")).status_code == 404


async def test_recorded_output_masks_the_secrets_it_printed(api: Api) -> None:
    command = 'echo "the secret is $SECRET"; echo "$SECRET" >&2; exit 3'
    await save(api.http, shell_job("leaky", command, env=f"SECRET={SECRET}"))
    execution = await run(api.http, "leaky")
    assert execution["output"].splitlines()[:2] == ["the secret is ***", "***"]
    api.node.history.flush()
    assert_masked(await sql(api.http, "SELECT output FROM executions"), SECRET)


class _Hook(tornado.web.RequestHandler):
    def initialize(self, bodies: list[str]) -> None:
        self.bodies = bodies

    def post(self) -> None:
        self.bodies.append(self.request.body.decode())


async def test_webhooks_carry_the_masked_output(tmp_path: Path) -> None:
    bodies: list[str] = []
    port = free_port()
    receiver = tornado.httpserver.HTTPServer(
        tornado.web.Application([(r"/hook", _Hook, {"bodies": bodies})])
    )
    receiver.listen(port, "127.0.0.1")
    settings = {
        "webhook_endpoint": f"http://127.0.0.1:{port}/hook",
        "webhook_payload": "{{.JobName}}: {{.Output}}",
    }
    try:
        async with serving(tmp_path / "data", **settings) as api:
            await save(api.http, shell_job("hooked", 'echo "$SECRET"', env=f"SECRET={SECRET}"))
            await run(api.http, "hooked")

            async def delivered() -> bool:
                return bool(bodies)

            await eventually(delivered)
    finally:
        receiver.stop()
    assert bodies == ["hooked: ***\n"]


async def test_the_notifier_masks_output_an_older_node_recorded(tmp_path: Path) -> None:
    bodies: list[str] = []
    port = free_port()
    receiver = tornado.httpserver.HTTPServer(
        tornado.web.Application([(r"/hook", _Hook, {"bodies": bodies})])
    )
    receiver.listen(port, "127.0.0.1")
    config = Config(
        node_name="s1",
        webhook_endpoint=f"http://127.0.0.1:{port}/hook",
        webhook_payload="{{.Output}}",
    )
    notifier = Notifier.from_config(config)
    job = Job(name="old", executor="shell", executor_config={"env": f"SECRET={SECRET}"})
    now = datetime.now(UTC)
    execution = Execution(
        id="1-old",
        job_name="old",
        node_name="s2",
        group=1,
        started_at=now,
        finished_at=now,
        output=f"printed {SECRET}",
    )
    try:
        await notifier.finished(job, execution, previous_success=None)
        await notifier.flush()
    finally:
        await notifier.close()
        receiver.stop()
    assert bodies == ["printed ***"]


async def test_live_output_masks_a_secret_printed_in_two_pieces(api: Api) -> None:
    # Two writes with a pause between them: the node reads them as two chunks.
    command = "printf 's3cret-en'; sleep 0.3; printf 'v-value done\\n'; sleep 30"
    await save(api.http, shell_job("split", command, env=f"SECRET={SECRET}"))
    response = await api.http.post("/v1/jobs/split/run")
    assert response.status_code == 202, response.text
    seen: list[str] = []

    async def shown() -> bool:
        running = (await api.http.get("/v1/busy")).json()
        seen.extend(e["output"] for e in running if e["job_name"] == "split")
        return any("done" in output for output in seen)

    await eventually(shown)
    assert all("s3cret" not in output for output in seen), seen
    assert seen[-1] == "*** done\n"


async def test_data_dir_files_are_0600_and_dirs_0700(api: Api) -> None:
    await save(api.http, shell_job("filler", "echo hi", env=f"SECRET={SECRET}"))
    await run(api.http, "filler")
    api.node.history.flush()
    assert_private(api.node.config.data_dir)


async def test_files_an_older_version_left_readable_are_made_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serving(data_dir) as api:
        await save(api.http, shell_job("kept", "true", env=f"SECRET={SECRET}"))
    loose = [p for p in data_dir.rglob("*") if p.is_file()]
    for path in loose:
        path.chmod(0o644)  # as every version before issue 10 left them
    async with serving(data_dir) as api:
        assert (await api.http.get("/v1/jobs/kept")).status_code == 200
        assert_private(data_dir)


def assert_private(data_dir: Path) -> None:
    files = 0
    for folder, _, names in os.walk(data_dir):
        assert stat.S_IMODE(Path(folder).stat().st_mode) == 0o700, folder
        for name in names:
            mode = stat.S_IMODE((Path(folder) / name).stat().st_mode)
            assert mode & 0o077 == 0, f"{folder}/{name} is {mode:o}"
            files += 1
    assert files >= 3  # the journal, the history, the token at least


def test_a_job_never_sees_the_node_token_or_cluster_key(tmp_path: Path) -> None:
    token, key = "node-admin-token-42", new_cluster_key()
    port = free_port()
    data_dir = tmp_path / "node"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DKRON_", "JUPYTER_"))}
    env |= {
        "DKRON_API_TOKEN": token,
        "DKRON_ENCRYPT": key,
        "JUPYTER_TOKEN": "jupyter-token-42",
        "COPY_OF_THE_TOKEN": token,
    }
    args = [sys.executable, "-m", "dkron_lab.cli", "agent", "--server", "--bootstrap-expect", "1"]
    args += ["--node-name", "s1", "--data-dir", str(data_dir)]
    args += ["--http-addr", f"127.0.0.1:{port}", "--bind-addr", f"127.0.0.1:{free_port()}"]
    with (
        Processes() as procs,
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=auth_headers(token), timeout=20
        ) as http,
    ):
        procs.start(args, env=env, cwd=tmp_path, stderr=tmp_path / "node.log")
        wait_for(lambda: _leader(http), 30, "the node elected itself")
        job = shell_job("printenv", "env", env="MINE=job-own-value")
        assert http.post("/v1/jobs", json=job).status_code == 201
        ran = http.post("/v1/jobs/printenv/run", params={"wait": "true"})
        assert ran.status_code == 200, ran.text
        output = http.get("/v1/jobs/printenv/executions").json()[0]["output"]
        for leaked in ("DKRON_API_TOKEN", "DKRON_ENCRYPT", "JUPYTER_TOKEN", "COPY_OF_THE_TOKEN"):
            assert leaked not in output, output
        assert token not in output and key not in output
        assert "PATH=" in output and "MINE=***" in output  # the job's own env still applies
        assert_private(data_dir)


def _leader(http: httpx.Client) -> bool:
    try:
        return http.get("/v1/leader").status_code == 200
    except httpx.TransportError:
        return False


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
