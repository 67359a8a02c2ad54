"""Every run ends in the history: finished runs of this node, and runs that could not happen
or whose outcome is lost (no target, a node that did not answer or stopped).

Owns the *done* batcher: finished executions of many runs share one Raft entry. May call:
``Shared.submit`` (through the batcher) and the state (reads). Never raises to its callers:
a record that fails to replicate is retried by the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

from dkron_lab import codec
from dkron_lab.batching import Batcher
from dkron_lab.metrics import Metrics
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.services import Shared
from dkron_lab.state.commands import Command, Done

__all__ = ["DRAIN_TIMEOUT", "Outcomes"]

DRAIN_TIMEOUT = 10.0
"""Seconds a stopping node waits for its last *done* records to replicate."""

log = logging.getLogger(__name__)


class Outcomes:
    def __init__(
        self,
        shared: Shared,
        metrics: Metrics,
        replicate: Callable[[Command], Awaitable[dict[str, Any]]],
    ) -> None:
        """``replicate`` writes one command straight to Raft (the batcher batches already)."""
        self._shared = shared
        self._metrics = metrics
        self._replicate = replicate
        self.done: Batcher[dict[str, Any], None] = Batcher(self._submit_done, retry=True)

    async def start(self, stack: AsyncExitStack) -> None:
        """Record the runs this node lost by stopping; at stop, send what the *done* batcher
        still holds (for at most ``DRAIN_TIMEOUT``)."""
        await self.fail_orphans()
        stack.push_async_callback(self._drain)

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.done.drain(), timeout=DRAIN_TIMEOUT)

    def ran(self, execution: Execution) -> None:
        """A run on this node finished: count it here, once, and report it."""
        self._metrics.execution_finished(execution)
        self.report(execution)

    def report(self, execution: Execution) -> None:
        self.done.add(codec.execution_to_json(execution))

    def untargeted(self, job: Job, group: int, scheduled_at: datetime | None) -> None:
        log.warning("no target nodes found to run job %r (tags %s)", job.name, job.tags)
        reason = (
            f"no target nodes found to run job {job.name!r}: no live node has the tags {job.tags}"
        )
        self.failed(job.name, group, self._shared.name, scheduled_at, reason)

    def lost(
        self, job_name: str, group: int, node: str, scheduled_at: datetime | None, why: str
    ) -> None:
        reason = f"dkron-lab: node {node} {why}; the outcome of this execution is unknown"
        self.failed(job_name, group, node, scheduled_at, reason)

    def failed(
        self, job_name: str, group: int, node: str, scheduled_at: datetime | None, output: str
    ) -> None:
        """Record a run that could not happen or whose outcome is lost: never silently. It
        stands for the node's current attempt in the group (so a retry can follow it)."""
        record = self._shared.state.group(group)
        attempt = record.get("attempts", {}).get(node, 1) if record else 1
        now = self._shared.clock.now()
        self.report(
            Execution(
                id=f"{group}-{node}" + (f"-{attempt}" if attempt > 1 else ""),
                job_name=job_name,
                node_name=node,
                group=group,
                attempt=attempt,
                started_at=datetime.fromtimestamp(group / 1e9, UTC) if attempt == 1 else now,
                finished_at=now,
                output=output,
                scheduled_at=scheduled_at,
            )
        )

    async def fail_orphans(self) -> None:
        """Runs in flight here before this node stopped can never report: record them failed."""
        name = self._shared.name
        orphans = [
            (gid, group)
            for gid, group in self._shared.state.open_groups().items()
            if name in group["targets"] and name not in group["results"]
        ]
        for gid, group in orphans:
            scheduled_at = codec.parse_time(group.get("scheduled_at"), "scheduled_at")
            why = "stopped while this execution was running"
            self.lost(group["job"], gid, name, scheduled_at, why)
        if orphans:
            await self.done.drain()

    async def _submit_done(self, records: list[dict[str, Any]]) -> list[None]:
        await self._replicate(Done(executions=tuple(records)))
        return [None] * len(records)
