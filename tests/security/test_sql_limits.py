"""``POST /v1/sql`` cannot take the node down (issue 10, point 6): over a real one-node server
with small ``--sql-*`` limits, a wide result, a query that needs more memory than allowed and
more queries than allowed at once are each a 4xx/503 that names the limit, while the server and
its history writer carry on. On the code before the limits, the same requests answered 200 with
the whole body (or ran all at once under DuckDB's 80 %-of-RAM default)."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.api.sql import ARROW_STREAM
from dkron_lab.model.execution import Execution
from tests.security.conftest import Api, StartApi

MiB = 1024**2
WIDE = "SELECT range AS n, repeat('x', 10000) AS pad FROM range(100000)"  # ~1 GB if built
HUNGRY = (  # a hash table of ~300 MB: far over 48 MiB of memory and 16 MiB of spill files
    "SELECT count(DISTINCT x) FROM (SELECT range::VARCHAR || repeat('x', 100) AS x "
    "FROM range(3000000))"
)
ENDLESS = "SELECT sum(a.range * b.range) FROM range(10000000) a, range(10000000) b"


@pytest.fixture
async def server(start_api: StartApi) -> Api:
    return await start_api(
        node_name="t1",
        sql_memory_limit=48 * MiB,
        sql_temp_limit=16 * MiB,
        sql_max_bytes=1 * MiB,
        sql_max_queries=1,
    )


async def post_sql(server: Api, query: str, *, arrow: bool = False, **body: Any) -> httpx.Response:
    headers = {"Accept": ARROW_STREAM} if arrow else {}
    return await server.http.post("/v1/sql", json={"query": query, **body}, headers=headers)


def assert_refused(response: httpx.Response, status: int, type_: str, *words: str) -> None:
    assert response.status_code == status, response.text[:500]
    error = response.json()
    assert error["type"] == type_, error
    for word in words:
        assert word in error["error"], (word, error["error"])


@pytest.mark.parametrize("arrow", [False, True])
async def test_a_wide_result_is_refused_before_its_body_is_built(server: Api, arrow: bool) -> None:
    response = await post_sql(server, WIDE, arrow=arrow, max_rows=1_000_000)
    assert_refused(response, 400, "QueryTooLarge", "--sql-max-bytes", "LIMIT", "max_rows")
    assert len(response.content) < 4096  # the answer is the error, not a partial body
    narrowed = await post_sql(server, "SELECT count(*), max(length(pad)) FROM (" + WIDE + ")")
    assert narrowed.status_code == 200 and narrowed.json()["rows"] == [[100000, 10000]]


async def test_a_small_enough_result_still_arrives_whole(server: Api) -> None:
    body = (await post_sql(server, "SELECT range FROM range(50000)", max_rows=50000)).json()
    assert body["row_count"] == 50000 and not body["truncated"]


async def test_over_the_memory_limit_is_a_400_and_the_writer_loses_nothing(
    server: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """The query and the writer share DuckDB's memory: when the writer runs short, the query
    gives way; no write is lost or reported as a disk fault."""
    history = server.node.history
    stop = threading.Event()
    written = 0

    def write() -> None:  # big outputs, so the writer needs DuckDB memory too
        nonlocal written
        start = datetime.now(UTC)
        while not stop.is_set():
            at = start + timedelta(seconds=written)
            history.append(Execution(
                id=f"{written}-t1", job_name="during", node_name="t1", group=written,
                attempt=1, started_at=at, finished_at=at, success=True, output="o" * 20000,
            ))  # fmt: skip
            written += 1
            if written % 100 == 0:
                history.flush()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        response = await post_sql(server, HUNGRY, timeout=60)
    finally:
        stop.set()
        await asyncio.to_thread(writer.join)
    assert_refused(response, 400, "QueryTooLarge", "--sql-memory-limit", "--sql-temp-limit")
    await asyncio.to_thread(history.flush)
    assert written > 0 and history.count("during") == written
    errors = [r for r in caplog.records if r.name.startswith("dkron_lab.history")]
    assert not [r.getMessage() for r in errors if r.levelno >= logging.ERROR]
    assert history.storage_fault is None
    assert (await server.http.get("/health")).status_code == 200


async def test_spill_files_stay_in_the_data_dir_under_the_temp_limit(server: Api) -> None:
    ((directory, size),) = server.node.history.query(
        "SELECT current_setting('temp_directory'), current_setting('max_temp_directory_size')"
    )
    assert Path(directory).parent == server.node.config.data_dir
    assert size == "272.0 MiB"  # queries are stopped at 16 MiB; the other 256 are the writer's


async def test_queries_beyond_the_limit_wait_then_hear_the_node_is_busy(server: Api) -> None:
    long = asyncio.ensure_future(post_sql(server, ENDLESS, timeout=3))
    while not server.node.history._queries:  # the long query holds the slot
        await asyncio.sleep(0.01)
    busy = await post_sql(server, "SELECT 1", timeout=0.5)
    assert_refused(busy, 503, "Unavailable", "--sql-max-queries", "busy")
    assert_refused(await long, 400, "QueryTimeout")
    waited = await post_sql(server, "SELECT 1 AS one", timeout=5)  # the slot is free again
    assert waited.json()["rows"] == [[1]]


async def test_a_query_gives_way_when_the_writer_runs_out_of_memory(server: Api) -> None:
    """What the writer does on DuckDB's "Out of Memory" before it retries a write: the running
    queries stop, each answered QueryTooLarge (a race to provoke for real, so called directly)."""
    history = server.node.history
    long = asyncio.ensure_future(post_sql(server, ENDLESS, timeout=30))
    while not history._queries:
        await asyncio.sleep(0.01)
    assert await asyncio.to_thread(history._preempt_queries) is True
    assert_refused(await long, 400, "QueryTooLarge", "--sql-memory-limit")
    assert await asyncio.to_thread(history._preempt_queries) is False  # none left to stop
