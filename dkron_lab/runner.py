"""The executing side: run a job with its executor, stream its output, fold it through its
processors, and report the finished execution."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from dkron_lab.clock import Clock
from dkron_lab.errors import DkronError
from dkron_lab.model.execution import Execution, execution_id
from dkron_lab.model.job import Job
from dkron_lab.plugins import ExecutionRequest, ExecutorResult, PluginRegistry

__all__ = ["Runner"]

log = logging.getLogger(__name__)

Report = Callable[[Execution], None]


@dataclass(slots=True)
class _Live:
    """A running execution and the tail of what it has printed so far."""

    execution: Execution
    limit: int
    tail: bytearray = field(default_factory=bytearray)

    def emit(self, chunk: bytes) -> None:
        self.tail += chunk
        if len(self.tail) > self.limit:
            del self.tail[: len(self.tail) - self.limit]


class Runner:
    """Runs executions on this node, one asyncio task each."""

    def __init__(
        self,
        *,
        node_name: str,
        registry: PluginRegistry,
        clock: Clock,
        report: Report,
        output_limit: int = 256_000,
    ) -> None:
        self._node = node_name
        self._registry = registry
        self._clock = clock
        self._report = report
        self._output_limit = output_limit
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[Execution]] = set()
        self._last_ns = 0

    def start(
        self, job: Job, *, group: int, attempt: int = 1, scheduled_at: datetime | None = None
    ) -> asyncio.Task[Execution]:
        """Start ``job`` now; the task's result is the finished execution (already reported)."""
        started = self._clock.now()
        execution = Execution(
            id=execution_id(self._unique_ns(started), self._node),
            job_name=job.name,
            node_name=self._node,
            group=group,
            attempt=attempt,
            started_at=started,
            scheduled_at=scheduled_at,
        )
        live = _Live(execution, self._output_limit)
        self._live[execution.id] = live
        task = asyncio.ensure_future(self._run(job, live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _unique_ns(self, started: datetime) -> int:
        # Ids must be unique per node even when two runs start in the same microsecond.
        ns = max(int(started.timestamp() * 1_000_000) * 1000, time.time_ns(), self._last_ns + 1)
        self._last_ns = ns
        return ns

    async def _run(self, job: Job, live: _Live) -> Execution:
        try:
            result = await self._execute(job, live)
        finally:
            self._live.pop(live.execution.id, None)
        finished = self._finish(job, live.execution, result)
        self._report(finished)
        return finished

    async def _execute(self, job: Job, live: _Live) -> ExecutorResult:
        request = ExecutionRequest(
            job_name=job.name,
            execution_id=live.execution.id,
            config=job.executor_config,
            output_limit=self._output_limit,
        )
        try:
            executor = self._registry.executor(job.executor)
            return await executor.execute(request, live.emit)
        except DkronError as exc:
            return ExecutorResult(success=False, output=bytes(live.tail), error=exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("executor %r crashed running job %r", job.executor, job.name)
            return ExecutorResult(
                success=False, output=bytes(live.tail), error=f"executor crashed: {exc!r}"
            )

    def _finish(self, job: Job, execution: Execution, result: ExecutorResult) -> Execution:
        output = result.output.decode("utf-8", errors="replace")
        if result.error:
            output = f"{output}\n{result.error}" if output else result.error
        finished = replace(
            execution,
            finished_at=self._clock.now(),
            success=result.success,
            output=output[-self._output_limit :],
        )
        if not job.processors:
            return finished
        return self._registry.run_processors(finished, job.processors, reporting_node=self._node)

    def busy(self) -> list[Execution]:
        """Executions running here now, each with the tail of its output so far."""
        return [
            replace(live.execution, output=live.tail.decode("utf-8", errors="replace"))
            for live in self._live.values()
        ]

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every running execution to finish (graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
