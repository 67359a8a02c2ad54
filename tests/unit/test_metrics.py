"""``dkron_lab.metrics``: every metric moves when its event happens, gauges come from the node's
callable at scrape time, and the same events reach a real statsd socket as UDP packets.

Scrapes go through ``Metrics.render()`` and prometheus_client's own parsers, as Prometheus would
read them. docs/metrics.md is checked against the scrape both ways."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from dkron_lab.config import Config
from dkron_lab.errors import ValidationError
from dkron_lab.metrics import (
    LATENESS_BUCKETS,
    NOTIFICATION_KINDS,
    Gauges,
    Metrics,
    statsd_name,
)
from dkron_lab.model.execution import Execution
from dkron_lab.testing import FakeClock

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
STARTED = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)

LEVELS = Gauges(
    is_leader=True,
    raft_term=7,
    raft_commit_index=1234,
    members_by_status={"alive": 3, "failed": 1},
    executions_running=2,
    executions_queued=5,
    queue_lengths={"local": 4, "global": 9},
    jobs=11,
    paused=True,
)


def execution(job: str = "nightly", *, success: bool = True, seconds: float = 1.5) -> Execution:
    return Execution(
        id=f"1-{job}",
        job_name=job,
        node_name="n1",
        group=1,
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=seconds),
        success=success,
    )


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: ``(name, sorted labels) -> value``."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return scrape(metrics).get((name, tuple(sorted(labels.items()))))


def families(metrics: Metrics) -> dict[str, str]:
    """Family name -> type, as Prometheus sees them."""
    body, _ = metrics.render()
    return {f.name: f.type for f in text_string_to_metric_families(body.decode())}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics("n1", lambda: LEVELS)


def statsd_addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


def receive_lines(sock: socket.socket, count: int) -> list[str]:
    """At least ``count`` statsd lines (a packet may carry several, one per line)."""
    lines: list[str] = []
    while len(lines) < count:
        lines += sock.recv(65535).decode("ascii").splitlines()
    return lines


# -- Prometheus: events ---------------------------------------------------------------------------


def test_finished_executions_are_counted_by_job_and_result(metrics: Metrics) -> None:
    metrics.execution_finished(execution("nightly", success=True))
    metrics.execution_finished(execution("nightly", success=True))
    metrics.execution_finished(execution("nightly", success=False))
    metrics.execution_finished(execution("hourly", success=False))

    samples = scrape(metrics)
    counts = {
        labels: v for (name, labels), v in samples.items() if name == "dkron_executions_total"
    }
    assert counts == {
        (("job_name", "nightly"), ("result", "success")): 2,
        (("job_name", "nightly"), ("result", "failed")): 1,
        (("job_name", "hourly"), ("result", "failed")): 1,
    }


def test_execution_duration_is_observed_from_started_and_finished(metrics: Metrics) -> None:
    metrics.execution_finished(execution("nightly", seconds=2.5))
    metrics.execution_finished(execution("nightly", seconds=40))

    metrics.execution_finished(execution("hourly", seconds=1, success=False))

    assert value(metrics, "dkron_execution_duration_seconds_count", result="success") == 2
    assert value(metrics, "dkron_execution_duration_seconds_sum", result="success") == 42.5
    bucket = "dkron_execution_duration_seconds_bucket"
    assert value(metrics, bucket, result="success", le="5.0") == 1
    assert value(metrics, bucket, result="success", le="60.0") == 2
    assert value(metrics, "dkron_execution_duration_seconds_count", result="failed") == 1


def test_a_running_execution_is_not_counted(metrics: Metrics) -> None:
    running = Execution(id="1-n1", job_name="nightly", node_name="n1", group=1, started_at=STARTED)

    metrics.execution_finished(running)

    assert value(metrics, "dkron_executions_total", job_name="nightly", result="success") is None
    assert value(metrics, "dkron_execution_duration_seconds_count", result="success") is None


def test_lateness_lands_in_millisecond_to_second_buckets(metrics: Metrics) -> None:
    metrics.lateness(0.003)
    metrics.lateness(0.2)
    metrics.lateness(4.0)

    bucket = "dkron_scheduling_lateness_seconds_bucket"
    assert value(metrics, bucket, le="0.001") == 0
    assert value(metrics, bucket, le="0.005") == 1
    assert value(metrics, bucket, le="0.25") == 2
    assert value(metrics, bucket, le="5.0") == 3
    assert value(metrics, "dkron_scheduling_lateness_seconds_count") == 3
    assert value(metrics, "dkron_scheduling_lateness_seconds_sum") == pytest.approx(4.203)
    assert LATENESS_BUCKETS[0] == 0.001


def test_an_early_start_counts_as_no_lateness(metrics: Metrics) -> None:
    metrics.lateness(-0.5)

    assert value(metrics, "dkron_scheduling_lateness_seconds_sum") == 0
    assert value(metrics, "dkron_scheduling_lateness_seconds_bucket", le="0.001") == 1


def test_fires_and_skipped_fires_are_counted(metrics: Metrics) -> None:
    assert value(metrics, "dkron_fires_total") == 0
    assert value(metrics, "dkron_fires_skipped_total") == 0

    metrics.fired(3)
    metrics.fired()
    metrics.fired(0)
    metrics.skipped(2)

    assert value(metrics, "dkron_fires_total") == 4
    assert value(metrics, "dkron_fires_skipped_total") == 2


def test_a_negative_count_is_a_programming_error(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        metrics.fired(-1)


def test_notifications_are_counted_by_kind_and_result(metrics: Metrics) -> None:
    for kind in NOTIFICATION_KINDS:
        for result in ("success", "failed"):
            assert value(metrics, "dkron_notifications_total", kind=kind, result=result) == 0

    metrics.notification("webhook", True)
    metrics.notification("webhook", True)
    metrics.notification("mail", False)
    metrics.notification("pre_webhook", True)

    total = "dkron_notifications_total"
    assert value(metrics, total, kind="webhook", result="success") == 2
    assert value(metrics, total, kind="mail", result="failed") == 1
    assert value(metrics, total, kind="mail", result="success") == 0
    assert value(metrics, total, kind="pre_webhook", result="success") == 1


def test_an_unknown_notification_kind_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="unknown notification kind 'sms'"):
        metrics.notification("sms", True)


def test_forget_job_drops_its_series(metrics: Metrics) -> None:
    metrics.execution_finished(execution("gone", success=True))
    metrics.execution_finished(execution("gone", success=False))
    metrics.execution_finished(execution("kept"))

    metrics.forget_job("gone")
    metrics.forget_job("never-ran")

    labels = {dict(lbl).get("job_name") for (_, lbl) in scrape(metrics)}
    assert "gone" not in labels
    assert "kept" in labels


# -- Prometheus: gauges ---------------------------------------------------------------------------


def test_gauges_come_from_the_callable_at_scrape_time() -> None:
    current = [LEVELS]
    metrics = Metrics("n1", lambda: current[0])

    samples = scrape(metrics)
    assert samples[("dkron_is_leader", ())] == 1
    assert samples[("dkron_raft_term", ())] == 7
    assert samples[("dkron_raft_commit_index", ())] == 1234
    assert samples[("dkron_executions_running", ())] == 2
    assert samples[("dkron_executions_queued", ())] == 5
    assert samples[("dkron_jobs", ())] == 11
    assert samples[("dkron_paused", ())] == 1
    assert samples[("dkron_members", (("status", "alive"),))] == 3
    assert samples[("dkron_members", (("status", "failed"),))] == 1
    assert samples[("dkron_queue_length", (("queue", "global"),))] == 9
    assert samples[("dkron_queue_length", (("queue", "local"),))] == 4

    current[0] = Gauges(raft_term=8, queue_lengths={"local": 0})

    samples = scrape(metrics)
    assert samples[("dkron_is_leader", ())] == 0
    assert samples[("dkron_raft_term", ())] == 8
    assert samples[("dkron_queue_length", (("queue", "local"),))] == 0
    assert ("dkron_queue_length", (("queue", "global"),)) not in samples


def test_gauges_are_typed_as_gauges(metrics: Metrics) -> None:
    found = families(metrics)

    for name in ("dkron_is_leader", "dkron_raft_term", "dkron_members", "dkron_queue_length"):
        assert found[name] == "gauge"
    assert found["dkron_executions"] == "counter"
    assert found["dkron_scheduling_lateness_seconds"] == "histogram"


def test_node_info_names_the_node_its_role_and_version() -> None:
    from dkron_lab._version import __version__

    metrics = Metrics("agent-7", role="agent")

    info = {lbl: v for (name, lbl), v in scrape(metrics).items() if name == "dkron_node_info"}
    assert info == {(("node", "agent-7"), ("role", "agent"), ("version", __version__)): 1}


def test_without_a_callable_only_the_events_and_node_info_are_served() -> None:
    metrics = Metrics("n1")

    found = families(metrics)
    assert "dkron_node_info" in found
    assert "dkron_fires" in found
    assert "dkron_is_leader" not in found


def test_a_failing_callable_does_not_fail_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Gauges:
        raise RuntimeError("node is stopping")

    metrics = Metrics("n1", broken)
    metrics.fired(2)

    with caplog.at_level(logging.WARNING, logger="dkron_lab.metrics"):
        samples = scrape(metrics)

    assert samples[("dkron_fires_total", ())] == 2
    assert ("dkron_is_leader", ()) not in samples
    assert "gauges could not be read" in caplog.text


def test_each_node_has_its_own_registry() -> None:
    first, second = Metrics("a"), Metrics("b")

    first.fired(5)

    assert value(first, "dkron_fires_total") == 5
    assert value(second, "dkron_fires_total") == 0


# -- Prometheus: exposition formats ---------------------------------------------------------------


def test_openmetrics_is_served_when_the_scraper_asks_for_it(metrics: Metrics) -> None:
    metrics.fired(3)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

    body, content_type = metrics.render(accept)

    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    parsed = openmetrics_families(body.decode())  # type: ignore[no-untyped-call]
    fires = {f.name: f for f in parsed}["dkron_fires"]
    assert [s.value for s in fires.samples if s.name == "dkron_fires_total"] == [3]


# -- the documentation ----------------------------------------------------------------------------


def exercised() -> Metrics:
    """A node's metrics after one of every event, so every series exists."""
    metrics = Metrics("n1", lambda: LEVELS)
    metrics.execution_finished(execution())
    metrics.lateness(0.01)
    metrics.fired()
    metrics.skipped()
    metrics.notification("webhook", True)
    return metrics


