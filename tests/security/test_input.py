"""Malformed input is refused at the edge with a 400 that names the field, and never fails
anyone else's request (issue 10, points 9 and 10), over a real one-node server (Raft, DuckDB,
shell executor) behind ``serve``, called with httpx as a client would.

On the code before the fix, a command holding a lone surrogate (JSON ``"\\ud800"``) answered
500 and failed the valid creates that shared its Raft batch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.security.conftest import StartApi

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def api(start_api: StartApi) -> httpx.AsyncClient:
    """A client that sends JSON, of a node that keeps the last 1000 bytes of a run's output."""
    started = await start_api(output_limit=1000)
    started.http.headers.update(JSON)
    return started.http


def job(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": "true"},
        **fields,
    }


def raw(document: dict[str, Any], text: str, replacement: str) -> bytes:
    """``document`` as JSON with ``text`` replaced verbatim: how a lone ``\\ud800`` escape (which
    ``json.dumps`` would never write) reaches the server."""
    return json.dumps(document).replace(text, replacement).encode()


def assert_bad_request(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, (word, message)


async def test_a_lone_surrogate_is_a_400_naming_the_field(api: httpx.AsyncClient) -> None:
    bad = job("bad", executor_config={"command": "echo SURROGATE"})
    response = await api.post("/v1/jobs", content=raw(bad, "SURROGATE", "\\ud800"))
    assert_bad_request(response, "executor_config.command", "surrogate")
    key = raw(job("bad2", tags={"KEY": "x"}), "KEY", "k\\udfff")
    assert_bad_request(await api.post("/v1/jobs", content=key), "tags", "surrogate")
    paired = raw(job("emoji", displayname="E"), '"E"', '"\\ud83d\\ude00"')  # a valid pair
    created = await api.post("/v1/jobs", content=paired)
    assert created.status_code == 201 and created.json()["displayname"] == "\U0001f600"
    assert (await api.get("/v1/jobs/bad")).status_code == 404


async def test_bad_writes_never_fail_the_valid_ones_sent_with_them(
    api: httpx.AsyncClient,
) -> None:
    good = [api.post("/v1/jobs", json=job(f"good-{i}")) for i in range(30)]
    bad = [
        api.post("/v1/jobs", content=raw(job(f"bad-{i}", displayname="X"), '"X"', '"\\ud800"'))
        for i in range(4)
    ]
    answers = await asyncio.gather(*good[:15], *bad, *good[15:])
    goods, bads = answers[:15] + answers[19:], answers[15:19]
    assert [r.status_code for r in goods] == [201] * 30, [r.text for r in goods]
    for response in bads:
        assert_bad_request(response, "displayname", "surrogate")
    listed = (await api.get("/v1/jobs")).json()
    assert sorted(j["name"] for j in listed) == sorted(f"good-{i}" for i in range(30))


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"retry_interval": "99999999999999999999h", "retries": 1}, "retry_interval"),
        ({"schedule": "@every 9999999999999h"}, "schedule"),
        ({"executor_config": {"command": "true", "timeout": "99999999999999999h"}}, "timeout"),
    ],
)
async def test_an_oversized_duration_is_a_400(
    api: httpx.AsyncClient, fields: dict[str, Any], word: str
) -> None:
    response = await api.post("/v1/jobs", json=job("long", **fields))
    assert_bad_request(response, word)
    assert (await api.get("/v1/jobs/long")).status_code == 404


@pytest.mark.parametrize(
    ("output_path", "word"),
    [
        ("../escaped-{job}.ipynb", "outside the notebook's folder"),
        ("runs/../../escaped.ipynb", "outside the notebook's folder"),
        ("/etc/cron.d/{job}", "outside the notebook's folder"),
        ("/srv/notebooks-other/{job}.ipynb", "outside the notebook's folder"),
    ],
)
async def test_a_notebook_output_path_out_of_its_folder_is_refused(
    api: httpx.AsyncClient, output_path: str, word: str
) -> None:
    config = {"path": "/srv/notebooks/report.ipynb", "output_path": output_path}
    response = await api.post(
        "/v1/jobs", json=job("nb", executor="notebook", executor_config=config)
    )
    assert_bad_request(response, word, "'/srv/notebooks'")
    assert (await api.get("/v1/jobs/nb")).status_code == 404


@pytest.mark.parametrize(
    "output_path", ["runs/{job}/{date}.ipynb", "/srv/notebooks/runs/{job}.ipynb", "a/../b.ipynb"]
)
async def test_a_notebook_output_path_inside_its_folder_is_saved(
    api: httpx.AsyncClient, output_path: str
) -> None:
    config = {"path": "/srv/notebooks/report.ipynb", "output_path": output_path}
    response = await api.post(
        "/v1/jobs", json=job("nb", executor="notebook", executor_config=config)
    )
    assert response.status_code == 201, response.text


async def test_output_cut_to_the_limit_is_flagged_truncated(api: httpx.AsyncClient) -> None:
    """The fixture's ``--output-limit`` is 1000 bytes; the command prints 200 kB."""
    loud = job(
        "loud",
        executor_config={"command": "head -c 200000 /dev/zero | tr '\\0' x", "shell": "true"},
    )
    assert (await api.post("/v1/jobs", json=loud)).status_code == 201
    ran = await api.post("/v1/jobs/loud/run?wait=true")
    assert ran.status_code == 200, ran.text
    quiet = job("quiet", executor_config={"command": "echo hello"})
    assert (await api.post("/v1/jobs", json=quiet)).status_code == 201
    assert (await api.post("/v1/jobs/quiet/run?wait=true")).status_code == 200
    for query in ("", "?output_size_limit=100000"):
        (execution,) = (await api.get(f"/v1/jobs/loud/executions{query}")).json()
        assert execution["output_truncated"] is True, execution
        assert execution["output"].startswith("[output truncated")
        assert execution["output"].endswith("x" * 500) and len(execution["output"]) <= 1000
        (execution,) = (await api.get(f"/v1/jobs/quiet/executions{query}")).json()
        assert execution["output_truncated"] is False and execution["output"] == "hello\n"
