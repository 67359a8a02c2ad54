"""``POST /v1/sql`` and ``dkron-lab sql`` over real HTTP: a real one-node server (Raft, DuckDB,
shell executor) with the SQL resource mounted beside the others, called with httpx and with
the CLI as a subprocess. Time is the only fake (the node's clock)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import tornado.httpserver
import tornado.web

from dkron_lab.api.app import make_app
from dkron_lab.api.sql import ARROW_STREAM
from dkron_lab.codec import format_time
from dkron_lab.model.execution import Execution, execution_id
from dkron_lab.node import Node
from dkron_lab.testing import FakeClock, auth_headers, server_config

NOW = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)
ENDLESS = "SELECT sum(a.range * b.range) FROM range(10000000) a, range(10000000) b"
CLI = [sys.executable, "-m", "dkron_lab.cli"]


@dataclass
class Server:
    node: Node
    http: httpx.AsyncClient
    url: str


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = server_config(tmp_path / "node")
    node = Node(config, clock=FakeClock(NOW))
    await node.start()
    http_server = tornado.httpserver.HTTPServer(make_app(node))
    port = config.http_host_port[1]
    http_server.listen(port, address="127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    client = httpx.AsyncClient(base_url=url, timeout=60, headers=auth_headers(node.api_token))
    try:
        yield Server(node=node, http=client, url=url)
    finally:
        await client.aclose()
        http_server.stop()
        await http_server.close_all_connections()
        await node.stop(graceful=False)


def execution(job: str, i: int, *, success: bool = True) -> Execution:
    started = NOW - timedelta(hours=1) + timedelta(seconds=i)
    return Execution(
        id=execution_id(int(started.timestamp()) * 10**9, "t1"),
        job_name=job,
        node_name="t1",
        group=i,
        started_at=started,
        finished_at=started + timedelta(seconds=2),
        scheduled_at=started - timedelta(milliseconds=500),
        success=success,
        output=f"line {i}\n",
    )


async def fill(node: Node, job: str, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        node.history.append(execution(job, i, success=i % 3 != 0))
    await asyncio.to_thread(node.history.flush)


async def post_sql(
    server: Server, query: str, *, arrow: bool = False, **body: Any
) -> httpx.Response:
    headers = {"Accept": ARROW_STREAM} if arrow else {}
    return await server.http.post("/v1/sql", json={"query": query, **body}, headers=headers)


def arrow_table(response: httpx.Response) -> pa.Table:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == ARROW_STREAM
    return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()


def assert_error(response: httpx.Response, type_: str, *words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "type"} and body["type"] == type_, body
    for word in words:
        assert word in body["error"], body


# -- answers --------------------------------------------------------------------------------------


async def test_json_answer(server: Server) -> None:
    await fill(server.node, "backup", 6)
    response = await post_sql(
        server,
        "SELECT job_name, success, output, started_at, duration_s, lateness_s "
        "FROM executions ORDER BY started_at LIMIT 2",
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["columns"] == [
        {"name": "job_name", "type": "VARCHAR"},
        {"name": "success", "type": "BOOLEAN"},
        {"name": "output", "type": "VARCHAR"},
        {"name": "started_at", "type": "TIMESTAMP WITH TIME ZONE"},
        {"name": "duration_s", "type": "DOUBLE"},
        {"name": "lateness_s", "type": "DOUBLE"},
    ]
    assert body["rows"] == [
        ["backup", False, "line 0\n", "2026-03-27T09:00:00Z", 2.0, 0.5],
        ["backup", True, "line 1\n", "2026-03-27T09:00:01Z", 2.0, 0.5],
    ]
    assert (body["truncated"], body["row_count"]) == (False, 2)


async def test_arrow_answer_matches_json(server: Server) -> None:
    await fill(server.node, "backup", 5)
    await fill(server.node, "report", 4, first=100)
    query = (
        "SELECT job_name, count(*) AS runs, avg(success::int) AS success_rate, "
        "max(finished_at) AS last FROM executions GROUP BY job_name ORDER BY job_name"
    )
    response = await post_sql(server, query, arrow=True)
    table = arrow_table(response)
    assert response.headers["X-Dkron-Truncated"] == "false"
    assert response.headers["X-Dkron-Rows"] == "2"
    assert table.schema.field("last").type == pa.timestamp("us", tz="UTC")
    frame = table.to_pandas()
    assert list(frame["job_name"]) == ["backup", "report"]
    assert list(frame["runs"]) == [5, 4]
    as_json = (await post_sql(server, query)).json()
    converted = [
        [row["job_name"], row["runs"], row["success_rate"], format_time(row["last"])]
        for row in table.to_pylist()
    ]
    assert converted == as_json["rows"]


async def test_json_encodes_every_kind_of_value(server: Server) -> None:
    response = await post_sql(
        server,
        "SELECT MAP {'a': 1} AS m, INTERVAL 90 SECOND AS i, "
        "170141183460469231731687303715884105727::HUGEINT AS h, 1.25::DECIMAL(10, 2) AS d, "
        "'6b0e0f8e-3b7e-4c8a-9d36-1b2f6f7f4d11'::UUID AS u, 'ab'::BLOB AS b, "
        "[1, NULL] AS l, {'x': 'y'} AS s, 'nan'::DOUBLE AS nan, DATE '2026-01-02' AS dt, "
        "TIME '10:00:01' AS t, TIMESTAMP '2026-01-02 03:04:05' AS naive, NULL AS nothing",
    )
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    assert row[0] == {"a": 1}
    assert row[1] == {"months": 0, "days": 0, "nanoseconds": 90_000_000_000}
    assert row[2] == 170141183460469231731687303715884105727
    assert row[3] == 1.25
    assert row[4] == "6b0e0f8e-3b7e-4c8a-9d36-1b2f6f7f4d11"
    assert row[5] == "YWI="
    assert row[6:] == [[1, None], {"x": "y"}, None, "2026-01-02", "10:00:01",
                       "2026-01-02T03:04:05", None]  # fmt: skip


async def test_jobs_and_members_views(server: Server) -> None:
    created = await server.http.post(
        "/v1/jobs",
        json={
            "name": "hello",
            "schedule": "@every 1h",
            "executor": "shell",
            "executor_config": {"command": "echo hello"},
            "tags": {"dc": "dc1"},
            "metadata": {"team": "data"},
        },
    )
    assert created.status_code == 201, created.text
    ran = await server.http.post("/v1/jobs/hello/run?wait=true")
    assert ran.status_code == 200, ran.text
    await asyncio.to_thread(server.node.history.flush)
    response = await post_sql(
        server,
        "SELECT j.name, j.tags['dc'], j.metadata['team'], j.status, j.success_count, j.next, "
        "(SELECT count(*) FROM executions e WHERE e.job_name = j.name) AS runs FROM jobs j",
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [
        ["hello", "dc1", "data", "success", 1, "2026-03-27T11:00:00Z", 1]
    ]
    members = await post_sql(server, "SELECT name, status, server, leader, tags['dc'] FROM members")
    assert members.json()["rows"] == [["t1", "alive", True, True, "dc1"]]


# -- limits ---------------------------------------------------------------------------------------


async def test_row_limit_truncates_both_forms(server: Server) -> None:
    query = "SELECT range AS n FROM range(25)"
    body = (await post_sql(server, query, max_rows=10)).json()
    assert (body["truncated"], body["row_count"]) == (True, 10)
    assert body["rows"] == [[n] for n in range(10)]
    response = await post_sql(server, query, arrow=True, max_rows=10)
    assert arrow_table(response).column("n").to_pylist() == list(range(10))
    assert (response.headers["X-Dkron-Truncated"], response.headers["X-Dkron-Rows"]) == (
        "true",
        "10",
    )
    whole = await post_sql(server, query, arrow=True, max_rows=25)
    assert whole.headers["X-Dkron-Truncated"] == "false"


async def test_large_answers_arrive_whole(server: Server) -> None:
    """Some MB, sent in several chunks: Arrow and JSON both arrive complete."""
    query = "SELECT range AS n, repeat('x', 200) AS pad FROM range(60000)"
    response = await post_sql(server, query, arrow=True, max_rows=60000)
    table = arrow_table(response)
    assert int(response.headers["Content-Length"]) > 3 * 2**20
    assert table.num_rows == 60000 and table.column("n").to_pylist() == list(range(60000))
    body = (await post_sql(server, query, max_rows=60000)).json()
    assert body["row_count"] == 60000 and body["rows"][-1] == [59999, "x" * 200]


async def test_time_limit(server: Server) -> None:
    response = await post_sql(server, ENDLESS, timeout=0.3)
    assert_error(response, "QueryTimeout", "0.3 s", "timeout")


@pytest.mark.parametrize(
    ("query", "type_", "word"),
    [
        ("DELETE FROM executions", "QueryRefused", "not allowed"),
        ("SELECT 1; SELECT 2", "QueryRefused", "one SELECT"),
        ("COPY executions TO '/tmp/dkron-sql-stolen.csv'", "QueryRefused", "COPY"),
        ("SELECT * FROM read_csv('/etc/passwd')", "QueryRefused", "files"),
        ("ATTACH ':memory:' AS m", "QueryRefused", "ATTACH"),
        ("SET enable_external_access = true", "QueryRefused", "SET"),
        ("WITH d AS (DELETE FROM history.main.executions RETURNING *) FROM d", "QueryRefused",
         "read-only"),
        ("SELECT nope FROM executions", "InvalidQuery", "nope"),
        ("SELEC 1", "InvalidQuery", "syntax error"),
    ],
)  # fmt: skip
async def test_refused_and_invalid_queries(
    server: Server, query: str, type_: str, word: str
) -> None:
    await fill(server.node, "backup", 3)
    assert_error(await post_sql(server, query), type_, word)
    assert_error(await post_sql(server, query, arrow=True), type_, word)
    assert server.node.history.count() == 3
    assert not Path("/tmp/dkron-sql-stolen.csv").exists()


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"query": "SELECT 1", "max_rows": 1_000_001}, "max_rows"),
        ({"query": "SELECT 1", "max_rows": -1}, "max_rows"),
        ({"query": "SELECT 1", "max_rows": "10"}, "max_rows"),
        ({"query": "SELECT 1", "timeout": 0}, "timeout"),
        ({"query": "SELECT 1", "timeout": 301}, "timeout"),
        ({"query": "SELECT 1", "timeout": True}, "timeout"),
        ({"query": "SELECT 1", "rows": 5}, "unknown key"),
        ({"query": ""}, "query"),
        ({"sql": "SELECT 1"}, "unknown key"),
        (["SELECT 1"], "JSON object"),
    ],
)
async def test_bad_bodies(server: Server, body: Any, word: str) -> None:
    response = await server.http.post("/v1/sql", json=body)
    assert_error(response, "BadRequest", word)


async def test_defaults_apply(server: Server) -> None:
    body = (await post_sql(server, "SELECT range FROM range(100001)")).json()
    assert (body["row_count"], body["truncated"]) == (100_000, True)
    body = (await post_sql(server, "SELECT 1 AS one", max_rows=None, timeout=None)).json()
    assert body["rows"] == [[1]]


@pytest.mark.slow
async def test_loop_and_writer_keep_going_while_queries_run(server: Server) -> None:
    """A long query runs in a thread: the API answers and the history writer commits meanwhile."""
    slow = asyncio.ensure_future(post_sql(server, ENDLESS, timeout=6))
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            server.node.history.append(execution("during", 1000 + i))
            i += 1
            if i % 50 == 0:
                server.node.history.flush()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(5):
            quick = await post_sql(
                server, "SELECT count(*) FROM executions WHERE job_name = 'during'"
            )
            assert quick.status_code == 200, quick.text
            assert (await server.http.get("/health")).status_code == 200
        assert not slow.done(), "the long query should still run for seconds"
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    await asyncio.to_thread(server.node.history.flush)
    written = server.node.history.count("during")
    assert written > 0
    final = await post_sql(server, "SELECT count(*) FROM executions WHERE job_name = 'during'")
    assert final.json()["rows"] == [[written]]
    assert_error(await slow, "QueryTimeout", "6 s")


# -- the CLI --------------------------------------------------------------------------------------


async def cli(server: Server, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, "sql", *args, "--address", server.url,
        env={**os.environ, "DKRON_API_TOKEN": server.node.api_token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_cli_prints_table_json_and_csv(server: Server) -> None:
    await fill(server.node, "backup", 6)
    await fill(server.node, "report", 3, first=100)
    query = (
        "SELECT job_name, count(*) AS runs, round(avg(success::int), 2) AS rate "
        "FROM executions GROUP BY job_name ORDER BY job_name"
    )
    code, out, err = await cli(server, query)
    assert code == 0, err
    assert out.splitlines() == [
        "job_name  runs  rate",
        "backup    6     0.67",
        "report    3     0.67",
        "(2 rows)",
    ]
    code, out, _ = await cli(server, query, "--json")
    assert code == 0 and json.loads(out)["rows"][0] == ["backup", 6, 0.67]
    code, out, _ = await cli(server, query, "--csv")
    assert code == 0 and out.splitlines() == [
        "job_name,runs,rate",
        "backup,6,0.67",
        "report,3,0.67",
    ]
    code, out, err = await cli(server, "SELECT range FROM range(5)", "--max-rows", "2")
    assert code == 0 and "(2 rows)" in out and "truncated at 2 rows" in err


@pytest.mark.slow
async def test_cli_reports_refusals(server: Server) -> None:
    code, out, err = await cli(server, "DROP TABLE executions")
    assert code == 1 and out == ""
    assert "DROP statements are not allowed" in err
    code, _, err = await cli(server, "--json", "--csv", "SELECT 1")
    assert code == 2 and "choose one" in err
