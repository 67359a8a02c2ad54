"""The internal API nodes call on each other (``/internal/v1/...``), never clients.

Each request must be signed with the cluster key for this node, fresh and never seen before
(``dkron_lab.dispatch.Verifier``); no address is trusted, loopback included. A refusal is a
401 and a warning in the log naming the caller's address. These routes are not part of
Dkron's API nor of the OpenAPI document of the public one; ``docs/architecture.md`` describes
them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dkron_lab.api.base import ApiMixin
from dkron_lab.errors import BadRequest, ExecutionNotFound
from dkron_lab.model.overrides import parse_overrides

__all__ = ["INTERNAL_RESOURCES"]

MAX_OUTPUT_WAIT = 30.0
"""Longest an output read from another node is held waiting for new bytes (seconds)."""


class _Internal(ApiMixin):
    public = True  # not the API token: the cluster signature below
    accepts_body = True

    def signed_body(self) -> dict[str, Any]:
        body = self.request_body()
        self.node.verifier.check(
            method=self.request.method or "",
            path=self.request.path,
            headers=self.request.headers,
            body=body,
            now=time.time(),
            remote=self.request.remote_ip or "?",
        )
        data = self.json_body()
        if not isinstance(data, dict):
            raise BadRequest("an internal call carries a JSON object")
        return data


class Heartbeat(_Internal):
    async def post(self) -> None:
        data = self.signed_body()
        self.node.jobs.heard_from(str(data["node"]), list(data.get("busy", [])))
        self.write_json({"term": self.node.raft.term})


class RunHere(_Internal):
    async def post(self) -> None:
        self.node.jobs.accept_run(self.signed_body())
        self.write_json({"accepted": True}, status=202)


class RunOnLeader(_Internal):
    async def post(self, job: str) -> None:
        data = self.signed_body()
        view = await self.node.jobs.run_job(
            job,
            wait=bool(data.get("wait")),
            node=data.get("node"),
            overrides=parse_overrides(data.get("overrides")),
        )
        self.write_json({"job": view.to_json(), "applied_index": self.node.raft.applied_index})


class AddPeer(_Internal):
    async def post(self) -> None:
        body = self.signed_body()
        await self.node.jobs.add_peer(str(body["peer"]), knocked=bool(body.get("knocked")))
        self.write_json({"added": True})


class RemovePeer(_Internal):
    async def post(self) -> None:
        await self.node.jobs.remove_peer(str(self.signed_body()["peer"]))
        self.write_json({"removed": True})


class HistoryPage(_Internal):
    """A page of this server's history for a server that lacks it (see ``Node``'s history
    copy): ``{"after": cursor|null, "limit": n, "table": "executions"|"skipped"}`` answers
    ``{"rows": [...], "next": cursor|null}``."""

    async def post(self) -> None:
        data = self.signed_body()
        table = data.get("table", "executions")
        history = self.node.history
        export = {"executions": history.export_executions, "skipped": history.export_skipped}
        if table not in export:
            raise BadRequest(f"no history table {table!r}: use 'executions' or 'skipped'")
        after, limit = data.get("after"), data.get("limit", 500)
        if (after is not None and not isinstance(after, list)) or not isinstance(limit, int):
            raise BadRequest("'after' is a cursor list or null and 'limit' a whole number")
        rows, cursor = await asyncio.to_thread(export[table], after, min(limit, 5000))
        self.write_json({"rows": rows, "next": cursor})


class OutputHere(_Internal):
    """The output of an execution this node runs (or just ran), for the server a reader asked:
    ``{"job", "execution", "offset", "wait"}`` answers ``GET .../output``'s object, or 404
    when this node does not have it. ``wait`` (seconds, at most ``MAX_OUTPUT_WAIT``) holds
    the answer until there is something new, so a relayed stream is not a call per poll."""

    async def post(self) -> None:
        data = self.signed_body()
        job, execution = data.get("job"), data.get("execution")
        offset, wait = data.get("offset", 0), data.get("wait", 0)
        if not (isinstance(job, str) and isinstance(execution, str) and isinstance(offset, int)):
            raise BadRequest("send 'job' and 'execution' (strings) and 'offset' (bytes)")
        if not isinstance(wait, int | float):
            raise BadRequest("'wait' is a number of seconds")
        wait = min(max(float(wait), 0.0), MAX_OUTPUT_WAIT)
        chunk = await self.node.jobs.read_output_here(job, execution, max(offset, 0), wait=wait)
        if chunk is None:
            raise ExecutionNotFound(f"execution {execution!r} of job {job!r} is not run here")
        self.write_json(chunk.to_json())


INTERNAL_RESOURCES: tuple[tuple[str, type[ApiMixin]], ...] = (
    ("/internal/v1/heartbeat", Heartbeat),
    ("/internal/v1/run", RunHere),
    ("/internal/v1/jobs/{job}/run", RunOnLeader),
    ("/internal/v1/raft/add", AddPeer),
    ("/internal/v1/raft/remove", RemovePeer),
    ("/internal/v1/history", HistoryPage),
    ("/internal/v1/output", OutputHere),
)
