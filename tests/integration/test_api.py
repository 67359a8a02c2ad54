"""The REST API over real HTTP: a real one-node server (Raft, DuckDB, shell executor) behind
``serve``, called with httpx. Time is the only fake: the node runs on a ``FakeClock``, so nothing
fires on its own and ``next``/schedule previews are deterministic."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import tornado.httpserver

from dkron_lab import codec
from dkron_lab.api.app import serve
from dkron_lab.model.job import Job
from dkron_lab.node import Node
from dkron_lab.testing import FakeClock, auth_headers, free_port, server_config

NOW = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)
TOKEN = "s3cret-token"
JSON = {"Content-Type": "application/json"}


@dataclass
class Api:
    node: Node
    client: httpx.AsyncClient
    """Sends the node's admin token."""
    port: int
    bare: httpx.AsyncClient
    """Sends no token."""


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(tmp_path: Path) -> AsyncIterator[StartApi]:
    started: list[tuple[Node, tornado.httpserver.HTTPServer, list[httpx.AsyncClient]]] = []

    async def start(**overrides: Any) -> Api:
        overrides.setdefault("api_token", TOKEN)
        config = server_config(tmp_path / f"node{len(started)}", **overrides)
        port = config.http_host_port[1]
        node = Node(config, clock=FakeClock(NOW))
        await node.start()
        server = await serve(node)
        url = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=url, timeout=20, headers=auth_headers(node.api_token))
        bare = httpx.AsyncClient(base_url=url, timeout=20)
        started.append((node, server, [client, bare]))
        return Api(node=node, client=client, port=port, bare=bare)

    yield start
    for node, server, clients in reversed(started):
        for client in clients:
            await client.aclose()
        server.stop()
        await server.close_all_connections()
        await node.stop(graceful=False)


@pytest.fixture
async def api(start_api: StartApi) -> Api:
    return await start_api()


@pytest.fixture
async def http(api: Api) -> httpx.AsyncClient:
    return api.client


def job(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": "echo hello"},
        **fields,
    }


