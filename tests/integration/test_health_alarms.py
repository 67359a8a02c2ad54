"""Health alarms for real (issue 13): a one-node server process, real shell runs, and a webhook
receiver on loopback. A run past ``max_duration`` makes its job overdue (said once) and, with
``on_overdue: kill``, is killed; a fire not started within ``max_lateness`` makes its job late;
each change and each recovery reaches the webhook once, with ``{{.Health}}``; fires missed
while no leader was elected are reported missed once, by the next leader."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dkron_lab.testing import DkronNode, auth_headers, free_port, one_node, wait_for
from tests.harness import Cluster

PAYLOAD = "{{.JobName}}|{{.Health}}|{{.Success}}|{{.Output}}"


class Hooks:
    """What the webhook received, one body per POST."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.lock = threading.Lock()

    def runs(self, job: str) -> list[str]:
        """The ``{{.Success}}`` of each run notification of ``job``."""
        with self.lock:
            parts = [body.split("|", 3) for body in self.bodies]
        return [p[2] for p in parts if p[0] == job and not p[1]]

    def health(self, job: str) -> list[str]:
        """The healths announced for ``job``, in order (run notifications have none)."""
        with self.lock:
            parts = [body.split("|", 3) for body in self.bodies]
        return [p[1] for p in parts if p[0] == job and p[1]]


@pytest.fixture
def hooks() -> Iterator[tuple[Hooks, str]]:
    received = Hooks()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            with received.lock:
                received.bodies.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
def node(tmp_path: Path, hooks: tuple[Hooks, str]) -> Iterator[DkronNode]:
    args = ["--webhook-endpoint", hooks[1], "--webhook-payload", PAYLOAD]
    args += ["--executor-concurrency", "1"]  # so a run can be held back past its grace
    args += ["--enable-prometheus"]
    with one_node(tmp_path / "dkron", args=args) as started:
        yield started


def shell(name: str, command: str, **fields: object) -> dict[str, object]:
    return {
        "name": name,
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
        **fields,
    }


def health_of(node: DkronNode, job: str) -> str:
    with node.client() as client:
        return str(client.job(job)["health"])


def test_a_run_past_max_duration_is_overdue_then_ok_and_each_is_said_once(node, hooks):
    received, _ = hooks
    with node.client() as client:
        client.put_job(shell("slow", "sleep 3", max_duration="1s"))
        client.run_job("slow")
    wait_for(lambda: health_of(node, "slow") == "overdue", 10, "slow overdue")
    with node.client() as client:
        assert "max_duration 1s" in client.job("slow")["health_reason"]
    # The same health in /metrics and in SQL.
    with httpx.Client(base_url=node.url, headers=auth_headers(node.token)) as http:
        metrics = http.get("/metrics").text
        query = {"query": "SELECT name, health FROM jobs WHERE health <> 'ok'"}
        rows = http.post("/v1/sql", json=query).json()["rows"]
    assert 'dkron_job_unhealthy{health="overdue",job="slow"} 1.0' in metrics
    assert 'dkron_jobs_health{health="overdue"} 1.0' in metrics
    assert rows == [["slow", "overdue"]]
    wait_for(lambda: health_of(node, "slow") == "ok", 15, "slow back to ok once the run ended")
    wait_for(lambda: received.health("slow") == ["overdue", "ok"], 5, "overdue, then ok, said")
    time.sleep(1.5)  # the next sweeps say nothing more
    assert received.health("slow") == ["overdue", "ok"]


def test_on_overdue_kill_stops_the_run_at_max_duration(node, hooks):
    received, _ = hooks
    started = time.monotonic()
    with node.client() as client:
        client.put_job(shell("hang", "sleep 60", max_duration="1s", on_overdue="kill"))
        client.run_job("hang")

        def ended() -> dict[str, object] | None:
            runs = client.executions("hang")
            return runs[0] if runs and runs[0].get("finished_at") else None

        run = wait_for(ended, 20, "the hung run killed and recorded")
    assert time.monotonic() - started < 15
    assert run["success"] is False
    assert "killed: the run passed max_duration 1s (on_overdue)" in str(run["output"])
    wait_for(lambda: health_of(node, "hang") == "failing", 10, "hang failing after the kill")
    # The failed run is announced by its own notification, not a second time as "failing".
    wait_for(lambda: received.runs("hang") == ["false"], 5, "the failed run said")
    assert "failing" not in received.health("hang")


def test_a_fire_held_back_past_its_grace_makes_the_job_late(node, hooks):
    """With one executor slot taken, a job due every second cannot start: late, once."""
    received, _ = hooks
    with node.client() as client:
        client.put_job(shell("hog", "sleep 6"))
        client.run_job("hog")
        wait_for(lambda: client.busy(), 10, "hog running")
        client.put_job(shell("tick", "true", schedule="@every 1s", max_lateness="1s"))
        wait_for(lambda: health_of(node, "tick") == "late", 10, "tick late")
        assert "has not started within 1s (max_lateness)" in client.job("tick")["health_reason"]
        # The slot frees: fires start in time again.
        wait_for(lambda: health_of(node, "tick") == "ok", 20, "tick back to ok")
        client.delete_job("tick")
    # Said once each (a loaded machine may start a later fire late again: a new change).
    wait_for(lambda: received.health("tick")[:2] == ["late", "ok"], 5, "late then ok, said once")


def test_fires_missed_while_no_leader_are_reported_missed_once_by_the_next(tmp_path, hooks):
    """Three servers; the leader is killed -9 while no other can be elected. The fires due while
    there was none are skipped by the next leader's catch-up (policy skip): the job is missed,
    said once, and every server says so."""
    received, url = hooks
    args = ["--webhook-endpoint", url, "--webhook-payload", PAYLOAD]
    tags = [{"box": f"s{i}"} for i in (1, 2, 3)]
    with Cluster(tmp_path, servers=3, server_tags=tags, extra_args=args) as cluster:
        cluster.start_all()
        leader = cluster.leader()
        worker = cluster.followers()[0]
        job = shell("tick", "true", schedule="@every 1s", catchup="skip", max_lateness="10s")
        job["tags"] = {"box": worker}  # runs on a follower, so the kill loses no run
        cluster.http.post(cluster.url(worker) + "/v1/jobs", json=job).raise_for_status()
        wait_for(lambda: len(cluster.history(worker, "tick")) >= 2, 20, "tick running")
        # The leader is killed -9, and a follower with it, so no quorum elects a new one for
        # a few seconds (a fast failover misses no fire); then the follower comes back.
        other = next(name for name in cluster.servers if name not in (leader, worker))
        cluster.kill(leader)
        cluster.kill(other)
        time.sleep(4)
        cluster.start(other)
        survivors = [worker, other]

        def said_missed() -> bool:
            return "missed" in received.health("tick")

        wait_for(said_missed, 30, "the missed fires said by the new leader")
        for name in survivors:
            wait_for(
                lambda name=name: (
                    (cluster.get(name, "/v1/jobs/tick") or {}).get("health") in ("missed", "ok")
                ),
                10,
                f"{name} knows the health",
            )
        # Fires run again: ok, said once; and "missed" was never said twice.
        wait_for(lambda: received.health("tick")[-1:] == ["ok"], 20, "back to ok")
        time.sleep(2)
        assert received.health("tick") == ["missed", "ok"]