def documented_metrics() -> set[str]:
    """Metric names in the first column of docs/metrics.md's tables."""
    return set(re.findall(r"^\| `(dkron_\w+)`", DOCS.read_text(), flags=re.MULTILINE))


def served_metrics(metrics: Metrics) -> set[str]:
    """The names a Prometheus user types: counters with ``_total``, the rest as families."""
    names = set()
    for name, kind in families(metrics).items():
        if name.endswith("_created"):
            continue  # prometheus_client's creation timestamps; the docs mention them once
        names.add(f"{name}_total" if kind == "counter" else name)
    return names


def test_every_documented_metric_is_served_and_every_served_one_documented() -> None:
    documented = documented_metrics()

    assert len(documented) >= 15
    assert served_metrics(exercised()) == documented


def test_every_documented_statsd_name_is_in_the_docs_once() -> None:
    text = DOCS.read_text()
    for stat in (
        "dkron.executions.success.<job>",
        "dkron.executions.failed.<job>",
        "dkron.execution_duration.<job>",
        "dkron.scheduling_lateness",
        "dkron.fires.fired",
        "dkron.fires.skipped",
        "dkron.notifications.<kind>.<result>",
        "dkron.node.<node>.is_leader",
        "dkron.node.<node>.members.<status>",
        "dkron.node.<node>.queue_length.<queue>",
    ):
        assert f"`{stat}`" in text


