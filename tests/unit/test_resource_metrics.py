"""What finished executions used, in ``/metrics`` and statsd (dkron_lab/metrics.py)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dkron_lab.metrics import Metrics
from dkron_lab.model.execution import Execution, ResourceUsage

STARTED = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
MB = 1024 * 1024


def execution(usage: ResourceUsage | None, job: str = "nightly.report") -> Execution:
    return Execution(
        id="1-n1",
        job_name=job,
        node_name="n1",
        group=1,
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=2),
        success=True,
    ).with_usage(usage)


def samples(metrics: Metrics, family: str) -> dict[tuple[str, str], float]:
    """``(sample name, le) -> value`` of one histogram family."""
    body, _ = metrics.render()
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for found in text_string_to_metric_families(body.decode())
        if found.name == family
        for sample in found.samples
        if not sample.name.endswith("_created")
    }


def test_cpu_and_peak_memory_land_in_their_histograms_without_a_job_label() -> None:
    metrics = Metrics("n1")
    metrics.execution_finished(execution(ResourceUsage(
        cpu_user_seconds=0.25, cpu_system_seconds=0.05, max_rss_bytes=50 * MB
    )))  # fmt: skip
    metrics.execution_finished(execution(ResourceUsage(
        cpu_user_seconds=2.0, cpu_system_seconds=1.0, max_rss_bytes=None
    )))  # fmt: skip
    cpu = samples(metrics, "dkron_execution_cpu_seconds")
    assert cpu[("dkron_execution_cpu_seconds_count", "")] == 2
    assert cpu[("dkron_execution_cpu_seconds_sum", "")] == pytest.approx(3.3)
    assert cpu[("dkron_execution_cpu_seconds_bucket", "0.5")] == 1
    assert cpu[("dkron_execution_cpu_seconds_bucket", "5.0")] == 2
    memory = samples(metrics, "dkron_execution_max_rss_bytes")
    assert memory[("dkron_execution_max_rss_bytes_count", "")] == 1  # the second had no peak
    assert memory[("dkron_execution_max_rss_bytes_bucket", "1.6777216e+07")] == 0
    assert memory[("dkron_execution_max_rss_bytes_bucket", "6.7108864e+07")] == 1


def test_an_execution_that_was_not_measured_is_not_observed() -> None:
    metrics = Metrics("n1")
    metrics.execution_finished(execution(None))
    assert (
        samples(metrics, "dkron_execution_cpu_seconds")[("dkron_execution_cpu_seconds_count", "")]
        == 0
    )
    assert (
        samples(metrics, "dkron_execution_max_rss_bytes")[
            ("dkron_execution_max_rss_bytes_count", "")
        ]
        == 0
    )


def test_statsd_gets_cpu_as_a_timer_and_the_peak_as_a_gauge(statsd_socket: socket.socket) -> None:
    host, port = statsd_socket.getsockname()
    metrics = Metrics("n1", statsd_addr=f"{host}:{port}")
    try:
        metrics.execution_finished(execution(ResourceUsage(
            cpu_user_seconds=0.25, cpu_system_seconds=0.05, max_rss_bytes=50 * MB
        )))  # fmt: skip
        lines: list[str] = []
        while len(lines) < 4:
            lines += statsd_socket.recv(65535).decode("ascii").splitlines()
    finally:
        metrics.close()
    assert lines[2:] == [
        "dkron.execution_cpu.nightly_report:300.000000|ms",
        f"dkron.execution_max_rss.nightly_report:{50 * MB}|g",
    ]
