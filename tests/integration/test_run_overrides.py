"""Run with overrides (issue 12): ``POST /v1/jobs/{job}`` with ``{"env": ..., "parameters": ...}``
changes that one run only, over real HTTP to a real one-node server (a subprocess: Raft, DuckDB,
the shell executor, a real Jupyter kernel for the notebook job). A body the server cannot use
is a 400 naming what is wrong, and nothing runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.testing import DkronNode, auth_headers

NOTEBOOKS = Path(__file__).parents[1] / "data" / "notebooks"


@pytest.fixture
def http(dkron_node: DkronNode) -> Iterator[httpx.Client]:
    headers = auth_headers(dkron_node.token)
    with httpx.Client(base_url=dkron_node.url, headers=headers, timeout=60) as client:
        yield client


def save(http: httpx.Client, name: str, executor: str, **config: str) -> None:
    job = {"name": name, "schedule": "@manually", "executor": executor, "executor_config": config}
    http.post("/v1/jobs", json=job).raise_for_status()


def outputs(http: httpx.Client, name: str) -> list[str]:
    answer = http.get(f"/v1/jobs/{name}/executions")
    answer.raise_for_status()
    return [execution["output"] for execution in answer.json()]


def run(http: httpx.Client, name: str, body: Any = None, path: str = "") -> httpx.Response:
    return http.post(f"/v1/jobs/{name}{path}", params={"wait": "true"}, json=body)


def test_env_overrides_reach_one_run_only(http: httpx.Client) -> None:
    save(http, "echo-x", "shell", command="echo x=$X y=$Y", shell="true", env="X=0,Y=ok")

    answer = run(http, "echo-x", {"env": {"X": "1"}})
    assert answer.status_code == 200, answer.text
    assert outputs(http, "echo-x") == ["x=1 y=ok\n"]

    # The stored job is unchanged, and so is the next run (the /run route, no body: Dkron's).
    assert http.post("/v1/jobs/echo-x/run", params={"wait": "true"}).status_code == 200
    assert sorted(outputs(http, "echo-x")) == ["x=0 y=ok\n", "x=1 y=ok\n"]
    assert http.get("/v1/jobs/echo-x").json()["executor_config"]["env"] == "X=***,Y=***"


def test_an_override_value_is_a_secret_in_the_output(http: httpx.Client) -> None:
    save(http, "leaky", "shell", command="echo token is $T", shell="true")

    assert run(http, "leaky", {"env": {"T": "hunter2-override"}}, "/run").status_code == 200

    assert outputs(http, "leaky") == ["token is ***\n"]


def test_an_empty_body_runs_the_job_as_it_is(http: httpx.Client) -> None:
    save(http, "plain", "shell", command="echo x=$X", shell="true", env="X=0")

    assert run(http, "plain", {}).status_code == 200
    answer = http.post(
        "/v1/jobs/plain",
        params={"wait": "true"},
        content=b"",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text

    assert outputs(http, "plain") == ["x=0\n", "x=0\n"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([1, 2], "must be a JSON object"),
        ({"envs": {"X": "1"}}, "unknown key(s) 'envs'"),
        ({"env": "X=1"}, "'env' in the run request body must be a JSON object"),
        ({"env": {"1X": "1"}}, "env name '1X' is not a variable name"),
        ({"env": {"X": 1}}, "env X: the value must be a string"),
        ({"env": {"X": "a,b"}}, "cannot contain a comma"),
        ({"parameters": {"days": 7}}, "parameter overrides are for notebook jobs"),
    ],
)
def test_a_bad_body_is_a_400_and_runs_nothing(http: httpx.Client, body: Any, fragment: str) -> None:
    save(http, "guarded", "shell", command="echo ran")

    answer = run(http, "guarded", body)

    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["error"]
    assert outputs(http, "guarded") == []


def test_a_body_that_is_not_json_is_a_400(http: httpx.Client) -> None:
    save(http, "guarded", "shell", command="echo ran")

    answer = http.post(
        "/v1/jobs/guarded", content=b"{env", headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]
    assert outputs(http, "guarded") == []


@pytest.mark.slow
def test_parameter_overrides_reach_the_notebook(http: httpx.Client, tmp_path: Path) -> None:
    notebook = tmp_path / "report.ipynb"
    shutil.copy(NOTEBOOKS / "report.ipynb", notebook)
    save(http, "report", "notebook", path=str(notebook), parameters='{"region": "eu"}')

    answer = run(http, "report", {"parameters": {"days": 7}})
    assert answer.status_code == 200, answer.text

    (output,) = outputs(http, "report")
    assert "'region': 'eu', 'days': 7" in output
    assert "env overrides are for shell jobs" in run(http, "report", {"env": {"X": "1"}}).text