# -- statsd ---------------------------------------------------------------------------------------


def test_events_reach_statsd_as_they_happen(statsd_socket: socket.socket) -> None:
    metrics = Metrics("n1", statsd_addr=statsd_addr(statsd_socket))
    try:
        metrics.execution_finished(execution("nightly.report", success=True, seconds=2))
        metrics.execution_finished(execution("nightly.report", success=False, seconds=1))
        metrics.lateness(0.25)
        metrics.fired(3)
        metrics.skipped(2)
        metrics.notification("pre_webhook", False)

        lines = receive_lines(statsd_socket, 8)
    finally:
        metrics.close()

    assert lines == [
        "dkron.executions.success.nightly_report:1|c",
        "dkron.execution_duration.nightly_report:2000.000000|ms",
        "dkron.executions.failed.nightly_report:1|c",
        "dkron.execution_duration.nightly_report:1000.000000|ms",
        "dkron.scheduling_lateness:250.000000|ms",
        "dkron.fires.fired:3|c",
        "dkron.fires.skipped:2|c",
        "dkron.notifications.pre_webhook.failed:1|c",
    ]


def test_gauges_are_pushed_to_statsd_under_the_node(statsd_socket: socket.socket) -> None:
    metrics = Metrics("node.one", lambda: LEVELS, statsd_addr=statsd_addr(statsd_socket))
    try:
        metrics.push_gauges()
        lines = receive_lines(statsd_socket, 11)
    finally:
        metrics.close()

    assert sorted(lines) == sorted(
        [
            "dkron.node.node_one.is_leader:1|g",
            "dkron.node.node_one.raft_term:7|g",
            "dkron.node.node_one.raft_commit_index:1234|g",
            "dkron.node.node_one.executions_running:2|g",
            "dkron.node.node_one.executions_queued:5|g",
            "dkron.node.node_one.jobs:11|g",
            "dkron.node.node_one.paused:1|g",
            "dkron.node.node_one.members.alive:3|g",
            "dkron.node.node_one.members.failed:1|g",
            "dkron.node.node_one.queue_length.local:4|g",
            "dkron.node.node_one.queue_length.global:9|g",
        ]
    )


