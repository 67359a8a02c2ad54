"""A run on an agent read through the server the browser talks to (issue 12): a server and an
agent as ``dkron-lab agent`` processes; the server relays the offset reads and the stream over
signed internal calls, the caller never talks to the agent, and secrets stay masked."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dkron_lab.testing import wait_for
from tests.harness import Cluster

pytestmark = pytest.mark.slow

SECRET = "relayed-s3cret"
COMMAND = 'for i in 1 2 3 4 5 6; do echo "$i key=$SECRET"; sleep 0.5; done'


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, servers=1, agents=1, agent_tags=[{"role": "worker"}]) as started:
        yield started


def running_on_agent(cluster: Cluster) -> dict[str, Any] | None:
    response = cluster.http.get(
        cluster.url("s1") + "/v1/executions", params={"status": "running", "job": "relayed"}
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found[0] if found else None


def test_the_server_relays_an_agents_output_by_offset_and_streamed(cluster: Cluster) -> None:
    job = {
        "name": "relayed",
        "schedule": "@every 1h",
        "tags": {"role": "worker"},
        "executor": "shell",
        "executor_config": {"command": COMMAND, "shell": "true", "env": f"SECRET={SECRET}"},
    }
    server = cluster.url("s1")
    assert cluster.http.post(server + "/v1/jobs", json=job).status_code == 201
    assert cluster.http.post(server + "/v1/jobs/relayed/run").status_code == 202
    execution = wait_for(lambda: running_on_agent(cluster), 10.0, "the run on a1")
    assert execution["node_name"] == "a1"
    output = f"{server}/v1/jobs/relayed/executions/{execution['id']}/output"

    first = cluster.http.get(output, params={"offset": 0}).json()
    assert first["offset"] == 0 and not first["done"]
    lines: list[tuple[float, dict[str, Any]]] = []
    with cluster.http.stream("GET", output + "/stream", timeout=30.0) as response:
        assert response.status_code == 200 and response.headers["X-Whom"] == "s1"
        for line in response.iter_lines():
            lines.append((time.monotonic(), json.loads(line)))
    chunks = [chunk for _, chunk in lines]
    text = "".join(chunk["data"] for chunk in chunks)
    assert text == "".join(f"{i} key=***\n" for i in range(1, 7))
    assert chunks[-1]["done"] and not any(chunk["done"] for chunk in chunks[:-1])
    with_data = [at for at, chunk in lines if chunk["data"]]
    assert lines[-1][0] - with_data[0] > 1.0, lines  # lines came while the agent ran it
    again = cluster.http.get(output, params={"offset": first["next"]}).json()
    assert again["done"] and first["data"] + again["data"] == text
    assert SECRET not in json.dumps(chunks)
