"""What the web UI reads (issue 12), over real HTTP from a real one-node server (Raft, DuckDB,
shell executor): every job's executions filtered and paged, a running execution's output by
offset and streamed, secrets masked in both, and the run statistics of the jobs list. Time is
fake (nothing fires on its own); the commands run for real."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.api.app import serve
from dkron_lab.api.handlers import ExecutionOutputStream
from dkron_lab.client import AsyncClient, Client
from dkron_lab.errors import ExecutionNotFound
from dkron_lab.node import Node
from dkron_lab.testing import FakeClock, auth_headers, server_config
from tests.integration.test_openapi import check

NOW = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)
SLOW = "for i in 1 2 3; do echo $i; sleep 0.3; done"
SECRET = "s3cret-env-value"


@dataclass
class Api:
    node: Node
    clock: FakeClock
    http: httpx.AsyncClient


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = server_config(tmp_path)
    clock = FakeClock(NOW)
    node = Node(config, clock=clock)
    await node.start()
    server = await serve(node)
    url = f"http://127.0.0.1:{config.http_host_port[1]}"
    async with httpx.AsyncClient(
        base_url=url, timeout=20, headers=auth_headers(node.api_token)
    ) as http:
        yield Api(node=node, clock=clock, http=http)
    server.stop()
    await server.close_all_connections()
    await node.stop(graceful=False)


def shell_job(name: str, command: str, **config: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true", **config},
    }


async def save(api: Api, name: str, command: str, **config: str) -> None:
    response = await api.http.post("/v1/jobs", json=shell_job(name, command, **config))
    assert response.status_code == 201, response.text


async def run(api: Api, name: str) -> None:
    response = await api.http.post(f"/v1/jobs/{name}/run", params={"wait": "true"})
    assert response.status_code == 200, response.text


async def listed(api: Api, **params: Any) -> tuple[list[dict[str, Any]], int]:
    response = await api.http.get("/v1/executions", params=params)
    assert response.status_code == 200, response.text
    return response.json(), int(response.headers["X-Total-Count"])


async def running_id(api: Api, job: str) -> str:
    """The id of ``job``'s execution once it shows as running."""
    for _ in range(200):
        found, _ = await listed(api, status="running", job=job)
        if found:
            return str(found[0]["id"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job} never showed as running")


async def output(api: Api, job: str, execution: str, offset: int = 0) -> dict[str, Any]:
    path = f"/v1/jobs/{job}/executions/{execution}/output"
    response = await api.http.get(path, params={"offset": offset})
    check(response, "/v1/jobs/{job}/executions/{execution}/output", "get")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- GET /v1/executions --------------------------------------------------------------------------


async def test_every_jobs_executions_filtered_by_job_status_node_and_time_and_paged(
    api: Api,
) -> None:
    await save(api, "ok", "echo fine")
    await save(api, "bad", "echo broken; exit 3")
    for name in ("ok", "bad", "ok"):  # started at NOW, NOW+1 min, NOW+2 min
        await run(api, name)
        api.clock.advance(timedelta(minutes=1))
    found, total = await listed(api)
    assert total == 3
    assert [e["job_name"] for e in found] == ["ok", "bad", "ok"]  # newest first
    assert [e["success"] for e in found] == [True, False, True]
    assert found[0]["output"] == "fine\n" and found[1]["output_truncated"] is False
    check(await api.http.get("/v1/executions"), "/v1/executions", "get")

    assert [e["job_name"] for e in (await listed(api, job="bad"))[0]] == ["bad"]
    assert (await listed(api, status="failed"))[1] == 1
    assert (await listed(api, status="success"))[1] == 2
    assert (await listed(api, status="running"))[1] == 0
    assert (await listed(api, node="t1"))[1] == 3
    assert (await listed(api, node="elsewhere"))[1] == 0
    minute = (NOW + timedelta(minutes=1)).isoformat()
    since, _ = await listed(api, since=minute)
    assert [e["job_name"] for e in since] == ["ok", "bad"]
    until, _ = await listed(api, until=minute)
    assert [e["job_name"] for e in until] == ["ok"]
    both, _ = await listed(api, since=minute, until=(NOW + timedelta(minutes=2)).isoformat())
    assert [e["job_name"] for e in both] == ["bad"]

    page, total = await listed(api, _start=1, _end=2)
    assert total == 3 and [e["job_name"] for e in page] == ["bad"]
    oldest, _ = await listed(api, _order="ASC", _end=1)
    assert oldest[0]["started_at"] == found[-1]["started_at"]
    cut, _ = await listed(api, output_size_limit=2)
    assert cut[0]["output"] == "e\n" and cut[0]["output_truncated"] is True
    assert (await api.http.get("/v1/executions/ok")).json()[0]["job_name"] == "ok"  # Dkron's


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("status=done", "status must be one of success, failed, running, not 'done'"),
        ("since=yesterday", "since must be an RFC3339 time with an offset"),
        ("until=2026-03-27T10:00:00", "until must be an RFC3339 time with an offset"),
        ("since=2026-03-27T10:00:00Z&until=2026-03-27T09:00:00Z", "must be after since"),
        ("_start=x", "_start must be a whole number"),
        ("_start=5&_end=2", "_end (2) must not be less than _start (5)"),
        ("_end=5000", "a page holds at most 1000 executions: ask for _start=0&_end=1000"),
        ("_sort=duration", "cannot sort executions by _sort='duration'"),
    ],
)
async def test_bad_parameters_are_a_400_that_says_what_to_send(
    api: Api, query: str, says: str
) -> None:
    response = await api.http.get(f"/v1/executions?{query}")
    assert response.status_code == 400
    assert says in response.json()["error"], response.json()
    check(response, "/v1/executions", "get")


