"""A third-party executor and processor, installed the way pip installs a package (a module
and a ``.dist-info`` with entry points on the path), run in a cluster of real processes."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkron_lab.testing import install_plugin, wait_for
from tests.harness import Cluster

pytestmark = pytest.mark.slow

PLUGIN = '''
"""A third-party plugin: an executor that shouts its text, a processor that stamps output."""

from dataclasses import replace

from dkron_lab.errors import InvalidJob
from dkron_lab.plugins import ExecutorResult


class Shout:
    def validate(self, config):
        if not config.get("text"):
            raise InvalidJob('shout executor: "text" is required')

    async def execute(self, request, emit):
        data = (request.config["text"].upper() + "!").encode()
        emit(data)
        return ExecutorResult(success=True, output=data)


class Stamp:
    def process(self, execution, config):
        return replace(execution, output=f"[{config.get('label', 'stamped')}] {execution.output}")
'''


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    install_plugin(
        tmp_path / "site",
        "shout_plugin",
        textwrap.dedent(PLUGIN),
        {
            "dkron_lab.executors": {"shout": "shout_plugin:Shout"},
            "dkron_lab.processors": {"stamp": "shout_plugin:Stamp"},
        },
        monkeypatch=monkeypatch,
    )
    with Cluster(tmp_path / "nodes", servers=1, agents=1, agent_tags=[{"role": "w"}]) as running:
        yield running


def test_a_third_party_executor_and_processor_run_on_an_agent(cluster: Cluster) -> None:
    url = cluster.url("s1")
    job = {
        "name": "shouting",
        "schedule": "@manually",
        "executor": "shout",
        "executor_config": {"text": "hello"},
        "processors": {"stamp": {"label": "3rd-party", "forward": "true"}},
        "tags": {"role": "w"},
    }
    assert cluster.http.post(f"{url}/v1/jobs", json=job).status_code == 201
    assert cluster.http.post(f"{url}/v1/jobs/shouting/run").status_code == 202
    (execution,) = wait_for(lambda: cluster.history("s1", "shouting"), 30.0, "the run")
    execution = wait_for(
        lambda: next(iter(e for e in cluster.history("s1", "shouting") if e["success"]), None),
        30.0,
        "a successful run",
    )
    assert execution["node_name"] == "a1"
    assert execution["output"] == "[3rd-party] HELLO!"


def test_the_plugins_own_checks_refuse_a_bad_job_at_save_time(cluster: Cluster) -> None:
    bad = {"name": "mute", "schedule": "@manually", "executor": "shout", "executor_config": {}}
    response = cluster.http.post(f"{cluster.url('s1')}/v1/jobs", json=bad)
    assert response.status_code == 400 and '"text" is required' in response.json()["error"]
    unknown = {**bad, "name": "other", "executor": "whisper"}
    response = cluster.http.post(f"{cluster.url('s1')}/v1/jobs", json=unknown)
    assert response.status_code == 400 and "shout" in response.json()["error"]
