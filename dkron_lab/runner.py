"""The executing side: run a job with its executor, stream its output, fold it through its
processors, and report the finished execution.

With ``concurrency`` (``--executor-concurrency``) or per-executor ``limits``
(``--executor-limits``) set, a run waits for a free slot in arrival order; while it waits it
is shown in ``busy()`` as queued and its execution id and ``started_at`` are not yet given.

A running execution's output can be read by byte offset (``read_output``), and so can the
last ``ENDED_KEPT`` that ended here: a reader that followed a run to its end reads the end from
the same bytes, whatever the history's record of it (cut, or changed by processors) says."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from dkron_lab.clock import Clock
from dkron_lab.errors import DkronError
from dkron_lab.lifecycle import hurried
from dkron_lab.model.execution import Execution, execution_id, mark_cut
from dkron_lab.model.health import kill_after
from dkron_lab.model.job import Job
from dkron_lab.model.output import OutputChunk, read_chunk
from dkron_lab.model.secrets import OutputScrubber, scrub, scrub_text, secret_values, spelled
from dkron_lab.model.units import format_duration
from dkron_lab.plugins import ExecutionRequest, ExecutorResult
from dkron_lab.registry import PluginRegistry

__all__ = ["Runner"]

log = logging.getLogger(__name__)

Report = Callable[[Execution], None]

ENDED_KEPT = 16
"""Ended executions whose output stays readable here (at most ``output_limit`` bytes each)."""
OUTPUT_POLL = 0.05
"""Seconds between two looks at a live output while a reader waits for more (I/O pacing, not
schedule time: the wait is for bytes, so it runs on the event loop's clock)."""


def _slots(limit: int) -> asyncio.Semaphore | None:
    return asyncio.Semaphore(limit) if limit > 0 else None


@dataclass(slots=True)
class _Live:
    """A running execution and the tail of what it has printed so far, secrets scrubbed."""

    execution: Execution
    limit: int
    scrubber: OutputScrubber
    tail: bytearray = field(default_factory=bytearray)
    emitted: int = 0  # bytes the executor printed, before any cut or mask
    dropped: int = 0  # bytes cut from the start of the scrubbed output: where ``tail`` begins

    def emit(self, chunk: bytes) -> None:
        self.emitted += len(chunk)
        self._keep(self.scrubber.feed(chunk))

    def _keep(self, scrubbed: bytes) -> None:
        self.tail += scrubbed
        if len(self.tail) > self.limit:
            cut = len(self.tail) - self.limit
            del self.tail[:cut]
            self.dropped += cut

    def close(self, error: str) -> None:
        """The output has ended: keep what the scrubber held back, then the error as the
        record shows it (on a line of its own)."""
        self._keep(self.scrubber.flush())
        if error:
            printed = self.dropped + len(self.tail) > 0
            self._keep((f"\n{error}" if printed else error).encode("utf-8", errors="replace"))

    def read(self, offset: int, limit: int, *, ended: bool) -> OutputChunk:
        return read_chunk(self.tail, base=self.dropped, offset=offset, limit=limit, ended=ended)

    def ended(self) -> bytes:
        """All of the tail, with what the scrubber still held back: the output has ended."""
        self._keep(self.scrubber.flush())
        return bytes(self.tail)


class Runner:
    """Runs executions on this node, one asyncio task each.

    Output, live and recorded, never shows a secret: the values ``model.secrets.secret_values``
    finds in the job, and ``hidden`` (the node's own credentials, which the executors also keep
    out of child environments), are replaced by ``***`` before anything is reported."""

    def __init__(
        self,
        *,
        node_name: str,
        registry: PluginRegistry,
        clock: Clock,
        report: Report,
        output_limit: int = 256_000,
        concurrency: int = 0,
        limits: Mapping[str, int] | None = None,
        on_start: Report | None = None,
        hidden: frozenset[str] = frozenset(),
        max_duration: timedelta = timedelta(0),
    ) -> None:
        """``max_duration``: the server's default for jobs that say ``on_overdue: kill``
        and set no ``max_duration`` (0: no limit)."""
        self._node = node_name
        self._max_duration = max_duration
        self._hidden = hidden
        self._registry = registry
        self._clock = clock
        self._report = report
        self._on_start = on_start
        self._output_limit = output_limit
        self._live: dict[str, _Live] = {}
        self._ended: OrderedDict[str, _Live] = OrderedDict()  # the last ENDED_KEPT, oldest first
        self._waiting: dict[int, Execution] = {}  # queued runs, by a private ticket
        self._tasks: set[asyncio.Task[Execution]] = set()
        self._last_ns = 0
        self._ticket = 0
        self._slots = _slots(concurrency)
        self._executor_slots = {name: _slots(n) for name, n in (limits or {}).items() if n > 0}

    def execute(
        self, job: Job, *, group: int, attempt: int = 1, scheduled_at: datetime | None = None
    ) -> asyncio.Task[Execution]:
        """Start ``job`` now, or once a slot is free; the task's result is the finished
        execution (already reported)."""
        if self._slots is None and job.executor not in self._executor_slots:
            execution = self._new_execution(job, group, attempt, scheduled_at)
            task = asyncio.ensure_future(self._run(job, execution))
        else:
            task = asyncio.ensure_future(self._queued(job, group, attempt, scheduled_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _new_execution(
        self, job: Job, group: int, attempt: int, scheduled_at: datetime | None
    ) -> Execution:
        started = self._clock.now()
        return Execution(
            id=execution_id(self._unique_ns(started), self._node),
            job_name=job.name,
            node_name=self._node,
            group=group,
            attempt=attempt,
            started_at=started,
            scheduled_at=scheduled_at,
        )

    async def _queued(
        self, job: Job, group: int, attempt: int, scheduled_at: datetime | None
    ) -> Execution:
        self._ticket += 1
        ticket = self._ticket
        self._waiting[ticket] = Execution(
            id=f"queued-{group}-{self._node}-{attempt}",
            job_name=job.name,
            node_name=self._node,
            group=group,
            attempt=attempt,
            started_at=self._clock.now(),
            scheduled_at=scheduled_at,
            queued=True,
        )
        async with contextlib.AsyncExitStack() as slots:
            try:
                for slot in (self._slots, self._executor_slots.get(job.executor)):
                    if slot is not None:
                        await slots.enter_async_context(slot)
            finally:
                del self._waiting[ticket]
            return await self._run(job, self._new_execution(job, group, attempt, scheduled_at))

    def _unique_ns(self, started: datetime) -> int:
        # Ids must be unique per node even when two runs start in the same microsecond.
        ns = max(int(started.timestamp() * 1_000_000) * 1000, time.time_ns(), self._last_ns + 1)
        self._last_ns = ns
        return ns

    async def _run(self, job: Job, execution: Execution) -> Execution:
        secrets = secret_values(job) | spelled(self._hidden)
        live = _Live(execution, self._output_limit, OutputScrubber(secrets))
        self._live[execution.id] = live
        if self._on_start is not None:
            self._on_start(execution)
        try:
            result = await self._execute(job, live)
        finally:
            self._live.pop(live.execution.id, None)
        self._keep_ended(live, scrub_text(result.error, secrets))
        # Cut or not is decided on what the executor printed: masking a secret shortens the
        # tail, and an output of exactly the limit is whole.
        printed = live.emitted or len(result.output)
        cut = printed > self._output_limit or len(result.output) > self._output_limit
        scrubbed = _scrubbed(result, secrets, cut=cut)
        finished = self._finish(job, live.execution, scrubbed, cut=cut)
        self._report(finished)
        return finished

    async def _execute(self, job: Job, live: _Live) -> ExecutorResult:
        request = ExecutionRequest(
            job_name=job.name,
            execution_id=live.execution.id,
            config=job.executor_config,
            output_limit=self._output_limit,
            hidden_values=self._hidden,
        )
        limit = kill_after(job, self._max_duration)
        deadline: asyncio.Timeout | None = None
        try:
            executor = self._registry.executor(job.executor)
            if limit is None:
                return await executor.execute(request, live.emit)
            async with asyncio.timeout(limit.total_seconds()) as deadline:
                return await executor.execute(request, live.emit)
        except TimeoutError:
            if limit is None or deadline is None or not deadline.expired():
                raise
            why = f"dkron-lab: killed: the run passed max_duration {format_duration(limit)}"
            return ExecutorResult(success=False, output=live.ended(), error=f"{why} (on_overdue)")
        except DkronError as exc:
            return ExecutorResult(success=False, output=live.ended(), error=exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("executor %r crashed running job %r", job.executor, job.name)
            return ExecutorResult(
                success=False, output=live.ended(), error=f"executor crashed: {exc!r}"
            )

    def _finish(
        self, job: Job, execution: Execution, result: ExecutorResult, *, cut: bool
    ) -> Execution:
        output = result.output.decode("utf-8", errors="replace")
        if result.error:
            output = f"{output}\n{result.error}" if output else result.error
        cut = cut or len(output) > self._output_limit
        finished = replace(
            execution,
            finished_at=self._clock.now(),
            success=result.success,
            output=mark_cut(output, self._output_limit) if cut else output,
        ).with_usage(result.usage)
        if not job.processors:
            return finished
        return self._registry.run_processors(finished, job.processors, reporting_node=self._node)

    def _keep_ended(self, live: _Live, error: str) -> None:
        live.close(error)
        self._ended[live.execution.id] = live
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def read_output(
        self, job_name: str, execution_id: str, offset: int, *, limit: int, wait: float = 0.0
    ) -> OutputChunk | None:
        """The output of ``execution_id`` (of ``job_name``) from byte ``offset``, at most
        ``limit`` bytes, if it runs here or is one of the last ``ENDED_KEPT`` that ended here;
        else ``None``. With ``wait``, a read that finds nothing new waits up to ``wait``
        seconds for more (or for the end) before it answers."""
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            chunk = self._read_once(job_name, execution_id, offset, limit)
            if chunk is None or chunk.data or chunk.done:
                return chunk
            if asyncio.get_running_loop().time() >= deadline:
                return chunk
            await asyncio.sleep(OUTPUT_POLL)

    def _read_once(
        self, job_name: str, execution_id: str, offset: int, limit: int
    ) -> OutputChunk | None:
        live = self._live.get(execution_id)
        ended = live is None
        live = live or self._ended.get(execution_id)
        if live is None or live.execution.job_name != job_name:
            return None
        return live.read(offset, limit, ended=ended)

    def busy(self) -> list[Execution]:
        """Executions running here now, each with the tail of its output so far, then those
        queued for a slot, oldest first."""
        running = [
            replace(live.execution, output=live.tail.decode("utf-8", errors="replace"))
            for live in self._live.values()
        ]
        return running + list(self._waiting.values())

    @property
    def running(self) -> int:
        """Executions started or queued here and not finished."""
        return len(self._tasks)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def start(self, stack: AsyncExitStack) -> None:
        """At stop, let running executions finish, or cancel them in a hurry."""
        stack.push_async_exit(self._stop)

    async def _stop(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        await (self.cancel_all() if hurried(exc_type) else self.drain())
        return False

    async def drain(self) -> None:
        """Wait for every running execution to finish (graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _scrubbed(result: ExecutorResult, secrets: frozenset[str], *, cut: bool) -> ExecutorResult:
    """``result`` with ``secrets`` masked; a ``cut`` output may begin inside one."""
    if not secrets:
        return result
    return replace(
        result,
        output=scrub(result.output, secrets, cut=cut),
        error=scrub_text(result.error, secrets),
    )
