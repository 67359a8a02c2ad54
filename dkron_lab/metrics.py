"""What a node counts and measures, for Prometheus (``GET /metrics``) and statsd.

Dkron documents metrics it never exports (its executions counters go to a sink nobody
configured). Here every metric lives in one place, ``Metrics``, and docs/metrics.md lists exactly
these; the unit tests check that each one moves.

One ``Metrics`` per node, each with its own ``CollectorRegistry``: several nodes share a process
in tests and inside Jupyter (whose server has metrics of its own in the global registry).

The node reports events as they happen (``execution_finished``, ``lateness``, ``fired``,
``skipped``, ``notification``); levels (leader, Raft term, queue lengths, ...) are read from a
callable the node supplies, at scrape time for Prometheus and every ``interval`` seconds by
``run_statsd`` for statsd. Events go to statsd as they happen, as fire-and-forget UDP packets.

Labels follow what Prometheus users expect: the scrape adds ``instance`` and ``job`` itself, so
the job's name is ``job_name`` (a ``job`` label would be renamed ``exported_job`` on ingestion)
and the node's name is not repeated on every series but given once by ``dkron_node_info``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import statsd  # ships no type hints (see [tool.mypy] in pyproject.toml)
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from dkron_lab._version import __version__
from dkron_lab.clock import Clock, SystemClock
from dkron_lab.config import Config, split_host_port
from dkron_lab.errors import ValidationError
from dkron_lab.model.execution import Execution

__all__ = [
    "CPU_BUCKETS",
    "DURATION_BUCKETS",
    "MEMORY_BUCKETS",
    "LATENESS_BUCKETS",
    "NOTIFICATION_KINDS",
    "Gauges",
    "Metrics",
    "statsd_name",
]

log = logging.getLogger(__name__)

NOTIFICATION_KINDS: Final = ("webhook", "pre_webhook", "mail")
"""The ``kind`` values of ``dkron_notifications_total``, all exported from the start at 0."""

LATENESS_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Seconds: a healthy leader starts within milliseconds; seconds mean it is overloaded."""

DURATION_BUCKETS: Final = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
)  # fmt: skip
"""Seconds: jobs run from milliseconds (an HTTP ping) to hours (a nightly notebook)."""

CPU_BUCKETS: Final = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
"""CPU seconds of a run (user plus system, its whole process tree): a shell one-liner uses
milliseconds, a notebook's runner and kernel a second before the first cell."""

MEMORY_BUCKETS: Final = tuple(float(2**n) * 1024 * 1024 for n in range(0, 16, 2))
"""Bytes of a run's peak memory: 1 MB, 4 MB, 16 MB ... 16 GB (powers of 4)."""

_RESULTS: Final = ("success", "failed")

_LEVELS: Final = (
    ("is_leader", "1 if this node is the Raft leader (it runs the scheduler)."),
    ("raft_term", "The Raft term this node is in."),
    ("raft_commit_index", "The last Raft log index known committed."),
    ("executions_running", "Executions running on this node now."),
    ("executions_queued", "Executions accepted here, waiting to start."),
    ("jobs", "Jobs defined in the cluster, as this node's replica holds them."),
    ("paused", "1 if new job submissions are paused."),
)
"""The unlabelled gauges: ``Gauges`` field (the name after ``dkron_`` or ``dkron.node.<node>.``)
and help. Prometheus and statsd both read this table, so the two carry the same levels."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Gauges:
    """The node's levels at one instant, as the node reports them to ``Metrics``.

    Every field has a neutral default so an agent, which knows no Raft state or job list,
    reports only what it has.
    """

    is_leader: bool = False
    raft_term: int = 0
    raft_commit_index: int = 0
    members_by_status: Mapping[str, int] = field(default_factory=dict)
    executions_running: int = 0
    executions_queued: int = 0
    queue_lengths: Mapping[str, int] = field(default_factory=dict)
    jobs: int = 0
    paused: bool = False
    jobs_by_health: Mapping[str, int] = field(default_factory=dict)
    unhealthy: Mapping[str, str] = field(default_factory=dict)  # job: its health, if not ok


def statsd_name(part: str) -> str:
    """``part`` as one segment of a dotted statsd name: ASCII letters, digits, ``_`` and ``-``.

    A ``.`` would open a new level in Graphite and ``:``, ``|``, ``@`` break the line protocol,
    so everything else becomes ``_`` (``nightly.report`` -> ``nightly_report``).
    """
    return _UNSAFE.sub("_", part) or "_"


class _LevelCollector(Collector):
    """The gauges, read from the node's callable each time Prometheus scrapes."""

    def __init__(self, node_name: str, role: str, read: Callable[[], Gauges] | None) -> None:
        self._info = (node_name, role, __version__)
        self._read = read

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "dkron_node_info",
            "Always 1; the labels name this node, its role and the dkron-lab version.",
            labels=("node", "role", "version"),
        )
        info.add_metric(self._info, 1)
        yield info
        levels = _read_levels(self._read)
        if levels is not None:
            yield from _level_families(levels)


