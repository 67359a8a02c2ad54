"""A web page the user visits cannot use the node's API (issue 10, point 3).

Each request is sent as a browser sends it for a page of another site: a "simple" cross-origin
request (no preflight) carries an ``Origin`` header and at most a form or ``text/plain`` body;
through DNS rebinding the page's own name resolves to 127.0.0.1, so the ``Host`` header (and the
``Origin``) name the attacker's site. The node is real (Raft, DuckDB, the shell executor) behind
``serve``. Most tests use ``--no-auth`` (the drop-in mode for Dkron clients), where these guards
are all that stands between a page and a shell.

Each failed before this commit's fix: the API answered CORS ``*`` and checked neither
``Content-Type`` nor ``Host``, so the page's POST created and ran the job.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from dkron_lab.testing import auth_headers
from tests.security.conftest import Api, StartApi

EVIL = "http://evil.example"
DASH = "https://dash.example"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20, trust_env=False) as client:
        yield client


def admin(api: Api) -> dict[str, str]:
    return auth_headers(api.node.api_token)


def marker(api: Api) -> Path:
    """The file the attacker's job would create (beside the node's data dir)."""
    return api.node.config.data_dir.parent / "pwned"


def attack_job(api: Api) -> bytes:
    job = {
        "name": "pwn",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": f"touch {marker(api)}", "shell": "true"},
    }
    return json.dumps(job).encode()


def page_headers(origin: str, content_type: str = "text/plain;charset=UTF-8") -> dict[str, str]:
    """What a browser adds to ``fetch(url, {method: "POST", mode: "no-cors", body})``."""
    return {"Origin": origin, "Content-Type": content_type, "Referer": f"{origin}/cats.html"}


async def jobs(http: httpx.AsyncClient, api: Api) -> list[str]:
    response = await http.get(f"{api.url}/v1/jobs", headers=admin(api))
    assert response.status_code == 200, response.text
    return [job["name"] for job in response.json()]


async def test_a_cross_origin_text_post_creates_and_runs_nothing(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    for api in (await start_api(no_auth=True), await start_api()):
        refused = await http.post(
            f"{api.url}/v1/jobs?runoncreate=true",
            content=attack_job(api),
            headers=page_headers(EVIL),
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"] == "Forbidden"
        assert "--cors-origin" in refused.json()["error"]
        assert "Access-Control-Allow-Origin" not in refused.headers
        # Sandboxed frames and some redirects send "Origin: null": refused the same way.
        null = await http.post(
            f"{api.url}/v1/jobs?runoncreate=true",
            content=attack_job(api),
            headers=page_headers("null"),
        )
        assert null.status_code == 403
        assert await jobs(http, api) == []
    assert not marker(api).exists()


async def test_no_answer_carries_cors_headers_for_another_site(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api(no_auth=True)
    answers = [
        await http.get(f"{api.url}/health", headers={"Origin": EVIL}),
        await http.get(f"{api.url}/v1/jobs", headers={"Origin": EVIL}),
        await http.options(
            f"{api.url}/v1/jobs",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        ),
        await http.get(f"{api.url}/v1/jobs"),
    ]
    assert [a.status_code for a in answers] == [200, 403, 403, 200]
    for answer in answers:
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


async def test_cors_origin_allows_exactly_that_origin(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api(cors_origin=(DASH,))
    preflight = await http.options(
        f"{api.url}/v1/jobs",
        headers={
            "Origin": DASH,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == DASH
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    assert "Origin" in preflight.headers["Vary"]
    created = await http.post(
        f"{api.url}/v1/jobs",
        content=attack_job(api).replace(b"pwn", b"dash"),
        headers={**page_headers(DASH, "application/json"), **admin(api)},
    )
    assert created.status_code == 201, created.text
    assert created.headers["Access-Control-Allow-Origin"] == DASH
    for other in (EVIL, "http://dash.example", "https://dash.example.evil.com", "null"):
        refused = await http.get(f"{api.url}/v1/jobs", headers={"Origin": other, **admin(api)})
        assert refused.status_code == 403, other
        assert "Access-Control-Allow-Origin" not in refused.headers


async def test_a_page_of_the_node_itself_is_same_origin(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api()
    for origin in (api.url, f"http://localhost:{api.port}"):
        host = origin.removeprefix("http://")
        response = await http.get(
            f"{api.url}/v1/jobs", headers={"Origin": origin, "Host": host, **admin(api)}
        )
        assert response.status_code == 200, response.text
        assert "Access-Control-Allow-Origin" not in response.headers  # not needed, not sent


async def test_dns_rebinding_is_refused_by_the_host_check(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api(no_auth=True)
    rebound = f"attacker.example:{api.port}"
    # The page at http://attacker.example:<port> now resolves to 127.0.0.1: to the browser
    # its requests are same-origin, so it may send JSON and read the answers.
    same_origin = {"Host": rebound, "Origin": f"http://{rebound}"}
    read = await http.get(f"{api.url}/v1/jobs", headers={"Host": rebound})
    assert read.status_code == 403
    assert "--allowed-host attacker.example" in read.json()["error"]
    write = await http.post(
        f"{api.url}/v1/jobs?runoncreate=true",
        content=attack_job(api),
        headers={**same_origin, "Content-Type": "application/json"},
    )
    assert write.status_code == 403
    assert await jobs(http, api) == []
    assert not marker(api).exists()
    for host in ("127.0.0.1", f"localhost:{api.port}", f"[::1]:{api.port}", "LOCALHOST."):
        assert (await http.get(f"{api.url}/v1/jobs", headers={"Host": host})).status_code == 200
    assert (await http.get(f"{api.url}/health", headers={"Host": rebound})).status_code == 200


async def test_allowed_host_names_another_host(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api(no_auth=True, allowed_host=("dkron.internal",))
    named = await http.get(f"{api.url}/v1/jobs", headers={"Host": f"dkron.internal:{api.port}"})
    assert named.status_code == 200
    other = await http.get(f"{api.url}/v1/jobs", headers={"Host": "attacker.example"})
    assert other.status_code == 403
    anything = await start_api(no_auth=True, allowed_host=("*",))
    assert (
        await http.get(f"{anything.url}/v1/jobs", headers={"Host": "attacker.example"})
    ).status_code == 200


async def test_writes_must_be_json(start_api: StartApi, http: httpx.AsyncClient) -> None:
    api = await start_api()
    form = await http.post(
        f"{api.url}/v1/jobs",
        content=b"name=pwn&schedule=%40manually",
        headers={"Content-Type": "application/x-www-form-urlencoded", **admin(api)},
    )
    assert form.status_code == 415
    assert form.json()["type"] == "UnsupportedMediaType"
    assert "Content-Type: application/json" in form.json()["error"]
    untyped = await http.put(f"{api.url}/v1/jobs/pwn", content=attack_job(api), headers=admin(api))
    assert untyped.status_code == 415
    assert await jobs(http, api) == []
    typed = await http.post(
        f"{api.url}/v1/jobs",
        content=attack_job(api),
        headers={"Content-Type": "application/json; charset=utf-8", **admin(api)},
    )
    assert typed.status_code == 201
    # A write without a body needs no type: curl -X POST .../run, as Dkron's docs show.
    run = await http.post(f"{api.url}/v1/jobs/pwn/run", headers=admin(api))
    assert run.status_code == 202


async def test_restore_takes_a_form_only_with_a_header_a_page_cannot_send(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api(no_auth=True)
    backup = {"file": ("backup.json", b"[" + attack_job(api) + b"]", "application/json")}
    page = await http.post(f"{api.url}/v1/restore", files=backup)
    assert page.status_code == 415
    assert "X-Dkron-Token" in page.json()["error"]
    assert await jobs(http, api) == []
    scripted = await http.post(
        f"{api.url}/v1/restore", files=backup, headers={"X-Requested-With": "dkron-lab"}
    )
    assert scripted.status_code == 200, scripted.text
    assert await jobs(http, api) == ["pwn"]


async def test_restore_form_with_the_token_header(
    start_api: StartApi, http: httpx.AsyncClient
) -> None:
    api = await start_api()
    backup = {"file": ("backup.json", b"[" + attack_job(api) + b"]", "application/json")}
    # Basic credentials are the one kind a browser re-sends by itself: they do not count.
    basic = await http.post(f"{api.url}/v1/restore", files=backup, auth=("me", api.node.api_token))
    assert basic.status_code == 415
    bearer = await http.post(f"{api.url}/v1/restore", files=backup, headers=admin(api))
    assert bearer.status_code == 200, bearer.text
