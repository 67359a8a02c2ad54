"""Issue 4's rules on a real cluster of processes: forbid, retries (same node and any node),
success codes, job chains, concurrency groups, run on a chosen node, cluster-wide pause,
webhooks and metrics.

One cluster (3 servers, 2 agents tagged ``role=worker``) serves every test of the module; each
test uses job names of its own. The agents run shell commands in their data dirs, so a file
put in one agent's data dir changes what a command does there and nowhere else.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dkron_lab.testing import free_port, wait_for
from tests.harness import Cluster
from tests.integration.test_notifications import Inbox, smtp_server

pytestmark = pytest.mark.slow

WORKERS = {"role": "worker"}


class Hooks:
    """A real HTTP server that records every webhook it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"] or 0))
                hooks.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of(self, path: str, job: str) -> list[dict[str, Any]]:
        return [body for where, body in list(self.received) if where == path and job in body["job"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    server = Hooks()
    yield server
    server.close()


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, hooks: Hooks, inbox: Inbox
) -> Iterator[Cluster]:
    payload = '{"job": "{{.JobName}}", "success": "{{.Success}}", "node": "{{.NodeName}}"}'
    args = [
        "--enable-prometheus",
        "--concurrency-groups", "etl=1",
        "--notify-on", "failure",
        "--webhook-endpoint", f"{hooks.url}/after",
        "--webhook-payload", payload,
        "--webhook-headers", "Content-Type: application/json",
        "--pre-webhook-endpoint", f"{hooks.url}/before",
        "--pre-webhook-payload", '{"job": "{{.JobName}}", "node": "{{.NodeName}}"}',
        "--mail-host", inbox.host, "--mail-port", str(inbox.port),
        "--mail-from", "dkron@example.com",
    ]  # fmt: skip
    with Cluster(
        tmp_path_factory.mktemp("semantics"),
        servers=3,
        agents=2,
        agent_tags=[WORKERS, WORKERS],
        extra_args=args,
        timeout=90.0,
    ) as running:
        yield running


def put(cluster: Cluster, name: str, command: str, **fields: Any) -> None:
    job = {
        "name": name,
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
        **fields,
    }
    server = cluster.servers[0]
    response = cluster.http.post(f"{cluster.url(server)}/v1/jobs", json=job)
    assert response.status_code == 201, response.text


def run(cluster: Cluster, name: str, *, node: str | None = None, server: str | None = None) -> int:
    params = {"node": node} if node else {}
    target = server or cluster.servers[0]
    response = cluster.http.post(f"{cluster.url(target)}/v1/jobs/{name}/run", params=params)
    return response.status_code


def finished(cluster: Cluster, name: str, count: int, timeout: float = 30.0) -> list[dict]:
    """The job's executions, oldest first, once ``count`` have finished on the first server."""

    def done() -> list[dict] | None:
        runs = [e for e in cluster.history(cluster.servers[0], name) if not _running(e)]
        return sorted(runs, key=lambda e: e["started_at"]) if len(runs) >= count else None

    return wait_for(done, timeout, f"{count} finished execution(s) of {name}")


def job(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(cluster.get(cluster.servers[0], f"/v1/jobs/{name}"))


def summed(cluster: Cluster, metric: str, **labels: str) -> float:
    """``metric``'s samples with ``labels``, added up over every node's ``/metrics``."""
    total = 0.0
    for node in cluster.nodes:
        text = cluster.http.get(f"{cluster.url(node)}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == metric and labels.items() <= sample.labels.items():
                    total += sample.value
    return total


def _running(execution: dict[str, Any]) -> bool:
    return execution["finished_at"].startswith("0001-")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- concurrency ------------------------------------------------------------------------------


def test_forbid_refuses_a_second_manual_run_while_one_runs(cluster: Cluster) -> None:
    put(cluster, "slow-forbid", "sleep 3", concurrency="forbid", tags={"role": "worker:1"})
    assert run(cluster, "slow-forbid") == 202
    second = cluster.http.post(f"{cluster.url(cluster.servers[1])}/v1/jobs/slow-forbid/run")
    assert second.status_code == 409
    assert "forbid" in second.json()["error"]
    finished(cluster, "slow-forbid", 1)
    assert run(cluster, "slow-forbid") == 202  # free again once the run has finished
    assert len(finished(cluster, "slow-forbid", 2)) == 2


def test_a_full_concurrency_group_queues_runs_in_order_and_shows_them(cluster: Cluster) -> None:
    for name in ("etl-one", "etl-two"):
        put(cluster, name, "sleep 2", concurrency_group="etl", tags={"role": "worker:1"})
    assert run(cluster, "etl-one") == 202
    assert run(cluster, "etl-two") == 202

    def queued() -> list[dict] | None:
        busy = cluster.get(cluster.servers[2], "/v1/busy") or []
        waiting = [e for e in busy if e.get("status") == "queued"]
        return waiting or None

    (waiting,) = wait_for(queued, 10.0, "a queued run of etl-two in /v1/busy")
    assert waiting["job_name"] == "etl-two"
    first = finished(cluster, "etl-one", 1)[0]
    second = finished(cluster, "etl-two", 1)[0]
    assert _time(second["started_at"]) >= _time(first["finished_at"])


def test_run_now_on_a_chosen_node_and_a_clear_error_for_an_unknown_one(cluster: Cluster) -> None:
    put(cluster, "where-am-i", "pwd", tags=WORKERS)
    assert run(cluster, "where-am-i", node="a2") == 202
    (execution,) = finished(cluster, "where-am-i", 1)
    assert execution["node_name"] == "a2" and execution["output"].strip().endswith("/a2")
    response = cluster.http.post(f"{cluster.url('s1')}/v1/jobs/where-am-i/run?node=nope")
    assert response.status_code == 404 and "not a member" in response.json()["error"]


# -- status codes and retries ----------------------------------------------------------------


def test_success_codes_decide_success(cluster: Cluster) -> None:
    put(cluster, "exit-three", "exit 3", tags={"role": "worker:1"})
    put(
        cluster,
        "exit-three-ok",
        "exit 3",
        tags={"role": "worker:1"},
        executor_config={"command": "exit 3", "shell": "true", "success_codes": "0,3"},
    )
    run(cluster, "exit-three")
    run(cluster, "exit-three-ok")
    assert finished(cluster, "exit-three", 1)[0]["success"] is False
    assert finished(cluster, "exit-three-ok", 1)[0]["success"] is True


def test_a_retry_that_succeeds_makes_the_group_a_success_with_every_attempt_shown(
    cluster: Cluster,
) -> None:
    # Fails the first time it runs on a node, succeeds the second time.
    command = (
        "n=$(cat flaky.count 2>/dev/null || echo 0); echo $((n+1)) > flaky.count; [ $n -ge 1 ]"
    )
    put(cluster, "flaky", command, retries=2, tags={"role": "worker:1"})
    assert run(cluster, "flaky") == 202
    first, second = finished(cluster, "flaky", 2)
    assert (first["attempt"], first["success"]) == (1, False)
    assert (second["attempt"], second["success"]) == (2, True)
    assert first["group"] == second["group"] and first["node_name"] == second["node_name"]
    saved = wait_for(
        lambda: (j := job(cluster, "flaky"))["status"] == "success" and j, 10.0, "success"
    )
    assert saved["success_count"] == 1 and saved["error_count"] == 1


def test_retries_stay_on_the_same_node_by_default_and_the_last_attempt_decides(
    cluster: Cluster,
) -> None:
    put(cluster, "always-fails", "exit 1", retries=2, retry_interval="200ms", tags=WORKERS)
    assert run(cluster, "always-fails", node="a1") == 202
    attempts = finished(cluster, "always-fails", 3)
    assert [(e["attempt"], e["node_name"]) for e in attempts] == [(1, "a1"), (2, "a1"), (3, "a1")]
    gaps = [
        (_time(b["started_at"]) - _time(a["finished_at"])).total_seconds()
        for a, b in zip(attempts, attempts[1:], strict=False)
    ]
    assert all(gap >= 0.2 for gap in gaps), gaps
    assert wait_for(lambda: job(cluster, "always-fails")["status"] == "failed", 10.0, "failed")


def test_retry_on_any_moves_a_retry_off_a_broken_node(cluster: Cluster) -> None:
    (cluster.node("a1").data_dir / "broken").touch()  # a1 cannot run the job
    try:
        put(cluster, "moves", "test ! -e broken", retries=1, retry_on="any", tags=WORKERS)
        assert run(cluster, "moves", node="a1") == 202
        first, second = finished(cluster, "moves", 2)
    finally:
        (cluster.node("a1").data_dir / "broken").unlink()
    assert (first["node_name"], first["attempt"], first["success"]) == ("a1", 1, False)
    assert (second["node_name"], second["attempt"], second["success"]) == ("a2", 2, True)
    assert wait_for(lambda: job(cluster, "moves")["status"] == "success", 10.0, "success")


# -- job chains -------------------------------------------------------------------------------


def test_a_child_runs_once_per_successful_parent_group_even_with_many_targets(
    cluster: Cluster,
) -> None:
    put(cluster, "everywhere", "true")  # no tags: every one of the five nodes
    one = {"role": "worker:1"}
    put(cluster, "after-everywhere", "true", parent_job="everywhere", schedule="", tags=one)
    put(cluster, "grandchild", "true", parent_job="after-everywhere", schedule="", tags=one)
    assert run(cluster, "everywhere") == 202
    assert len(finished(cluster, "everywhere", 5)) == 5
    (child,) = finished(cluster, "after-everywhere", 1)
    (grandchild,) = finished(cluster, "grandchild", 1)
    assert _time(grandchild["started_at"]) >= _time(child["finished_at"])
    assert len(cluster.history("s1", "after-everywhere")) == 1  # and not once per target
    assert job(cluster, "everywhere")["dependent_jobs"] == ["after-everywhere"]


def test_a_failed_parent_runs_no_child_and_a_parent_with_children_cannot_be_deleted(
    cluster: Cluster,
) -> None:
    put(cluster, "bad-parent", "exit 1", tags={"role": "worker:1"})
    put(cluster, "never-child", "true", parent_job="bad-parent", schedule="", tags=WORKERS)
    assert run(cluster, "bad-parent") == 202
    finished(cluster, "bad-parent", 1)
    put(cluster, "probe", "true", tags={"role": "worker:1"})  # a later run, to let time pass
    run(cluster, "probe")
    finished(cluster, "probe", 1)
    assert cluster.history("s1", "never-child") == []
    response = cluster.http.delete(f"{cluster.url('s1')}/v1/jobs/bad-parent")
    assert response.status_code == 409 and "never-child" in response.json()["error"]


def test_a_retry_that_succeeds_inside_a_chain_starts_the_child_once(cluster: Cluster) -> None:
    command = (
        "n=$(cat chain.count 2>/dev/null || echo 0); echo $((n+1)) > chain.count; [ $n -ge 1 ]"
    )
    put(cluster, "flaky-parent", command, retries=1, tags={"role": "worker:1"})
    put(
        cluster,
        "after-flaky",
        "true",
        parent_job="flaky-parent",
        schedule="",
        tags={"role": "worker:1"},
    )
    run(cluster, "flaky-parent")
    assert [e["success"] for e in finished(cluster, "flaky-parent", 2)] == [False, True]
    assert len(finished(cluster, "after-flaky", 1)) == 1


# -- run control, notifications, metrics -------------------------------------------------------


def test_pause_holds_for_the_whole_cluster_and_survives_a_restart(cluster: Cluster) -> None:
    paused = cluster.http.post(f"{cluster.url('s1')}/v1/pause")
    assert paused.json() == {"paused": True}
    try:
        follower = next(s for s in cluster.servers if s != "s1")
        refused = cluster.http.post(
            f"{cluster.url(follower)}/v1/jobs",
            json={"name": "while-paused", "schedule": "@manually", "executor": "shell",
                  "executor_config": {"command": "true"}},
        )  # fmt: skip
        assert refused.status_code == 503
        cluster.kill(follower)
        cluster.start(follower)
        assert cluster.get(follower, "/v1/pause") == {"paused": True}
    finally:
        cluster.http.post(f"{cluster.url('s1')}/v1/unpause")
    assert wait_for(lambda: cluster.get("s3", "/v1/pause") == {"paused": False}, 10.0, "unpaused")


def test_webhooks_fire_once_per_run_and_after_runs_only_on_failure(
    cluster: Cluster, hooks: Hooks
) -> None:
    put(cluster, "hooked-ok", "true", tags={"role": "worker:1"})  # pre-webhook: one target
    put(cluster, "hooked-bad", "exit 2", tags={"role": "worker:1"})
    run(cluster, "hooked-ok")
    run(cluster, "hooked-bad")
    finished(cluster, "hooked-ok", 1)
    finished(cluster, "hooked-bad", 1)
    wait_for(lambda: hooks.of("/after", "hooked-bad"), 15.0, "the failure webhook")
    wait_for(lambda: len(hooks.of("/before", "hooked-")) >= 2, 15.0, "two pre-run webhooks")
    (after,) = hooks.of("/after", "hooked-bad")
    assert after["success"] == "false" and after["node"] in ("a1", "a2")
    assert hooks.of("/after", "hooked-ok") == []  # --notify-on failure
    assert len(hooks.of("/before", "hooked-ok")) == 1  # once per run, not per output chunk

    def sent(kind: str) -> float:
        return summed(cluster, "dkron_notifications_total", kind=kind, result="success")

    # The metric moves too (once the sender has read the answers).
    wait_for(lambda: sent("webhook") >= 1 and sent("pre_webhook") >= 2, 10.0, "the counts")


def test_metrics_count_executions_by_job_and_result(cluster: Cluster) -> None:
    put(cluster, "counted", "true", tags={"role": "worker:1"})
    for _ in range(3):
        run(cluster, "counted")
        finished(cluster, "counted", _ + 1)

    def total() -> float:
        return summed(cluster, "dkron_executions_total", job_name="counted", result="success")

    assert wait_for(lambda: total() == 3, 10.0, "3 successes of 'counted' in /metrics")
    leader = cluster.leader()
    text = cluster.http.get(f"{cluster.url(leader)}/metrics").text
    assert "dkron_leader 1.0" in text or "dkron_is_leader 1.0" in text


def test_webhook_and_mail_settings_are_checked_at_start(tmp_path: Path) -> None:
    import sys
    from subprocess import run as run_command

    result = run_command(
        [sys.executable, "-m", "dkron_lab.cli", "agent", "--server", "--bootstrap-expect", "1",
         "--data-dir", str(tmp_path), "--http-addr", f"127.0.0.1:{free_port()}",
         "--bind-addr", f"127.0.0.1:{free_port()}", "--webhook-endpoint", "http://x",
         "--webhook-payload", "{{.Nope}}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Nope" in result.stderr and "Traceback" not in result.stderr


def test_limits_set_through_the_api_hold_for_the_whole_cluster(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    response = cluster.http.put(
        f"{cluster.url(follower)}/v1/concurrency", json={"groups": {"api-set": 1}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["groups"]["api-set"]["limit"] == 1
    try:
        for name in ("api-one", "api-two"):
            put(cluster, name, "sleep 1", concurrency_group="api-set", tags={"role": "worker:1"})
        run(cluster, "api-one")
        run(cluster, "api-two")
        shown = wait_for(
            lambda: (
                (c := cluster.get("s3", "/v1/concurrency"))["groups"]["api-set"]["queued"] and c
            ),
            10.0,
            "a run queued in GET /v1/concurrency",
        )
        assert shown["groups"]["api-set"] == {"limit": 1, "running": 1, "queued": 1}
        first = finished(cluster, "api-one", 1)[0]
        second = finished(cluster, "api-two", 1)[0]
        assert _time(second["started_at"]) >= _time(first["finished_at"])
    finally:
        cluster.http.put(f"{cluster.url('s1')}/v1/concurrency", json={"groups": {"api-set": 0}})


@pytest.mark.parametrize(
    "body",
    [{}, {"limit": -1}, {"limit": "2"}, {"groups": {"bad name!": 1}}, {"groups": []}, {"x": 1}],
)
def test_bad_limits_are_refused_and_change_nothing(cluster: Cluster, body: Any) -> None:
    before = cluster.get("s1", "/v1/concurrency")
    response = cluster.http.put(f"{cluster.url('s1')}/v1/concurrency", json=body)
    assert response.status_code == 400 and response.json()["type"] == "BadRequest"
    assert cluster.get("s1", "/v1/concurrency") == before


def test_a_node_runs_at_most_executor_concurrency_runs_and_shows_the_rest_queued(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path, servers=1, extra_args=["--executor-concurrency", "1"]) as single:
        for name in ("one-at-a-time", "waits-its-turn"):
            put(single, name, "sleep 1")
        run(single, "one-at-a-time")
        run(single, "waits-its-turn")

        def queued() -> list[dict] | None:
            busy = single.get("s1", "/v1/busy") or []
            return busy if {e.get("status") for e in busy} == {"running", "queued"} else None

        busy = wait_for(queued, 10.0, "one running and one queued run in /v1/busy")
        assert [e["status"] for e in busy] == ["running", "queued"]
        first = finished(single, "one-at-a-time", 1)[0]
        second = finished(single, "waits-its-turn", 1)[0]
        assert _time(second["started_at"]) >= _time(first["finished_at"])


def test_a_failed_run_is_mailed_to_its_owner_once(cluster: Cluster, inbox: Inbox) -> None:
    put(cluster, "mailed-bad", "exit 3", tags={"role": "worker:1"}, owner_email="ops@example.com")
    put(cluster, "mailed-ok", "true", tags={"role": "worker:1"}, owner_email="ops@example.com")
    run(cluster, "mailed-ok")
    run(cluster, "mailed-bad")
    finished(cluster, "mailed-ok", 1)
    finished(cluster, "mailed-bad", 1)

    def mailed() -> list:
        return [m for m in inbox.messages() if "mailed-" in str(m["Subject"])]

    (message,) = wait_for(mailed, 15.0, "the failure report by mail")
    assert message["To"] == "ops@example.com" and message["From"] == "dkron@example.com"
    assert "Failed" in message["Subject"] and "mailed-bad" in message["Subject"]