async def test_run_statsd_pushes_gauges_every_interval(statsd_socket: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    statsd_socket.setblocking(False)
    term = [1]
    clock = FakeClock()
    metrics = Metrics(
        "n1", lambda: Gauges(raft_term=term[0]), statsd_addr=statsd_addr(statsd_socket)
    )

    async def next_term() -> str:
        while True:
            packet = (await loop.sock_recv(statsd_socket, 65535)).decode("ascii")
            for line in packet.splitlines():
                if line.startswith("dkron.node.n1.raft_term:"):
                    return line

    task = asyncio.create_task(metrics.run_statsd(10, clock=clock))
    try:
        assert await asyncio.wait_for(next_term(), 20) == "dkron.node.n1.raft_term:1|g"
        term[0] = 2
        await asyncio.wait_for(_until(lambda: clock.sleepers == 1), 20)
        clock.advance(10)
        assert await asyncio.wait_for(next_term(), 20) == "dkron.node.n1.raft_term:2|g"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        metrics.close()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_run_statsd_returns_at_once_without_an_address() -> None:
    await asyncio.wait_for(Metrics("n1").run_statsd(10, clock=FakeClock()), 5)


def test_an_unresolvable_statsd_host_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"statsd-addr 'no-such-host\.invalid:8125'"):
        Metrics("n1", statsd_addr="no-such-host.invalid:8125")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("nightly-report_2", "nightly-report_2"), ("a.b", "a_b"), ("café", "caf_"), ("", "_")],
)
def test_statsd_names_are_one_ascii_segment(name: str, expected: str) -> None:
    assert statsd_name(name) == expected


# -- from the config ------------------------------------------------------------------------------


def test_from_config_reads_the_switches(statsd_socket: socket.socket) -> None:
    config = Config(
        node_name="a1", server=False, enable_prometheus=True, statsd_addr=statsd_addr(statsd_socket)
    )

    metrics = Metrics.from_config(config)
    try:
        assert metrics.prometheus_enabled
        assert metrics.statsd_enabled
        info = [lbl for (name, lbl) in scrape(metrics) if name == "dkron_node_info"]
        assert dict(info[0])["node"] == "a1"
        assert dict(info[0])["role"] == "agent"
    finally:
        metrics.close()

    off = Metrics.from_config(Config(node_name="s1", server=True))
    assert not off.prometheus_enabled
    assert not off.statsd_enabled