def _read_levels(read: Callable[[], Gauges] | None) -> Gauges | None:
    """The node's levels, or ``None``: a failing reader must not fail the scrape or the loop."""
    if read is None:
        return None
    try:
        return read()
    except Exception:
        log.warning("metrics: the node's gauges could not be read", exc_info=True)
        return None


def _level_families(levels: Gauges) -> Iterator[Metric]:
    for name, help_text in _LEVELS:
        yield GaugeMetricFamily(f"dkron_{name}", help_text, value=float(getattr(levels, name)))
    yield _labelled(
        "dkron_members", "Cluster members by status.", "status", levels.members_by_status
    )
    yield _labelled(
        "dkron_queue_length", "Items waiting in this node's queues.", "queue", levels.queue_lengths
    )
    yield _labelled(
        "dkron_jobs_health",
        "Jobs by health (ok, late, overdue, missed, failing, paused; docs/monitoring.md).",
        "health",
        levels.jobs_by_health,
    )
    unhealthy = GaugeMetricFamily(
        "dkron_job_unhealthy",
        "1 for each job whose health is not ok, labelled with it (no series for a job that is).",
        labels=("job", "health"),
    )
    for job, health in sorted(levels.unhealthy.items()):
        unhealthy.add_metric((job, health), 1.0)
    yield unhealthy


def _labelled(name: str, help_text: str, label: str, values: Mapping[str, int]) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=(label,))
    for key, value in sorted(values.items()):
        family.add_metric((key,), float(value))
    return family


def _statsd_client(address: str) -> statsd.StatsClient:
    """A UDP statsd client for ``host:port``; a host that does not resolve is a config error."""
    host, port = split_host_port(address, default_port=8125)
    host = host or "127.0.0.1"
    try:
        return statsd.StatsClient(host, port, prefix="dkron", ipv6=":" in host)
    except OSError as exc:
        raise ValidationError(
            f"statsd-addr {address!r}: cannot resolve {host!r} ({exc}); "
            "give a reachable host:port such as 127.0.0.1:8125, or leave statsd-addr empty"
        ) from None


