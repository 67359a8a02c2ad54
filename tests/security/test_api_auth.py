"""The API is closed by default and each token may do what its role allows (issue 10, point 4).

Driven as a caller would: a real ``dkron-lab agent`` process started with no security flag at
all, and real nodes (Raft, DuckDB, the shell executor) behind ``serve`` called over HTTP.

- a default start answers 401 without a token, and the 401 names nothing of the node; the
  generated token (``<data-dir>/api-token``, 0600, in a 0700 data dir) opens it, and the
  start-up log says where it is;
- Bearer, ``X-Dkron-Token`` and HTTP Basic whose password is the token are accepted;
- a viewer cannot write, an operator cannot delete; a bad tokens file stops the start;
- ``--no-auth`` opens the API (as Dkron OSS does);
- every change, allowed or refused, is a row of the ``audit`` table, readable with SQL.

Each failed before this commit's fix: the API answered everyone.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pty
import select
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.api import auth
from dkron_lab.api.handlers import RESOURCES
from dkron_lab.credentials import ConfigError
from dkron_lab.testing import auth_headers, free_port, wait_for
from tests.harness import Processes
from tests.security.conftest import StartApi

NODE_NAME = "victim-node-7"
ALICE = "alice-operator-token-0123456789"
GRAFANA = "grafana-viewer-token-0123456789"
TOKENS_FILE = f"""
tokens:
  - {{name: alice, role: operator, token: "{ALICE}"}}
  - {{name: grafana, role: viewer, token: "{GRAFANA}"}}
"""


@pytest.fixture
def start_api(start_api: StartApi) -> StartApi:
    """Under a name that no answer to a stranger may contain."""
    return functools.partial(start_api, node_name=NODE_NAME)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20, trust_env=False) as client:
        yield client


def job(name: str) -> dict[str, Any]:
    return {"name": name, "schedule": "@manually", "executor": "shell",
            "executor_config": {"command": "true"}}  # fmt: skip


# -- a default start, as a new user gets it ---------------------------------------------------


@pytest.fixture
def procs() -> Iterator[Processes]:
    with Processes() as started:
        yield started


def test_a_default_agent_is_closed_and_says_where_its_token_is(
    tmp_path: Path, procs: Processes
) -> None:
    data_dir, port, log = tmp_path / "dkron.data", free_port(), tmp_path / "agent.log"
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
    args = [sys.executable, "-m", "dkron_lab.cli", "agent", "--config", str(empty), "--server"]
    args += ["--bootstrap-expect", "1", "--node-name", NODE_NAME, "--data-dir", str(data_dir)]
    args += ["--http-addr", f"127.0.0.1:{port}", "--bind-addr", f"127.0.0.1:{free_port()}"]
    procs.start(args, env=env, cwd=tmp_path, stderr=log)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=5, trust_env=False) as http:
        wait_for(lambda: _answers(http, "/health"), 30, "the agent's /health")

        refused = http.get("/v1/jobs")
        assert refused.status_code == 401
        assert refused.json()["type"] == "Unauthorized"
        assert "Authorization: Bearer" in refused.text and "<data-dir>/api-token" in refused.text
        assert NODE_NAME not in refused.text and "X-Whom" not in refused.headers
        assert str(tmp_path) not in refused.text  # the real path is not told to strangers
        assert http.post("/v1/jobs", json=job("x")).status_code == 401

        token_file = data_dir / "api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        token = token_file.read_text().strip()
        assert token not in refused.text
        allowed = http.get("/v1/jobs", headers=auth_headers(token))
        assert (allowed.status_code, allowed.json()) == (200, [])

    text = wait_for(lambda: _logged(log, "curl -H"), 10, "the start-up link")
    assert str(token_file.absolute()) in text
    assert f"{url}/v1/jobs" in text
    assert token not in text  # the log says where the token is, not what it is
    ui = wait_for(lambda: _logged(log, "web UI:"), 10, "the UI's address")
    assert f"{url}/ui/ (it asks for the admin token" in ui and token not in ui


def test_on_a_terminal_the_ui_link_carries_the_token_once(tmp_path: Path, procs: Processes) -> None:
    """As Jupyter's start-up link: on the terminal that started the agent (not in a log file
    others may read) the UI's address carries the token, which the page keeps for the tab."""
    data_dir, port = tmp_path / "dkron.data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
    args = [sys.executable, "-m", "dkron_lab.cli", "agent", "--server", "--bootstrap-expect"]
    args += ["1", "--data-dir", str(data_dir), "--http-addr", f"127.0.0.1:{port}"]
    args += ["--bind-addr", f"127.0.0.1:{free_port()}"]
    terminal, other_end = pty.openpty()
    try:
        procs.start(args, env=env, cwd=tmp_path, stderr=os.ttyname(other_end))
        said = bytearray()

        def link() -> str | None:
            while select.select([terminal], [], [], 0.1)[0]:
                said.extend(os.read(terminal, 65536))
            text = said.decode(errors="replace")
            return text if "web UI:" in text else None

        text = wait_for(link, 30, "the UI's link on the terminal")
    finally:
        os.close(terminal)
        os.close(other_end)
    token = (data_dir / "api-token").read_text().strip()
    assert f"http://127.0.0.1:{port}/ui/#token={token}" in text