async def create(http: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    response = await http.post("/v1/jobs", json=job(name, **fields))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy: waits for real subprocesses and the
    history writer, never for the clock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def executions(http: httpx.AsyncClient, name: str, count: int, **params: Any) -> Any:
    async def listed() -> Any:
        response = await http.get(f"/v1/jobs/{name}/executions", params=params)
        assert response.status_code == 200, response.text
        return response if len(response.json()) >= count else None

    return await eventually(listed)


async def job_list(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get("/v1/jobs")
    assert response.status_code == 200
    body: list[dict[str, Any]] = response.json()
    return body


def assert_error(response: httpx.Response, status: int, type_: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == type_, body
    assert set(body) == {"error", "type"}
    for word in words:
        assert word in body["error"], body
    if status == 401:  # a caller without a token learns nothing of the node
        assert "X-Whom" not in response.headers
        assert "t1" not in response.text
    else:
        assert response.headers["X-Whom"] == "t1"


WRITABLE = (
    "name",
    "displayname",
    "timezone",
    "schedule",
    "owner",
    "owner_email",
    "disabled",
    "tags",
    "metadata",
    "retries",
    "parent_job",
    "processors",
    "concurrency",
    "executor",
    "executor_config",
    "ephemeral",
    "starts_at",
    "expires_at",
)


# -- node endpoints ---------------------------------------------------------------------------


async def test_health_status_members_leader(http: httpx.AsyncClient) -> None:
    health = await http.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "healthy"})
    assert health.headers["X-Whom"] == "t1"
    for path in ("/v1", "/v1/"):
        status = await http.get(path)
        assert status.status_code == 200
        assert status.json()["agent"]["name"] == "t1"
        assert status.json()["tags"]["server"] == "true"
    members = await http.get("/v1/members")
    assert members.status_code == 200
    assert [m["Name"] for m in members.json()] == ["t1"]
    assert members.headers["X-Total-Count"] == "1"
    again = await http.get("/v1/members")
    assert again.json()[0]["id"] == members.json()[0]["id"]  # one id per member, kept
    leader = await http.get("/v1/leader")
    assert (leader.status_code, leader.json()["Name"]) == (200, "t1")
    is_leader = await http.get("/v1/isleader")
    assert (is_leader.status_code, is_leader.json()) == (200, "I am a leader")


async def test_leave_answers_members_and_calls_the_node(api: Api) -> None:
    left = asyncio.Event()
    api.node.on_leave = left.set
    response = await api.client.post("/v1/leave")
    assert response.status_code == 200
    assert [m["Name"] for m in response.json()] == ["t1"]
    assert left.is_set()


async def test_raft_peers_and_removing_an_unknown_one(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/raft/peers")
    assert response.status_code == 200 and response.headers["X-Total-Count"] == "1"
    (me,) = response.json()
    assert (me["name"], me["role"], me["leader"]) == ("t1", "self", True)
    missing = await http.delete("/v1/raft/peers/127.0.0.1:1")
    assert missing.status_code == 404, missing.text
    assert "127.0.0.1:1" in missing.json()["error"]
    bad = await http.delete("/v1/raft/peers/not-an-address")
    assert bad.status_code == 400, bad.text
    # Nothing changed but the log's index (a new leader's first entry may commit meanwhile).
    (after,) = (await http.get("/v1/raft/peers")).json()
    assert after | {"match_index": 0} == me | {"match_index": 0}


async def test_pause_blocks_job_writes_until_unpaused(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/pause")).json() == {"paused": False}
    assert (await http.post("/v1/pause")).json() == {"paused": True}
    assert (await http.get("/v1/pause")).json() == {"paused": True}
    refused = await http.post("/v1/jobs", json=job("while-paused"))
    assert_error(refused, 503, "Paused", "unpause")
    assert await job_list(http) == []
    assert (await http.post("/v1/unpause")).json() == {"paused": False}
    await create(http, "while-paused")


async def test_unknown_path_and_method(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/nothing"), 404, "NotFoundError", "openapi.json")
    assert_error(await http.delete("/v1/members"), 405, "DkronError", "DELETE", "not allowed")


# -- jobs -------------------------------------------------------------------------------------


async def test_create_returns_201_location_and_the_saved_job(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/jobs", json=job("nightly", timezone="Europe/Berlin"))
    assert response.status_code == 201
    assert response.headers["Location"] == "/v1/jobs/nightly"
    body = response.json()
    assert list(body)[:3] == ["id", "name", "displayname"] and len(body) == len(
        codec.job_to_json(Job(name="x"))
    )
    assert body["id"] == "nightly"
    assert body["concurrency"] == "allow"
    assert body["status"] == ""
    assert body["next"] == "2026-03-27T12:00:00+01:00"  # the fake clock's next hour, in Berlin
    fetched = await http.get("/v1/jobs/nightly")
    assert fetched.json() == body


async def test_job_round_trips_exactly(http: httpx.AsyncClient) -> None:
    sent = job(
        "full",
        displayname="Full job",
        timezone="Asia/Tokyo",
        schedule="0 30 2 * * *",
        owner="data team",
        owner_email="data@example.com",
        disabled=True,
        tags={"role": "worker:1"},
        metadata={"team": "data", "tier": "gold"},
        retries=2,
        processors={"log": {"forward": "true"}},
        concurrency="forbid",
        executor_config={"command": "echo hi", "shell": "true", "timeout": "30s"},
        ephemeral=True,
        starts_at="2026-04-01T00:00:00Z",
        expires_at="2027-01-01T00:00:00Z",
    )
    created = (await http.post("/v1/jobs", json=sent)).json()
    got = (await http.get("/v1/jobs/full")).json()
    assert {k: got[k] for k in sent} == sent
    assert created == got
    again = await http.post("/v1/jobs", json=got)  # GET output posted back: the same job
    assert again.status_code == 201
    assert (await http.get("/v1/jobs/full")).json() == got


async def test_patch_is_a_full_replace(http: httpx.AsyncClient) -> None:
    await create(http, "patched", owner="someone", metadata={"a": "1"})
    response = await http.patch("/v1/jobs", json=job("patched"))
    assert response.status_code == 201
    assert response.headers["Location"] == "/v1/jobs/patched"
    got = (await http.get("/v1/jobs/patched")).json()
    assert (got["owner"], got["metadata"]) == ("", {})


async def test_put_takes_the_path_name_and_refuses_another(http: httpx.AsyncClient) -> None:
    response = await http.put("/v1/jobs/by-put", json=job("by-put", owner="me"))
    assert (response.status_code, response.json()["owner"]) == (201, "me")
    unnamed = {k: v for k, v in job("x", owner="you").items() if k != "name"}
    response = await http.put("/v1/jobs/by-put", json=unnamed)
    assert (response.status_code, response.json()["owner"]) == (201, "you")
    before = await job_list(http)
    refused = await http.put("/v1/jobs/by-put", json=job("other"))
    assert_error(refused, 400, "BadRequest", "'by-put'", "'other'")
    assert await job_list(http) == before


async def test_delete_and_toggle(http: httpx.AsyncClient) -> None:
    await create(http, "parent")
    await create(http, "child", schedule="", parent_job="parent")
    assert (await http.get("/v1/jobs/parent")).json()["dependent_jobs"] == ["child"]
    assert_error(await http.delete("/v1/jobs/parent"), 409, "JobHasDependents")
    toggled = await http.post("/v1/jobs/child/toggle")
    assert toggled.status_code == 200
    assert toggled.headers["Location"] == "/v1/jobs/child"
    assert toggled.json()["disabled"] is True
    assert (await http.post("/v1/jobs/child/toggle")).json()["disabled"] is False
    deleted = await http.delete("/v1/jobs/child")
    assert (deleted.status_code, deleted.json()["name"]) == (200, "child")
    assert_error(await http.get("/v1/jobs/child"), 404, "JobNotFound", "child")
    assert_error(await http.delete("/v1/jobs/child"), 404, "JobNotFound")
    assert_error(await http.post("/v1/jobs/child/toggle"), 404, "JobNotFound")
    assert (await http.delete("/v1/jobs/parent")).status_code == 200


async def test_list_filters_sorts_and_pages(http: httpx.AsyncClient) -> None:
    await create(http, "a-job", displayname="Zulu", metadata={"team": "data"})
    await create(http, "b-job", displayname="Alpha report", metadata={"team": "ops"}, disabled=True)
    await create(http, "c-job", displayname="Mike", metadata={"team": "data", "tier": "gold"})
    await create(http, "report-d", metadata={"team": "data"})
    await http.post("/v1/jobs/c-job?wait=true")

    async def names(**params: Any) -> tuple[list[str], int]:
        response = await http.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [j["name"] for j in response.json()], int(response.headers["X-Total-Count"])

    assert await names() == (["a-job", "b-job", "c-job", "report-d"], 4)
    assert await names(_sort="id", _order="DESC") == (["report-d", "c-job", "b-job", "a-job"], 4)
    assert await names(_sort="displayname") == (["report-d", "b-job", "c-job", "a-job"], 4)
    assert await names(_sort="success_count", _order="desc", _end=1) == (["c-job"], 4)
    assert await names(_start=1, _end=3) == (["b-job", "c-job"], 4)
    assert await names(_start=3, _end=10) == (["report-d"], 4)
    assert await names(q="report") == (["b-job", "report-d"], 2)  # name or displayname
    assert await names(**{"metadata[team]": "data"}) == (["a-job", "c-job", "report-d"], 3)
    assert await names(**{"metadata[team]": "data", "metadata[tier]": "gold"}) == (["c-job"], 1)
    assert await names(q="job", status="success") == (["c-job"], 1)
    assert await names(q="job", disabled="true") == (["b-job"], 1)


async def test_list_filters_by_status_or_disabled_alone(http: httpx.AsyncClient) -> None:
    await create(http, "a-job")
    await create(http, "b-job", disabled=True)
    await create(http, "c-job")
    await http.post("/v1/jobs/c-job?wait=true")

    async def names(**params: Any) -> tuple[list[str], int]:
        response = await http.get("/v1/jobs", params=params)
        return [j["name"] for j in response.json()], int(response.headers["X-Total-Count"])

    assert await names(status="success") == (["c-job"], 1)
    assert await names(status="untriggered", _end=1) == (["a-job"], 2)
    assert await names(disabled="true") == (["b-job"], 1)
    assert await names(disabled="false") == (["a-job", "c-job"], 2)


BAD_LIST_QUERIES = [
    ("_start=x", ["_start", "whole number"]),
    ("_start=-1", ["_start", "0 or more"]),
    ("_end=1.5", ["_end"]),
    ("_start=3&_end=1", ["_end", "_start"]),
    ("_sort=owner", ["sort", "owner"]),
    ("_order=up", ["_order", "ASC or DESC"]),
    ("disabled=maybe", ["disabled", "true or false"]),
    ("status=running", ["status", "untriggered"]),
]


async def test_list_rejects_bad_parameters(http: httpx.AsyncClient) -> None:
    for query, words in BAD_LIST_QUERIES:
        assert_error(await http.get(f"/v1/jobs?{query}"), 400, "BadRequest", *words)


BAD_BODIES = [
    pytest.param(b'{"name": "x", ', "BadRequest", ["not valid JSON", "line 1 column"], id="json"),
    pytest.param(b"", "BadRequest", ["empty"], id="empty"),
    pytest.param(b'{"name": "x", "retries": NaN}', "BadRequest", ["NaN"], id="nan"),
    pytest.param(b"\xff\xfe\xfa", "BadRequest", ["UTF-8"], id="not-utf8"),
    pytest.param(b"[1, 2]", "BadRequest", ["JSON object"], id="array"),
    pytest.param(b"[" * 100_000, "BadRequest", ["nested too deeply"], id="deep"),
    pytest.param(
        b'{"name": "x", "retries": ' + b"1" * 5000 + b"}", "BadRequest", ["digits"], id="huge-int"
    ),
    pytest.param(
        json.dumps(job("x", retries="3")).encode(), "InvalidJob", ["retries"], id="wrong-type"
    ),
    pytest.param(json.dumps(job("x", tags=["a"])).encode(), "InvalidJob", ["tags"], id="wrong-map"),
    pytest.param(
        json.dumps(job("x", schedule="61 * * * *")).encode(),
        "InvalidSchedule",
        ["61 * * * *"],
        id="schedule",
    ),
    pytest.param(
        json.dumps(job("x", timezone="Mars/Base")).encode(),
        "InvalidSchedule",
        ["Mars/Base"],
        id="zone",
    ),
    pytest.param(
        json.dumps(job("x", concurrency="sometimes")).encode(),
        "InvalidJob",
        ["concurrency"],
        id="concurrency",
    ),
    pytest.param(
        json.dumps(job("x", executor="teleport")).encode(),
        "PluginNotFound",
        ["teleport"],
        id="executor",
    ),
    pytest.param(
        json.dumps(job("x", starts_at="tomorrow")).encode(),
        "InvalidJob",
        ["starts_at"],
        id="time",
    ),
]


@pytest.mark.parametrize(("body", "type_", "words"), BAD_BODIES)
async def test_bad_job_bodies_are_400_and_change_nothing(
    http: httpx.AsyncClient, body: bytes, type_: str, words: list[str]
) -> None:
    await create(http, "x", owner="original")
    before = await job_list(http)
    for method, path in (("POST", "/v1/jobs"), ("PATCH", "/v1/jobs"), ("PUT", "/v1/jobs/x")):
        response = await http.request(method, path, content=body, headers=JSON)
        assert_error(response, 400, type_, *words)
    assert await job_list(http) == before


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"schedule": "@every 1h", "executor": "shell"}, ["name is required"]),
        (job("bad name!"), ["illegal character"]),
        (job("x" * 257), ["257", "256"]),
    ],
)
async def test_bad_names_are_400_and_change_nothing(
    http: httpx.AsyncClient, body: dict[str, Any], words: list[str]
) -> None:
    for method in ("POST", "PATCH"):
        assert_error(await http.request(method, "/v1/jobs", json=body), 400, "InvalidJob", *words)
    assert await job_list(http) == []


@pytest.mark.parametrize(
    "fields",
    [{"starts_at": "9999-12-31T23:59:59-01:00"}, {"schedule": "@at 9999-12-31T23:59:59-01:00"}],
)
async def test_times_past_year_9999_are_400(
    http: httpx.AsyncClient, fields: dict[str, str]
) -> None:
    assert (await http.post("/v1/jobs", json=job("late", **fields))).status_code == 400


async def test_missing_parent_is_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/jobs", json=job("orphan", schedule="", parent_job="ghost"))
    assert_error(response, 404, "JobNotFound", "ghost")
    assert await job_list(http) == []


async def test_oversized_body_is_413_before_it_is_read(start_api: StartApi) -> None:
    api = await start_api(max_body_size=1024)
    # A client that waits for "100 Continue" sends nothing more: the answer comes from the
    # headers alone, so the body is never read.
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"X-Whom: t1" in head
    error = json.loads(body)
    assert error["type"] == "PayloadTooLarge"
    assert "1000000000" in error["error"] and "1024" in error["error"]
    small = await api.client.post("/v1/jobs", json=job("fits"))
    assert small.status_code == 201
    assert [j["name"] for j in await job_list(api.client)] == ["fits"]


# -- runs and executions ----------------------------------------------------------------------


async def test_run_answers_202_at_once_and_runs(http: httpx.AsyncClient) -> None:
    await create(http, "runner")
    for path in ("/v1/jobs/runner", "/v1/jobs/runner/run/"):
        response = await http.post(path)
        assert response.status_code == 202
        assert response.headers["Location"] == "/v1/jobs/runner"
        assert response.json()["name"] == "runner"
    listed = await executions(http, "runner", 2)
    assert [e["output"] for e in listed.json()] == ["hello\n", "hello\n"]
    assert_error(await http.post("/v1/jobs/ghost"), 404, "JobNotFound")
    assert_error(await http.post("/v1/jobs/ghost/run"), 404, "JobNotFound")
    assert_error(await http.post("/v1/jobs/runner?wait=perhaps"), 400, "BadRequest", "wait")


async def test_run_with_wait_answers_200_after_the_run(http: httpx.AsyncClient) -> None:
    await create(http, "waited", executor_config={"command": "false"})
    response = await http.post("/v1/jobs/waited/run?wait=true")
    assert response.status_code == 200
    assert (response.json()["error_count"], response.json()["status"]) == (1, "failed")
    assert response.json()["last_error"] is not None


async def test_runoncreate_runs_the_new_job(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/jobs?runoncreate", json=job("eager"))
    assert response.status_code == 201
    assert response.headers["Location"] == "/v1/jobs/eager"
    await executions(http, "eager", 1)


async def test_forbid_concurrency_conflict(http: httpx.AsyncClient) -> None:
    await create(http, "single", concurrency="forbid", executor_config={"command": "sleep 30"})
    assert (await http.post("/v1/jobs/single")).status_code == 202
    assert_error(await http.post("/v1/jobs/single"), 409, "ConflictError", "forbid")


async def test_execution_list_and_detail(http: httpx.AsyncClient) -> None:
    command = "printf 0123456789"
    await create(http, "tokyo", timezone="Asia/Tokyo", executor_config={"command": command})
    for _ in range(3):
        assert (await http.post("/v1/jobs/tokyo?wait=true")).status_code == 200
    listed = await executions(http, "tokyo", 3)
    rows = listed.json()
    assert listed.headers["X-Total-Count"] == "3"
    assert all(r["started_at"].endswith("+09:00") for r in rows)
    assert all(r["output"] == "0123456789" and r["output_truncated"] is False for r in rows)
    starts = [r["started_at"] for r in rows]
    assert starts == sorted(starts, reverse=True)  # DESC by default
    ascending = await http.get("/v1/jobs/tokyo/executions", params={"_order": "ASC"})
    assert [r["id"] for r in ascending.json()] == [r["id"] for r in reversed(rows)]
    page = await http.get("/v1/jobs/tokyo/executions?_start=1&_end=2")
    assert ([r["id"] for r in page.json()], page.headers["X-Total-Count"]) == ([rows[1]["id"]], "3")
    cut = await http.get("/v1/jobs/tokyo/executions?output_size_limit=4")
    assert {(r["output"], r["output_truncated"]) for r in cut.json()} == {("6789", True)}
    legacy = await http.get("/v1/executions/tokyo")
    assert legacy.json() == rows and legacy.headers["X-Total-Count"] == "3"
    one = await http.get(f"/v1/jobs/tokyo/executions/{rows[0]['id']}")
    assert one.status_code == 200
    assert one.json() == {k: v for k, v in rows[0].items() if k != "output_truncated"}
    assert_error(await http.get("/v1/jobs/tokyo/executions/1-nobody"), 404, "ExecutionNotFound")
    assert_error(await http.get("/v1/jobs/ghost/executions/1-nobody"), 404, "JobNotFound")
    assert_error(await http.get("/v1/jobs/ghost/executions"), 404, "JobNotFound")
    assert_error(await http.get("/v1/executions/ghost"), 404, "JobNotFound")
    for query in ("_sort=nonsense", "_start=a", "output_size_limit=-1", "_order=sideways"):
        assert_error(await http.get(f"/v1/jobs/tokyo/executions?{query}"), 400, "BadRequest")


async def test_delete_executions_resets_counters(http: httpx.AsyncClient) -> None:
    await create(http, "cleared")
    await http.post("/v1/jobs/cleared?wait=true")
    await executions(http, "cleared", 1)
    response = await http.delete("/v1/jobs/cleared/executions")
    assert response.status_code == 200
    body = response.json()
    assert (body["success_count"], body["last_success"]) == (0, None)

    async def emptied() -> bool:
        return bool((await http.get("/v1/jobs/cleared/executions")).json() == [])

    await eventually(emptied)
    assert_error(await http.delete("/v1/jobs/ghost/executions"), 404, "JobNotFound")


async def test_busy_lists_running_executions(http: httpx.AsyncClient) -> None:
    await create(http, "sleeper", executor_config={"command": "sleep 30"})
    assert (await http.get("/v1/busy")).json() == []
    await http.post("/v1/jobs/sleeper")

    async def running() -> Any:
        response = await http.get("/v1/busy")
        return response if response.json() else None

    response = await eventually(running)
    assert response.headers["X-Total-Count"] == "1"
    (execution,) = response.json()
    assert (execution["job_name"], execution["node_name"]) == ("sleeper", "t1")
    assert execution["finished_at"] == "0001-01-01T00:00:00Z"


# -- restore ----------------------------------------------------------------------------------


async def test_restore_creates_jobs_and_answers_a_json_string(http: httpx.AsyncClient) -> None:
    backup = [
        job("kid", schedule="", parent_job="mum"),  # child first: parents are saved first
        job("mum"),
        job("broken", schedule="every now and then"),
    ]
    response = await http.post(
        "/v1/restore", files={"file": ("backup.json", json.dumps(backup), "application/json")}
    )
    assert response.status_code == 200
    messages = json.loads(response.json())
    assert messages[:2] == ["success create mum", "success create kid"]
    assert messages[2].startswith("fail create broken: ")
    assert [j["name"] for j in await job_list(http)] == ["kid", "mum"]


BAD_RESTORES: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"other": ("a.json", "[]")}, "BadRequest", ["'file'", "curl -F"]),
    ({"file": ("a.json", "[{")}, "BadRequest", ["not valid JSON", "line 1"]),
    ({"file": ("a.json", '{"name": "x"}')}, "BadRequest", ["JSON array"]),
    (
        {"file": ("a.json", json.dumps([job("ok"), job("y", retries="3")]))},
        "InvalidJob",
        ["job #1", "retries"],
    ),
]