class Metrics:
    """One node's metrics: Prometheus series in a private registry, mirrored to statsd.

    ``gauges`` is called at every scrape (and every statsd push); it must be cheap and must
    not block. Every event method is safe to call from any thread.
    """

    def __init__(
        self,
        node_name: str,
        gauges: Callable[[], Gauges] | None = None,
        *,
        role: str = "server",
        prometheus: bool = True,
        statsd_addr: str = "",
    ) -> None:
        """``prometheus`` says whether ``GET /metrics`` serves the registry (the series are
        kept either way, so statsd alone works); ``statsd_addr`` ``""`` sends nothing."""
        self.node_name = node_name
        self.prometheus_enabled = prometheus
        self._gauges = gauges
        self._node_key = statsd_name(node_name)
        self._statsd = _statsd_client(statsd_addr) if statsd_addr else None
        self.registry = CollectorRegistry()
        self.registry.register(_LevelCollector(node_name, role, gauges))
        self._executions = Counter(
            "dkron_executions_total",
            "Executions this node finished, by job and result.",
            ("job_name", "result"),
            registry=self.registry,
        )
        # By result, not by job: a histogram per job is ~17 series each, 170,000 for 10,000
        # jobs (a 15 MB scrape that took seconds); per job, SQL over the history answers.
        self._duration = Histogram(
            "dkron_execution_duration_seconds",
            "How long the executions this node finished ran (finished_at - started_at).",
            ("result",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        # No label at all, for the same reason; SQL over the history has them per job.
        self._cpu = Histogram(
            "dkron_execution_cpu_seconds",
            "CPU seconds (user plus system) of the executions this node finished, their whole "
            "process trees; only executions that were measured.",
            buckets=CPU_BUCKETS,
            registry=self.registry,
        )
        self._memory = Histogram(
            "dkron_execution_max_rss_bytes",
            "Peak resident memory of the process trees of the executions this node finished; "
            "only executions that were measured.",
            buckets=MEMORY_BUCKETS,
            registry=self.registry,
        )
        self._lateness = Histogram(
            "dkron_scheduling_lateness_seconds",
            "How long after its scheduled instant a fire was started (early counts as 0).",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self._fires = Counter(
            "dkron_fires_total",
            "Scheduled fires the leader claimed and dispatched.",
            registry=self.registry,
        )
        self._skipped = Counter(
            "dkron_fires_skipped_total",
            "Missed scheduled fires the catch-up policy dropped instead of running.",
            registry=self.registry,
        )
        self._notifications = Counter(
            "dkron_notifications_total",
            "Notifications sent after executions, by kind and result.",
            ("kind", "result"),
            registry=self.registry,
        )
        for kind in NOTIFICATION_KINDS:
            for result in _RESULTS:
                self._notifications.labels(kind, result)

    @classmethod
    def from_config(cls, config: Config, gauges: Callable[[], Gauges] | None = None) -> Metrics:
        """The metrics of the node ``config`` describes (``enable_prometheus``, ``statsd_addr``)."""
        return cls(
            config.node_name,
            gauges,
            role="server" if config.server else "agent",
            prometheus=config.enable_prometheus,
            statsd_addr=config.statsd_addr,
        )

    # -- events ------------------------------------------------------------------------------

    def execution_finished(self, execution: Execution) -> None:
        """Count a finished execution by result and record how long it ran and, when it was
        measured, what it used (CPU seconds, peak memory).

        Call it once per execution, on the node that ran it, so sums over nodes count each
        execution once. An execution still running (no ``finished_at``) is ignored.
        """
        if execution.finished_at is None:
            return
        job = execution.job_name
        result = _RESULTS[0] if execution.success else _RESULTS[1]
        seconds = max((execution.finished_at - execution.started_at).total_seconds(), 0.0)
        self._executions.labels(job, result).inc()
        self._duration.labels(result).observe(seconds)
        if self._statsd is not None:
            self._statsd.incr(f"executions.{result}.{statsd_name(job)}")
            self._statsd.timing(f"execution_duration.{statsd_name(job)}", seconds * 1000)
        self._resources(execution)

    def _resources(self, execution: Execution) -> None:
        """What a finished execution used, when it was measured."""
        job = statsd_name(execution.job_name)
        user, system = execution.cpu_user_seconds, execution.cpu_system_seconds
        if user is not None and system is not None:
            self._cpu.observe(user + system)
            if self._statsd is not None:
                self._statsd.timing(f"execution_cpu.{job}", (user + system) * 1000)
        if execution.max_rss_bytes is not None:
            self._memory.observe(execution.max_rss_bytes)
            if self._statsd is not None:
                self._statsd.gauge(f"execution_max_rss.{job}", execution.max_rss_bytes)

    def lateness(self, seconds: float) -> None:
        """Record how late a fire started: its start minus its scheduled instant."""
        seconds = max(seconds, 0.0)  # a negative observation would make _sum go down
        self._lateness.observe(seconds)
        if self._statsd is not None:
            self._statsd.timing("scheduling_lateness", seconds * 1000)

    def fired(self, count: int = 1) -> None:
        """``count`` scheduled fires were claimed and dispatched (the leader, per tick)."""
        self._add(self._fires, "fires.fired", count)

    def skipped(self, count: int = 1) -> None:
        """``count`` scheduled fires will not run (recorded as skipped)."""
        self._add(self._skipped, "fires.skipped", count)

    def notification(self, kind: str, ok: bool) -> None:
        """A notification of ``kind`` (one of ``NOTIFICATION_KINDS``) was sent, or failed."""
        if kind not in NOTIFICATION_KINDS:
            raise ValueError(f"unknown notification kind {kind!r}: use one of {NOTIFICATION_KINDS}")
        result = _RESULTS[0] if ok else _RESULTS[1]
        self._notifications.labels(kind, result).inc()
        if self._statsd is not None:
            self._statsd.incr(f"notifications.{kind}.{result}")

    def forget_job(self, job_name: str) -> None:
        """Drop a deleted job's series, so ephemeral and deleted jobs do not pile up."""
        for result in _RESULTS:
            with contextlib.suppress(KeyError):
                self._executions.remove(job_name, result)

    def _add(self, counter: Counter, stat: str, count: int) -> None:
        if count < 0:
            raise ValueError(f"a count of fires cannot be negative, got {count}")
        if count == 0:
            return
        counter.inc(count)
        if self._statsd is not None:
            self._statsd.incr(stat, count)

    # -- Prometheus --------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition ``(body, content type)``: Prometheus text 0.0.4, or OpenMetrics when
        the ``Accept`` header asks for it (as Prometheus's scraper does)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    # -- statsd ------------------------------------------------------------------------------

    @property
    def statsd_enabled(self) -> bool:
        return self._statsd is not None

    def push_gauges(self) -> None:
        """Send the current levels to statsd as gauges under ``dkron.node.<node>.``."""
        levels = _read_levels(self._gauges)
        if self._statsd is None or levels is None:
            return
        with self._statsd.pipeline() as pipe:
            for name, value in _statsd_levels(levels).items():
                pipe.gauge(f"node.{self._node_key}.{name}", value)

    async def run_statsd(self, interval: float = 10.0, *, clock: Clock | None = None) -> None:
        """Push the gauges to statsd now and every ``interval`` seconds, until cancelled.

        Returns at once when no statsd address is set, so the node can always start it.
        """
        if self._statsd is None:
            return
        clock = clock or SystemClock()
        while True:
            self.push_gauges()
            await clock.sleep_until(clock.now() + timedelta(seconds=interval), exact=False)

    def close(self) -> None:
        """Close the statsd socket (the registry needs nothing)."""
        if self._statsd is not None:
            self._statsd.close()
            self._statsd = None


def _statsd_levels(levels: Gauges) -> dict[str, int]:
    """The gauges as dotted statsd names (below ``dkron.node.<node>.``) and their values."""
    found = {name: int(getattr(levels, name)) for name, _ in _LEVELS}
    for status, count in levels.members_by_status.items():
        found[f"members.{statsd_name(status)}"] = int(count)
    for queue, length in levels.queue_lengths.items():
        found[f"queue_length.{statsd_name(queue)}"] = int(length)
    return found