# -- output by offset, streamed -----------------------------------------------------------------


async def test_a_running_outputs_reads_grow_by_offset_until_done(api: Api) -> None:
    await save(api, "slow", SLOW)
    assert (await api.http.post("/v1/jobs/slow/run")).status_code == 202
    execution = await running_id(api, "slow")
    (shown,) = (await listed(api, status="running"))[0]
    assert shown["status"] == "running" and shown["node_name"] == "t1"

    reads: list[dict[str, Any]] = []
    offset = 0
    while not (reads and reads[-1]["done"]):
        reads.append(await output(api, "slow", execution, offset))
        assert reads[-1]["offset"] == offset
        offset = reads[-1]["next"]
        await asyncio.sleep(0.1)
    assert "".join(r["data"] for r in reads) == "1\n2\n3\n"
    growing = [r for r in reads if r["data"] and not r["done"]]
    assert len(growing) >= 2, reads  # pieces arrived while it ran
    again = await output(api, "slow", execution, 2)
    assert again == {"offset": 2, "next": 6, "done": True, "data": "2\n3\n"}


async def test_a_finished_output_is_read_from_the_history(api: Api) -> None:
    await save(api, "done", "printf 'héllo wörld'")
    await run(api, "done")
    (execution,) = (await listed(api, job="done"))[0]
    api.node.runner._ended.clear()  # the runner forgot it: only the history has it now
    first = await output(api, "done", execution["id"], 0)
    assert first == {"offset": 0, "next": 13, "done": True, "data": "héllo wörld"}
    assert (await output(api, "done", execution["id"], 2))["data"] == "llo wörld"  # after é
    missing = await api.http.get("/v1/jobs/done/executions/1-nowhere/output")
    assert missing.status_code == 404
    check(missing, "/v1/jobs/{job}/executions/{execution}/output", "get")
    bad = await api.http.get(f"/v1/jobs/done/executions/{execution['id']}/output?offset=-1")
    assert bad.status_code == 400 and "offset must be 0 or more" in bad.json()["error"]