async def test_restore_rejects_bad_files_whole(http: httpx.AsyncClient) -> None:
    for files, type_, words in BAD_RESTORES:
        assert_error(await http.post("/v1/restore", files=files), 400, type_, *words)
    assert_error(await http.post("/v1/restore", json=[job("ok")]), 400, "BadRequest", "'file'")
    assert await job_list(http) == []


# -- schedule preview -------------------------------------------------------------------------


async def test_schedule_preview_crosses_dst(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/v1/schedule",
        params={
            "schedule": "0 0 12 * * *",
            "timezone": "Europe/Berlin",
            "after": "2026-03-27T12:00:00+01:00",  # strictly after: this instant is not listed
            "count": "3",
        },
    )
    assert response.status_code == 200
    assert response.json() == {
        "schedule": "0 0 12 * * *",
        "timezone": "Europe/Berlin",
        "next": [
            "2026-03-28T12:00:00+01:00",
            "2026-03-29T12:00:00+02:00",
            "2026-03-30T12:00:00+02:00",
        ],
    }


async def test_schedule_preview_defaults(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/schedule?schedule=@every 1h")  # after = the node's clock
    assert response.json()["next"] == [f"2026-03-27T{h}:00:00Z" for h in range(11, 16)]
    assert response.json()["timezone"] == "UTC"
    prefixed = await http.get(
        "/v1/schedule",
        params={"schedule": "TZ=Asia/Tokyo 0 0 9 * * *", "after": "2026-03-27T10:00:00 00:00"},
    )
    assert prefixed.json()["timezone"] == "Asia/Tokyo"
    assert prefixed.json()["next"][0] == "2026-03-28T09:00:00+09:00"
    many = await http.get("/v1/schedule?schedule=@every 1s&count=1000")
    assert len(many.json()["next"]) == 1000
    assert (await http.get("/v1/schedule?schedule=@manually")).json()["next"] == []


BAD_PREVIEWS = [
    ("", "BadRequest", ["schedule", "required"]),
    ("schedule=61 * * * *", "InvalidSchedule", ["61 * * * *"]),
    ("schedule=@daily&timezone=Mars/Base", "InvalidSchedule", ["Mars/Base"]),
    ("schedule=@daily&after=yesterday", "BadRequest", ["after", "RFC3339"]),
    ("schedule=@daily&after=2026-01-01T00:00:00", "BadRequest", ["after", "offset"]),
    ("schedule=@daily&count=0", "BadRequest", ["count", "1000"]),
    ("schedule=@daily&count=1001", "BadRequest", ["count", "1000"]),
    ("schedule=@daily&count=few", "BadRequest", ["count", "whole number"]),
    (f"schedule=@daily&count={'9' * 5000}", "BadRequest", ["count", "whole number"]),
]


async def test_schedule_preview_errors(http: httpx.AsyncClient) -> None:
    for query, type_, words in BAD_PREVIEWS:
        assert_error(await http.get(f"/v1/schedule?{query}"), 400, type_, *words)


async def test_schedule_preview_ends_at_the_end_of_time(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/schedule?schedule=@every 1s&after=9999-12-31T23:59:59Z")
    assert response.status_code == 200 and response.json()["next"] == []


# -- conventions ------------------------------------------------------------------------------


async def test_trailing_slash_and_pretty(http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/jobs/", json=job("slash"))
    assert created.status_code == 201
    assert (await http.get("/v1/jobs/slash/")).json()["name"] == "slash"
    assert (await http.get("/v1/jobs/slash/executions/")).status_code == 200
    assert (await http.get("/health/")).status_code == 200
    compact = await http.get("/v1/jobs/slash")
    pretty = await http.get("/v1/jobs/slash?pretty")
    assert "\n" not in compact.text
    assert pretty.text.startswith('{\n    "id": "slash",\n')
    assert pretty.json() == compact.json()
    error = await http.get("/v1/jobs/ghost?pretty=1")
    assert error.text.startswith("{\n    ")


async def test_cors_preflight_and_headers_for_a_listed_origin_only(start_api: StartApi) -> None:
    api = await start_api(cors_origin=("http://dash.example",))
    preflight = await api.bare.options(
        "/v1/jobs/anything",
        headers={
            "Origin": "http://dash.example",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.content == b""
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://dash.example"
    assert "DELETE" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert preflight.headers["Vary"] == "Origin"
    assert preflight.headers["X-Whom"] == "t1"
    response = await api.client.get("/v1/jobs", headers={"Origin": "http://dash.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://dash.example"
    assert "X-Total-Count" in response.headers["Access-Control-Expose-Headers"]
    elsewhere = await api.client.get("/health", headers={"Origin": "http://elsewhere.example"})
    assert elsewhere.status_code == 200
    assert "Access-Control-Allow-Origin" not in elsewhere.headers


async def test_token_auth(start_api: StartApi) -> None:
    api = await start_api(api_token=TOKEN)
    http = api.bare
    assert (await http.get("/health")).status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"X-Dkron-Token": "wrong"},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        refused = await http.get("/v1/jobs", headers=headers)
        assert_error(refused, 401, "Unauthorized", "Bearer")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(await http.post("/v1/jobs", json=job("nope")), 401, "Unauthorized")
    assert_error(await http.get("/v1/not-a-path"), 401, "Unauthorized")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await http.get("/v1/jobs", headers=bearer)).status_code == 200
    assert (await http.get("/v1/jobs", headers={"X-Dkron-Token": TOKEN})).status_code == 200
    created = await http.post("/v1/jobs", json=job("yes"), headers=bearer)
    assert created.status_code == 201
    assert [j["name"] for j in (await http.get("/v1/jobs", headers=bearer)).json()] == ["yes"]


async def test_no_auth_means_open(start_api: StartApi) -> None:
    api = await start_api(no_auth=True, api_token="")
    assert (await api.bare.get("/v1/jobs")).status_code == 200


async def test_unexpected_errors_are_500_without_traceback(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("members table on fire")

    monkeypatch.setattr(api.node.jobs, "members", broken)
    with caplog.at_level(logging.ERROR):
        response = await api.client.get("/v1/members")
    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "DkronError"
    assert body["error"].startswith("internal error: members table on fire")
    assert "Traceback" not in response.text
    assert any(r.exc_info and "members table on fire" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.parametrize(
    ("host", "options", "words"),
    [
        ("0.0.0.0", {"no_auth": True, "api_token": "", "allow_insecure_remote": True},
         ["anyone who can reach this port", "--no-auth"]),
        ("0.0.0.0", {}, ["in clear", "--tls-cert"]),
        ("127.0.0.1", {}, []),
    ],
)  # fmt: skip
async def test_serve_warns_when_open_beyond_loopback(
    start_api: StartApi,
    caplog: pytest.LogCaptureFixture,
    host: str,
    options: dict[str, Any],
    words: list[str],
) -> None:
    with caplog.at_level(logging.WARNING, logger="dkron_lab.api.app"):
        api = await start_api(http_addr=f"{host}:{free_port()}", **options)
    warnings = [r.getMessage() for r in caplog.records if r.name == "dkron_lab.api.app"]
    assert bool(warnings) is bool(words)
    for word in words:
        assert word in warnings[0]
    assert api.node.config.http_host_port[0] == host
