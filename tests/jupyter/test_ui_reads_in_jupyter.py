"""What the web UI reads (issue 12) served by the extension inside a real Jupyter server: the
executions listing, the jobs list's statistics and a running output's stream, through
Jupyter's ``APIHandler`` (its authentication, and its habit of stamping JSON on answers)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dkron_lab.jupyter.extension import DkronLab

JOB = {
    "name": "slow",
    "schedule": "@every 1h",
    "executor": "shell",
    "executor_config": {"command": "for i in 1 2 3; do echo $i; sleep 0.3; done", "shell": "true"},
}


async def get(jp_fetch: Any, *parts: str, **params: str) -> Any:
    response = await jp_fetch("dkron", *parts, params=params)
    assert response.code == 200
    return response


async def test_the_listing_stats_and_stream_are_served_in_jupyter(
    dkron_app: DkronLab, jp_fetch: Any
) -> None:
    await jp_fetch("dkron", "v1", "jobs", method="POST", body=json.dumps(JOB))
    await jp_fetch("dkron", "v1", "jobs", "slow", "run", method="POST", body="")
    for _ in range(200):
        running = json.loads((await get(jp_fetch, "v1", "executions", status="running")).body)
        if running:
            break
        await asyncio.sleep(0.02)
    (execution,) = running
    stream = await get(
        jp_fetch, "v1", "jobs", "slow", "executions", execution["id"], "output", "stream"
    )
    assert stream.headers["Content-Type"] == "application/x-ndjson"
    chunks = [json.loads(line) for line in stream.body.decode().splitlines()]
    assert "".join(c["data"] for c in chunks) == "1\n2\n3\n" and chunks[-1]["done"]
    jobs = json.loads((await get(jp_fetch, "v1", "jobs", stats="true")).body)
    assert set(jobs[0]) >= {"last_results", "median_duration"}