def _answers(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.TransportError:
        return False


def _logged(log: Path, words: str) -> str | None:
    text = log.read_text(errors="replace")
    return text if words in text else None


# -- credentials and roles --------------------------------------------------------------------


async def test_bearer_x_dkron_token_and_basic_with_the_token_as_password(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api()
    token = api.node.api_token
    url = f"{api.url}/v1/jobs"
    assert (await http.get(url, headers={"Authorization": f"Bearer {token}"})).status_code == 200
    assert (await http.get(url, headers={"X-Dkron-Token": token})).status_code == 200
    assert (await http.get(url, auth=("django-dkron", token))).status_code == 200
    for wrong in (
        {"Authorization": "Bearer " + token[:-1]},
        {"Authorization": f"Basic {token}"},  # not base64: no password in it
        {"X-Dkron-Token": ""},
    ):
        refused = await http.get(url, headers=wrong)
        assert refused.status_code == 401, wrong
        assert NODE_NAME not in refused.text
    assert (await http.get(url, auth=(token, "wrong"))).status_code == 401
    assert (await http.get(f"{api.url}/health")).status_code == 200  # probes need no token


def tokens_file(directory: Path) -> Path:
    """``TOKENS_FILE`` written as an operator would keep it (0600)."""
    tokens = directory / "tokens.yml"
    tokens.write_text(TOKENS_FILE)
    tokens.chmod(0o600)
    return tokens


async def test_a_viewer_cannot_write_and_an_operator_cannot_delete(
    start_api: StartApi, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    api = await start_api(api_tokens_file=tokens_file(tmp_path))
    admin, alice, grafana = (auth_headers(t) for t in (api.node.api_token, ALICE, GRAFANA))
    assert (await http.post(f"{api.url}/v1/jobs", json=job("j"), headers=admin)).status_code == 201

    # viewer: reads and SQL, nothing else
    assert (await http.get(f"{api.url}/v1/jobs", headers=grafana)).status_code == 200
    query = {"query": "SELECT count(*) AS n FROM executions"}
    assert (await http.post(f"{api.url}/v1/sql", json=query, headers=grafana)).status_code == 200
    preview = await http.get(f"{api.url}/v1/schedule?schedule=@daily", headers=grafana)
    assert preview.status_code == 200
    for method, path, needed in [
        ("POST", "/v1/jobs", "admin"),
        ("POST", "/v1/jobs/j/run", "operator"),
        ("POST", "/v1/pause", "operator"),
        ("DELETE", "/v1/jobs/j", "admin"),
    ]:
        body = job("j") if path == "/v1/jobs" else None
        refused = await http.request(method, f"{api.url}{path}", json=body, headers=grafana)
        assert refused.status_code == 403, (method, path)
        assert refused.json()["type"] == "Forbidden"
        assert f"needs the {needed} role" in refused.json()["error"]
        assert "grafana" in refused.json()["error"] and "viewer" in refused.json()["error"]

    # operator: also run, toggle, pause; not create, change or delete
    assert (await http.post(f"{api.url}/v1/jobs/j/run", headers=alice)).status_code == 202
    assert (await http.post(f"{api.url}/v1/jobs/j/toggle", headers=alice)).status_code == 200
    assert (await http.post(f"{api.url}/v1/pause", headers=alice)).status_code == 200
    assert (await http.post(f"{api.url}/v1/unpause", headers=alice)).status_code == 200
    deleted = await http.delete(f"{api.url}/v1/jobs/j", headers=alice)
    assert deleted.status_code == 403
    assert "needs the admin role" in deleted.json()["error"]
    changed = await http.put(f"{api.url}/v1/jobs/j", json=job("j"), headers=alice)
    assert changed.status_code == 403
    assert (await http.get(f"{api.url}/v1/jobs/j", headers=admin)).status_code == 200


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tokens: [", ["cannot read"]),
        ("- just a list", ["under 'tokens:'"]),
        ('tokens: [{name: a, token: "0123456789abcdefg"}]', ["exactly the keys"]),
        ('tokens: [{name: a, role: root, token: "0123456789abcdefg"}]', ["role must be one of"]),
        ("tokens: [{name: a, role: viewer, token: short}]", ["at least 16"]),
        (
            'tokens: [{name: a, role: viewer, token: "0123456789abcdefg"},'
            ' {name: a, role: admin, token: "0123456789abcdefgh"}]',
            ["names a token twice"],
        ),
    ],
)
async def test_a_bad_tokens_file_stops_the_start_with_what_is_wrong(
    start_api: StartApi, tmp_path: Path, text: str, words: list[str]
) -> None:
    tokens = tmp_path / "tokens.yml"
    tokens.write_text(text)
    with pytest.raises(ConfigError) as refused:
        await start_api(api_tokens_file=tokens)
    for word in (*words, str(tokens)):
        assert word in refused.value.message


async def test_a_missing_tokens_file_stops_the_start(start_api: StartApi, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the API tokens file"):
        await start_api(api_tokens_file=tmp_path / "nowhere.yml")


async def test_no_auth_opens_the_api(start_api: StartApi, http: httpx.AsyncClient) -> None:
    api = await start_api(no_auth=True)
    assert api.node.api_token == ""
    assert (await http.get(f"{api.url}/v1/jobs")).status_code == 200
    assert (await http.post(f"{api.url}/v1/jobs", json=job("open"))).status_code == 201


def test_every_route_and_method_needs_a_role() -> None:
    routes = {template for template, _ in RESOURCES}
    assert {route for _, route in auth.ROLE_NEEDED} <= routes, "ROLE_NEEDED names a route"
    for template, resource in RESOURCES:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if hasattr(resource, method.lower()):
                needed = auth.role_needed(method, template)
                assert needed is auth.Role.VIEWER or method != "GET"
    assert auth.role_needed("POST", "/v1/restore") is auth.Role.ADMIN
    assert auth.role_needed("DELETE", "/v1/jobs/{job}") is auth.Role.ADMIN
    assert auth.role_needed("POST", None) is auth.Role.ADMIN  # an unknown route


# -- the audit table --------------------------------------------------------------------------


async def test_every_change_is_an_audit_row_readable_with_sql(
    start_api: StartApi, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    api = await start_api(api_tokens_file=tokens_file(tmp_path))
    admin, alice = auth_headers(api.node.api_token), auth_headers(ALICE)
    await http.post(f"{api.url}/v1/jobs", json=job("audited"), headers=admin)
    await http.post(f"{api.url}/v1/jobs/audited/run", headers=alice)
    await http.delete(f"{api.url}/v1/jobs/audited", headers=alice)  # refused: 403
    await http.post(f"{api.url}/v1/jobs", json=job("sneaky"))  # no token: 401
    await http.get(f"{api.url}/v1/jobs", headers=admin)  # a read: not a change
    query = (
        "SELECT actor, role, remote, method, path, status FROM audit "
        "WHERE path <> '/v1/sql' ORDER BY answered_at"
    )

    async def audited() -> list[list[Any]] | None:
        response = await http.post(f"{api.url}/v1/sql", json={"query": query}, headers=alice)
        assert response.status_code == 200, response.text
        rows: list[list[Any]] = response.json()["rows"]
        return rows if len(rows) >= 4 else None

    rows = await _eventually(audited)
    assert rows == [
        ["admin", "admin", "127.0.0.1", "POST", "/v1/jobs", 201],
        ["alice", "operator", "127.0.0.1", "POST", "/v1/jobs/audited/run", 202],
        ["alice", "operator", "127.0.0.1", "DELETE", "/v1/jobs/audited", 403],
        ["anonymous", None, "127.0.0.1", "POST", "/v1/jobs", 401],
    ]
    counted = {"query": "SELECT count(*) FROM audit WHERE path = '/v1/sql' AND status = 200"}

    async def queries_audited() -> int | None:  # the queries are POSTs too
        response = await http.post(f"{api.url}/v1/sql", json=counted, headers=alice)
        found: int = response.json()["rows"][0][0]
        return found or None

    assert await _eventually(queries_audited) >= 1


async def test_no_auth_changes_are_audited_as_anonymous(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api(no_auth=True)
    await http.post(f"{api.url}/v1/jobs", json=job("open"))
    query = {"query": "SELECT actor, role, method, status FROM audit WHERE path = '/v1/jobs'"}

    async def audited() -> list[list[Any]] | None:
        rows: list[list[Any]] = (await http.post(f"{api.url}/v1/sql", json=query)).json()["rows"]
        return rows or None

    assert await _eventually(audited) == [["anonymous", "admin", "POST", 201]]


async def _eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll ``probe`` while the history writer commits (it batches): real time, not the clock's."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := await probe()) is None:
        assert loop.time() < deadline, "not recorded in time"
        await asyncio.sleep(0.05)
    return found
