"""Executions: a job's (Dkron's), every job's (``GET /v1/executions``), one, its output by offset
and streamed, and the skipped fires."""

from __future__ import annotations

import functools
import logging
from datetime import tzinfo
from typing import Any, ClassVar

import tornado.iostream
import tornado.web

from dkron_lab import codec
from dkron_lab.api.base import ApiMixin, encode_json, zone_of
from dkron_lab.api.params import all_executions_query, execution_query, integer_arg
from dkron_lab.errors import DkronError
from dkron_lab.model.execution import Execution

__all__ = [
    "AllExecutions",
    "ExecutionOutput",
    "ExecutionOutputStream",
    "ExecutionResource",
    "Executions",
    "LegacyExecutions",
    "Skipped",
]

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


class Executions(ApiMixin):
    async def get(self, job: str) -> None:
        query = execution_query(self.request.query_arguments)
        zone = self.node.jobs.get_job(job).zone
        page, truncated, total = await self.node.jobs.list_executions(job, query)
        self.set_header("X-Total-Count", total)
        self.write_json([_listed(e, zone, cut) for e, cut in zip(page, truncated, strict=True)])

    async def delete(self, job: str) -> None:
        view = await self.node.jobs.delete_executions(job)
        self.write_json(view.to_json())


def _listed(execution: Execution, zone: tzinfo, truncated: bool) -> dict[str, Any]:
    return codec.execution_to_json(execution, zone) | {"output_truncated": truncated}


class Skipped(ApiMixin):
    async def get(self, job: str) -> None:
        spans = await self.node.jobs.skipped(job)
        self.set_header("X-Total-Count", len(spans))
        self.write_json(
            [
                span | {k: codec.format_time(span[k]) for k in ("first", "last", "recorded_at")}
                for span in spans
            ]
        )


class LegacyExecutions(ApiMixin):
    """``GET /v1/executions/<job>``: Dkron's older path for the execution list."""

    get = Executions.get


class ExecutionResource(ApiMixin):
    async def get(self, job: str, execution: str) -> None:
        zone = self.node.jobs.get_job(job).zone
        found = await self.node.jobs.get_execution(job, execution)
        self.write_json(codec.execution_to_json(found, zone))


class AllExecutions(ApiMixin):
    """``GET /v1/executions``: every job's executions, running ones first, then this server's
    history newest first; filtered by job, status, node and start time, paged."""

    async def get(self) -> None:
        found, query, status = all_executions_query(self.request.query_arguments)
        page, truncated, total = await self.node.jobs.list_all_executions(
            found, query, finished=status != "running", running=status in (None, "running")
        )
        zones = {name: zone_of(self.node, name) for name in {e.job_name for e in page}}
        self.set_header("X-Total-Count", total)
        self.write_json(
            [_listed(e, zones[e.job_name], cut) for e, cut in zip(page, truncated, strict=True)]
        )


class ExecutionOutput(ApiMixin):
    """``GET /v1/jobs/<job>/executions/<id>/output?offset=N``: the output from byte N, running
    or finished; the node that runs it is asked by this one, never by the caller."""

    async def get(self, job: str, execution: str) -> None:
        offset = integer_arg(self.request.query_arguments, "offset") or 0
        chunk = await self.node.jobs.read_output(job, execution, offset)
        self.write_json(chunk.to_json())


class ExecutionOutputStream(ApiMixin):
    """``GET .../output/stream?offset=N``: the output as it is printed, one JSON object per
    line (``ExecutionOutput``'s), until the run has ended; a line with no data every
    ``keepalive`` seconds while nothing is printed. The node holds one read (at most
    ``OUTPUT_READ_LIMIT`` bytes) per stream: the next is read once the last was flushed to the
    socket, so a slow reader slows its stream, not the node."""

    keepalive: ClassVar[float] = 15.0
    _gone: bool = False

    def on_connection_close(self) -> None:
        self._gone = True
        super().on_connection_close()

    async def get(self, job: str, execution: str) -> None:
        offset = integer_arg(self.request.query_arguments, "offset") or 0
        read = functools.partial(self.node.jobs.read_output, job, execution)
        chunk = await read(offset)  # an unknown job or execution is a 404, before any line
        self.set_header("Content-Type", NDJSON)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # a proxy in front must not buffer it
        try:
            while True:
                self.write(encode_json(chunk.to_json(), pretty=False) + b"\n")
                await self.flush()
                if chunk.done or self._gone:
                    break
                try:
                    chunk = await read(chunk.next, wait=self.keepalive)
                except DkronError as exc:  # e.g. the node that runs it stopped answering
                    log.info("output stream of %s ends early: %s", execution, exc.message)
                    break  # no done line: the reader goes on with offset reads
        except tornado.iostream.StreamClosedError:
            return  # the reader went away
        if hasattr(self, "update_api_activity"):  # jupyter_server: keep the content type
            self.finish(set_content_type=NDJSON)  # type: ignore[call-arg]
        else:
            self.finish()