async def stream_lines(
    api: Api, job: str, execution: str, **params: Any
) -> list[tuple[float, dict[str, Any]]]:
    """Each line of the stream with when it arrived (event-loop seconds)."""
    path = f"/v1/jobs/{job}/executions/{execution}/output/stream"
    lines = []
    async with api.http.stream("GET", path, params=params) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        async for line in response.aiter_lines():
            lines.append((asyncio.get_running_loop().time(), json.loads(line)))
    return lines


async def test_the_stream_delivers_lines_while_the_run_goes_on(api: Api) -> None:
    await save(api, "streamed", SLOW)
    await api.http.post("/v1/jobs/streamed/run")
    execution = await running_id(api, "streamed")
    lines = await stream_lines(api, "streamed", execution)
    chunks = [chunk for _, chunk in lines]
    assert "".join(c["data"] for c in chunks) == "1\n2\n3\n"
    assert chunks[-1]["done"] and not any(c["done"] for c in chunks[:-1])
    with_data = [(at, c) for at, c in lines if c["data"]]
    first_at, last_at = with_data[0][0], lines[-1][0]
    assert last_at - first_at > 0.3, lines  # the first lines came before the run ended
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after["offset"] == before["next"]


async def test_once_a_read_says_done_the_execution_is_there(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader told "done" asks for the execution next (the UI does): the history must have
    it by then, though the run ended on its node before its record went through Raft."""
    written = api.node.history.append
    slow = threading.Event()

    def late(*args: Any, **kwargs: Any) -> Any:
        slow.wait(0.5)  # the record reaches the history half a second after the run ended
        return written(*args, **kwargs)

    monkeypatch.setattr(api.node.history, "append", late)
    for read in ("stream", "offset"):
        await save(api, f"told-{read}", "echo one; sleep 0.2; echo two")
        await api.http.post(f"/v1/jobs/told-{read}/run")
        execution = await running_id(api, f"told-{read}")
        if read == "stream":
            last = (await stream_lines(api, f"told-{read}", execution))[-1][1]
        else:
            last = await output(api, f"told-{read}", execution)
            while not last["done"]:
                last = await output(api, f"told-{read}", execution, last["next"])
        assert last["done"]
        found = await api.http.get(f"/v1/jobs/told-{read}/executions/{execution}")
        assert found.status_code == 200, found.text
        assert found.json()["output"] == "one\ntwo\n"


async def test_the_stream_sends_a_keepalive_while_nothing_is_printed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ExecutionOutputStream, "keepalive", 0.1)
    await save(api, "quiet", "sleep 0.8; echo late")
    await api.http.post("/v1/jobs/quiet/run")
    execution = await running_id(api, "quiet")
    chunks = [chunk for _, chunk in await stream_lines(api, "quiet", execution)]
    empty = [c for c in chunks if not c["data"] and not c["done"]]
    assert len(empty) >= 3, chunks
    assert "".join(c["data"] for c in chunks) == "late\n"


async def test_secrets_stay_masked_in_offset_reads_and_in_the_stream(api: Api) -> None:
    command = 'for i in 1 2; do echo "key=$SECRET"; sleep 0.3; done'
    await save(api, "secretive", command, env=f"SECRET={SECRET}")
    await api.http.post("/v1/jobs/secretive/run")
    execution = await running_id(api, "secretive")
    streamed = await stream_lines(api, "secretive", execution)
    text = "".join(chunk["data"] for _, chunk in streamed)
    assert text == "key=***\nkey=***\n"
    read = await output(api, "secretive", execution)
    assert read["data"] == text and SECRET not in json.dumps(read)


# -- run statistics in the jobs list -----------------------------------------------------------


async def test_the_jobs_list_adds_last_results_and_median_duration_when_asked(api: Api) -> None:
    await save(api, "timed", "sleep 0.5")
    await save(api, "never", "true")
    for seconds in (1, 5, 2):  # fake durations: the clock moves while each run sleeps
        await api.http.post("/v1/jobs/timed/run")
        await running_id(api, "timed")
        api.clock.advance(seconds)
        while (await listed(api, status="running"))[1]:
            await asyncio.sleep(0.05)
    await asyncio.to_thread(api.node.history.flush)

    plain = (await api.http.get("/v1/jobs")).json()
    assert all("last_results" not in job and "median_duration" not in job for job in plain)
    response = await api.http.get("/v1/jobs", params={"stats": "1"})
    check(response, "/v1/jobs", "get")
    jobs = {job["name"]: job for job in response.json()}
    assert jobs["never"]["last_results"] == [] and jobs["never"]["median_duration"] is None
    timed = jobs["timed"]
    assert [r["duration"] for r in timed["last_results"]] == [2.0, 5.0, 1.0]  # newest first
    assert {r["status"] for r in timed["last_results"]} == {"success"}
    assert timed["median_duration"] == 2.0
    assert set(timed) - set(plain[0]) == {"last_results", "median_duration"}


# -- the clients ---------------------------------------------------------------------------------


async def test_both_clients_list_read_and_follow_output(api: Api) -> None:
    token = api.node.api_token
    url = str(api.http.base_url)
    await save(api, "clients", SLOW)
    await api.http.post("/v1/jobs/clients/run")
    execution = await running_id(api, "clients")
    async with AsyncClient(url, token) as client:
        streamed = [chunk async for chunk in client.follow_output("clients", execution)]
        assert "".join(c["data"] for c in streamed) == "1\n2\n3\n" and streamed[-1]["done"]
        read = await client.execution_output("clients", execution, offset=2)
        assert read["data"] == "2\n3\n" and read["offset"] == 2
        await asyncio.to_thread(api.node.history.flush)
        found = await client.list_executions_all(job="clients", since=NOW, status="success")
        assert [e["id"] for e in found] == [execution]
        with pytest.raises(ExecutionNotFound):
            [chunk async for chunk in client.follow_output("clients", "1-nowhere")]

    def sync() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with Client(url, token) as client:
            return list(client.follow_output("clients", execution)), client.list_executions_all()

    chunks, listed_all = await asyncio.to_thread(sync)
    assert chunks[-1]["done"] and "".join(c["data"] for c in chunks) == "1\n2\n3\n"
    assert [e["id"] for e in listed_all] == [execution]


async def test_a_reader_that_goes_away_ends_its_stream_quietly(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ExecutionOutputStream, "keepalive", 0.05)
    await save(api, "abandoned", "sleep 1.5; echo never read")
    await api.http.post("/v1/jobs/abandoned/run")
    execution = await running_id(api, "abandoned")
    path = f"/v1/jobs/abandoned/executions/{execution}/output/stream"
    async with api.http.stream("GET", path) as response:
        async for line in response.aiter_lines():
            assert json.loads(line)["data"] == ""
            break  # the reader leaves after the first line
    await asyncio.sleep(0.3)  # keep-alives meet the closed connection
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
    assert errors == [], [r.getMessage() for r in errors]


async def test_running_executions_come_first_and_page_with_the_finished_ones(api: Api) -> None:
    await save(api, "quick", "true")
    await save(api, "long", "sleep 1")
    for _ in range(3):
        await run(api, "quick")
        api.clock.advance(60)
    await api.http.post("/v1/jobs/long/run")
    long_id = await running_id(api, "long")
    everything, total = await listed(api)
    assert total == 4 and [e["id"] for e in everything][0] == long_id
    assert everything[0]["status"] == "running" and "status" not in everything[1]
    finished = [e["id"] for e in everything[1:]]
    assert [e["id"] for e in (await listed(api, _start=0, _end=2))[0]] == [long_id, finished[0]]
    assert [e["id"] for e in (await listed(api, _start=2, _end=4))[0]] == finished[1:]
    oldest = [e["id"] for e in (await listed(api, _order="ASC", _start=2, _end=4))[0]]
    assert oldest == [finished[0], long_id]  # running ones last when oldest come first
    assert (await listed(api, status="success"))[1] == 3
