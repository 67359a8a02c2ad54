"""The REST API's handlers: thin translators from HTTP to the node's ``jobs`` facade and back.

Each resource is a mixin over ``ApiMixin`` that needs only tornado's ``RequestHandler`` surface
and finds the node in ``self.settings["dkron_node"]``. ``mount(resource, base)`` composes it with
a concrete handler base: ``dkron_lab.api.app.HeadlessHandler`` (token auth, CORS) on a plain
tornado server, or jupyter_server's ``APIHandler`` inside Jupyter. Errors are raised as
``dkron_lab.errors`` classes and answered by the one ``ApiMixin.write_error``.

Query parsing lives in pure functions (``job_query``, ``execution_query``) so it is checked once,
at the edge, and the node only ever sees parsed values.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from functools import cache
from http import HTTPStatus
from importlib import resources
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import tornado.iostream
import tornado.web
import yaml
from tornado import httputil

from dkron_lab import codec
from dkron_lab.api import sql as sql_api
from dkron_lab.api.errors import error_body, http_error_body, status_for
from dkron_lab.api.nodeapi import NodeApi
from dkron_lab.errors import (
    BadRequest,
    DkronError,
    JobNotFound,
    NotFoundError,
    PayloadTooLarge,
    Unavailable,
    ValidationError,
)
from dkron_lab.history.queries import ExecutionFilter, RunStats
from dkron_lab.model import schedule
from dkron_lab.model.execution import Execution
from dkron_lab.model.limits import LimitChange
from dkron_lab.views import ExecutionQuery, JobQuery, JobView

__all__ = [
    "RESOURCES",
    "ApiMixin",
    "ExecutionQuery",
    "NotFound",
    "all_executions_query",
    "execution_query",
    "job_query",
    "mount",
    "openapi_document",
    "route_pattern",
]

log = logging.getLogger(__name__)

Arguments = Mapping[str, Sequence[bytes]]

JOB_STATUSES = ("success", "failed", "partially_failed", "untriggered")
MAX_PREVIEW = 1000
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
_METADATA = re.compile(r"^metadata\[(.+)\]$")
_INTEGER = re.compile(r"^-?[0-9]{1,18}$")

if TYPE_CHECKING:
    _HandlerBase = tornado.web.RequestHandler
else:
    _HandlerBase = object


# -- query parameters (pure) --------------------------------------------------------------------


def _text(arguments: Arguments, name: str) -> str | None:
    values = arguments.get(name)
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"query parameter {name} is not valid UTF-8") from None


def _integer(arguments: Arguments, name: str, *, maximum: int | None = None) -> int | None:
    text = _text(arguments, name)
    if text is None or text == "":
        return None
    if not _INTEGER.match(text):
        raise BadRequest(f"{name} must be a whole number, e.g. {name}=10, not {text[:40]!r}")
    value = int(text)
    if value < 0:
        raise BadRequest(f"{name} must be 0 or more, not {value}")
    if maximum is not None and value > maximum:
        raise BadRequest(f"{name} must be at most {maximum}, not {value}")
    return value


def _boolean(arguments: Arguments, name: str, *, empty: bool | None = None) -> bool | None:
    text = _text(arguments, name)
    if text is None:
        return None
    if text == "" and empty is not None:
        return empty
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise BadRequest(f"{name} must be true or false, not {text!r}")


def _order(arguments: Arguments, default: str) -> str:
    text = (_text(arguments, "_order") or default).upper()
    if text not in ("ASC", "DESC"):
        raise BadRequest(f"_order must be ASC or DESC, not {_text(arguments, '_order')!r}")
    return text


def _page(arguments: Arguments) -> tuple[int, int | None]:
    start = _integer(arguments, "_start") or 0
    end = _integer(arguments, "_end")
    if end is not None and end < start:
        raise BadRequest(f"_end ({end}) must not be less than _start ({start})")
    return start, end


def _metadata(arguments: Arguments) -> dict[str, str]:
    found = {}
    for key in arguments:
        match = _METADATA.match(key)
        if match:
            found[match.group(1)] = _text(arguments, key) or ""
    return found


def job_query(arguments: Arguments) -> JobQuery:
    """``GET /v1/jobs`` query parameters as a ``JobQuery``; ``BadRequest`` says which is wrong."""
    status = _text(arguments, "status") or None
    if status is not None and status not in JOB_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(JOB_STATUSES)}, not {status!r}")
    start, end = _page(arguments)
    return JobQuery(
        q=_text(arguments, "q") or "",
        status=status,
        disabled=_boolean(arguments, "disabled"),
        metadata=_metadata(arguments),
        sort=_text(arguments, "_sort") or "name",
        order=_order(arguments, "ASC"),
        start=start,
        end=end,
    )


def execution_query(arguments: Arguments) -> ExecutionQuery:
    """``GET /v1/jobs/<job>/executions`` query parameters; ``BadRequest`` says which is wrong."""
    start, end = _page(arguments)
    return ExecutionQuery(
        sort=_text(arguments, "_sort") or "",
        order=_order(arguments, "DESC"),
        start=start,
        end=end,
        output_size_limit=_integer(arguments, "output_size_limit"),
    )


def _instant(arguments: Arguments, name: str) -> datetime | None:
    text = _text(arguments, name)
    if not text:
        return None
    # An unescaped '+' in a query string arrives as a space: '...T10:00:00 01:00'.
    text = text.replace(" ", "+")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise BadRequest(
            f"{name} must be an RFC3339 time with an offset, e.g. 2026-01-31T09:30:00Z, "
            f"not {text!r}"
        )
    return value


# -- the base ---------------------------------------------------------------------------------


def _encode_json(value: Any, *, pretty: bool) -> bytes:
    """Go's ``encoding/json`` look: compact, or indented by four spaces with ``?pretty``."""
    if pretty:
        return json.dumps(value, indent=4, ensure_ascii=False).encode() + b"\n"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _job_location(name: str) -> str:
    return "/v1/jobs/" + quote(name, safe="")


class ApiMixin(_HandlerBase):
    """What every resource shares: the node, JSON in and out, errors, the body size limit."""

    public: ClassVar[bool] = False
    """True for endpoints that need no API token (``/health``)."""
    accepts_body: ClassVar[bool] = False
    """True for resources that read a body: ``mount`` streams it, so size is checked first."""

    _received: bytearray | None = None
    _overflow: bool = False

    @property
    def node(self) -> NodeApi:
        node: NodeApi = self.settings["dkron_node"]
        return node

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("X-Whom", self.node.name)

    async def prepare(self) -> None:
        result = super().prepare()
        if result is not None:
            await result
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.node.config.max_body_size:
            raise PayloadTooLarge(self._too_large_message(int(declared)))

    def _too_large_message(self, size: int | None) -> str:
        limit = self.node.config.max_body_size
        what = f"{size} bytes" if size is not None else "too large"
        return (
            f"the request body is {what}; this server accepts at most {limit} bytes "
            "(max_body_size in the node's config)"
        )

    def data_received(self, chunk: bytes) -> None:
        if self._received is None:
            self._received = bytearray()
        if len(self._received) + len(chunk) > self.node.config.max_body_size:
            self._overflow = True  # raising here would drop the connection without an answer
            return
        self._received += chunk

    def request_body(self) -> bytes:
        """The whole body, streamed (``mount``) or read by the server."""
        if self._overflow:
            raise PayloadTooLarge(self._too_large_message(None))
        return bytes(self._received) if self._received is not None else self.request.body

    def json_body(self) -> Any:
        """The body as JSON; a string that is not text (a lone surrogate) is a 400 naming it."""
        value = _parse_json(self.request_body(), what="the request body")
        codec.check_text(value)
        return value

    def compute_etag(self) -> None:
        return None  # answers change with every run; Dkron sends no ETag either

    def finish_as(self, body: bytes, content_type: str) -> None:
        """Finish with a body that is not JSON. jupyter_server's ``APIHandler.finish()`` stamps
        ``application/json`` on every answer unless told otherwise; tornado's takes no such
        keyword."""
        self.set_header("Content-Type", content_type)
        if hasattr(self, "update_api_activity"):
            self.finish(body, set_content_type=content_type)  # type: ignore[call-arg]
        else:
            self.finish(body)

    def write_json(self, value: Any, *, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(_encode_json(value, pretty="pretty" in self.request.query_arguments))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, tornado.web.HTTPError):
            status_code = error.status_code
            body = http_error_body(status_code, self._http_error_message(error))
        elif error is not None:
            status_code = status_for(error)
            body = error_body(error)
        else:
            body = http_error_body(status_code, _reason(status_code))
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="dkron-lab"')
            self.clear_header("X-Whom")  # a caller without a token learns nothing of the node
        self.write_json(body, status=status_code)

    def _http_error_message(self, error: tornado.web.HTTPError) -> str:
        if error.status_code == 405:
            return (
                f"{self.request.method} is not allowed on {self.request.path}; "
                "GET /v1/openapi.json lists the methods of every endpoint"
            )
        if error.log_message:
            return error.log_message % error.args if error.args else error.log_message
        return error.reason or _reason(error.status_code)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, DkronError) and status_for(value) != 500:
            log.info(
                "%s %s: %s: %s",
                self.request.method,
                self.request.uri,
                type(value).__name__,
                value.message,
            )
            return
        super().log_exception(typ, value, tb)


def _parse_json(raw: bytes, *, what: str) -> Any:
    """JSON from ``raw`` or ``BadRequest`` naming the position; NaN and Infinity are not JSON."""
    if not raw.strip():
        raise BadRequest(f"{what} is empty: send a JSON document")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(char {exc.pos})"
        ) from None
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8 text") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"{what} is not acceptable JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON: use a number or null")


def _zone_of(node: NodeApi, job_name: str) -> tzinfo:
    try:
        return node.jobs.get_job(job_name).zone
    except JobNotFound:
        return UTC


# -- resources ----------------------------------------------------------------------------------


class Health(ApiMixin):
    public = True

    def get(self) -> None:
        fault = self.node.storage_fault
        if fault is not None:  # a full disk or an I/O error: writes are refused until it clears
            self.write_json({"status": "unhealthy", "reason": fault}, status=503)
            return
        self.write_json({"status": "healthy"})


class Status(ApiMixin):
    def get(self) -> None:
        self.write_json(self.node.jobs.info())


class Members(ApiMixin):
    def get(self) -> None:
        members = self.node.jobs.members()
        self.set_header("X-Total-Count", len(members))
        self.write_json(members)


class Leader(ApiMixin):
    def get(self) -> None:
        leader = self.node.jobs.leader()
        if leader is None:
            raise Unavailable("no leader is known yet: wait for the election, then retry")
        self.write_json(leader)


class IsLeader(ApiMixin):
    def get(self) -> None:
        if self.node.is_leader:
            self.write_json("I am a leader")
        else:
            self.write_json("I am a follower", status=404)


class Leave(ApiMixin):
    async def post(self) -> None:
        members = self.node.jobs.members()
        await self.node.leave()
        self.write_json(members)


class RaftPeers(ApiMixin):
    accepts_body = True

    def get(self) -> None:
        peers = self.node.jobs.raft_peers()
        self.set_header("X-Total-Count", len(peers))
        self.write_json(peers)

    async def post(self) -> None:
        body = self.json_body()
        address = body.get("address") if isinstance(body, dict) else None
        if not isinstance(address, str):
            raise BadRequest('send {"address": "host:port"}: the new server\'s --bind-addr')
        await self.node.jobs.add_peer(address)
        self.write_json(self.node.jobs.raft_peers())


class RaftPeer(ApiMixin):
    async def delete(self, peer: str) -> None:
        await self.node.jobs.remove_peer(peer)
        self.write_json(self.node.jobs.raft_peers())


class Busy(ApiMixin):
    def get(self) -> None:
        running = self.node.jobs.busy()
        self.set_header("X-Total-Count", len(running))
        self.write_json(
            [codec.execution_to_json(e, _zone_of(self.node, e.job_name)) for e in running]
        )


class Pause(ApiMixin):
    def get(self) -> None:
        self.write_json({"paused": self.node.paused})

    async def post(self) -> None:
        self.write_json({"paused": await self.node.jobs.set_paused(True)})


class Concurrency(ApiMixin):
    """``GET``/``PUT /v1/concurrency``: the cluster-wide limits, with what runs and waits."""

    accepts_body = True

    def get(self) -> None:
        self.write_json(self.node.jobs.concurrency())

    async def put(self) -> None:
        change = LimitChange.from_json(self.json_body())
        self.write_json(await self.node.jobs.set_limits(change))


class Unpause(ApiMixin):
    async def post(self) -> None:
        self.write_json({"paused": await self.node.jobs.set_paused(False)})


class Restore(ApiMixin):
    accepts_body = True

    async def post(self) -> None:
        data = _parse_json(self._form_file("file"), what="the restore file")
        if not isinstance(data, list):
            raise BadRequest(
                "the restore file must be a JSON array of jobs, as GET /v1/jobs returns"
            )
        jobs = []
        for position, item in enumerate(data):
            try:
                jobs.append(codec.job_from_json(item))
            except ValidationError as exc:
                raise type(exc)(f"job #{position} in the restore file: {exc.message}") from None
        messages = await self.node.jobs.restore(jobs)
        # Dkron answers with a JSON string that holds the JSON array; its clients expect that.
        self.write_json(json.dumps(messages))

    def _form_file(self, field: str) -> bytes:
        content_type = self.request.headers.get("Content-Type", "")
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        try:
            httputil.parse_body_arguments(
                content_type, self.request_body(), arguments, files, self.request.headers
            )
        except httputil.HTTPInputError as exc:
            raise BadRequest(f"the form cannot be read: {exc}") from None
        if field in files:
            return files[field][0].body
        if field in arguments:
            return arguments[field][0]
        raise BadRequest(
            f"no {field!r} field in the form: send multipart/form-data, e.g. "
            f"curl -F {field}=@backup.json http://localhost:8080/v1/restore"
        )


class _JobWriter(ApiMixin):
    accepts_body = True

    async def _save(self, data: Any) -> None:
        job, stats = codec.job_from_json(data)
        view = await self.node.jobs.set_job(job, stats)
        if "runoncreate" in self.request.query_arguments:
            view = await self._run_saved(view)
        self.set_header("Location", _job_location(job.name))
        self.write_json(view.to_json(), status=201)

    async def _run_saved(self, view: JobView) -> JobView:
        # The job is saved: a run that cannot start must not turn that into an error (Dkron
        # runs it in the background and ignores the outcome too).
        try:
            return await self.node.jobs.run_job(view.job.name)
        except DkronError as exc:
            log.warning("runoncreate: job %r saved but not run: %s", view.job.name, exc)
            return view

    async def _run(self, name: str) -> None:
        wait = _boolean(self.request.query_arguments, "wait", empty=True) or False
        node = _text(self.request.query_arguments, "node") or None
        view = await self.node.jobs.run_job(name, wait=wait, node=node)
        self.set_header("Location", _job_location(name))
        self.write_json(view.to_json(), status=200 if wait else 202)


class Jobs(_JobWriter):
    async def get(self) -> None:
        arguments = self.request.query_arguments
        views, total = self.node.jobs.list_jobs(job_query(arguments))
        self.set_header("X-Total-Count", total)
        if not _boolean(arguments, "stats", empty=True):  # Dkron's job JSON, unchanged
            self.write_json([view.to_json() for view in views])
            return
        stats = await self.node.jobs.run_stats([view.job.name for view in views])
        self.write_json([_with_stats(v.to_json(), stats.get(v.job.name), v.zone) for v in views])

    async def post(self) -> None:
        await self._save(self.json_body())

    async def patch(self) -> None:
        await self._save(self.json_body())


class JobResource(_JobWriter):
    def get(self, job: str) -> None:
        self.write_json(self.node.jobs.get_job(job).to_json())

    async def put(self, job: str) -> None:
        await self._save(_name_from_path(self.json_body(), job))

    async def post(self, job: str) -> None:
        await self._run(job)

    async def delete(self, job: str) -> None:
        view = await self.node.jobs.delete_job(job)
        self.write_json(view.to_json())


def _name_from_path(data: Any, name: str) -> Any:
    """PUT's path names the job: an absent name is filled in, a different one is refused."""
    if not isinstance(data, dict):
        return data
    given = data.get("name")
    if given in (None, ""):
        return {**data, "name": name}
    if given != name:
        raise BadRequest(
            f"the path names job {name!r} but the body names {given!r}: PUT /v1/jobs/{given} "
            "(or POST /v1/jobs) to save that job; jobs cannot be renamed"
        )
    return data


class Run(_JobWriter):
    accepts_body = False

    async def post(self, job: str) -> None:
        await self._run(job)


class Toggle(ApiMixin):
    async def post(self, job: str) -> None:
        view = await self.node.jobs.toggle_job(job)
        self.set_header("Location", _job_location(job))
        self.write_json(view.to_json())


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


class SchedulePreview(ApiMixin):
    """Our addition: the next fire instants of a schedule, without saving a job."""

    async def get(self) -> None:
        arguments = self.request.query_arguments
        spec = _text(arguments, "schedule")
        if not spec:
            raise BadRequest("the schedule parameter is required, e.g. ?schedule=@every+1h")
        count = _integer(arguments, "count", maximum=MAX_PREVIEW)
        if count == 0:
            raise BadRequest(f"count must be between 1 and {MAX_PREVIEW}")
        after = _instant(arguments, "after") or self.node.clock.now()
        timezone = _text(arguments, "timezone") or ""
        schedule.zone(timezone)  # its own message, not wrapped in the schedule's
        parsed = schedule.parse(spec, timezone=timezone)
        found = await _fires(parsed, after, count or 5)
        self.write_json(
            {
                "schedule": spec,
                "timezone": parsed.timezone,
                "next": [codec.format_time(t, parsed.tzinfo) for t in found],
            }
        )


async def _fires(parsed: schedule.Schedule, after: datetime, count: int) -> list[datetime]:
    # A sparse cron expression can take a while to search: keep it off the event loop.
    return await asyncio.to_thread(schedule.fires, parsed, after, count)


class OpenAPI(ApiMixin):
    def get(self) -> None:
        self.write_json(openapi_document())


class NotFound(ApiMixin):
    """Every path no route matches."""

    def _missing(self, *args: str, **kwargs: str) -> None:
        raise NotFoundError(
            f"no such endpoint: {self.request.method} {self.request.path}; "
            "GET /v1/openapi.json lists every endpoint"
        )

    get = post = put = patch = delete = _missing


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document describing exactly what ``RESOURCES`` serve."""
    text = resources.files("dkron_lab.api").joinpath("openapi.yaml").read_text("utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


class PrometheusMetrics(ApiMixin):
    """The exposition of this node's registry; the API token applies, as to every endpoint."""

    async def get(self) -> None:
        metrics = self.node.metrics
        if not metrics.prometheus_enabled:
            raise NotFoundError(
                "Prometheus metrics are off on this node: start it with --enable-prometheus "
                "(enable-prometheus: true in dkron.yml, or DKRON_ENABLE_PROMETHEUS=true) "
                "to serve GET /metrics"
            )
        accept = self.request.headers.get("Accept")
        body, content_type = await asyncio.to_thread(metrics.render, accept)  # off the IOLoop
        self.finish_as(body, content_type)


def _reason(status: int) -> str:
    """The standard phrase of an HTTP status (``Not Found``), else ``error``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


class Sql(ApiMixin):
    """``POST /v1/sql``: one read-only SELECT over this server's history (docs/sql.md). The
    query and the encoding run in a pool of their own threads, off the IOLoop."""

    accepts_body = True

    async def post(self) -> None:
        request = sql_api.sql_request(self.json_body())
        arrow = sql_api.ARROW_STREAM in self.request.headers.get("Accept", "")
        views, _ = self.node.jobs.list_jobs(JobQuery())
        leader = self.node.jobs.leader()
        leader_name = leader["Name"] if leader else None
        jobs = [sql_api.job_row(view) for view in views]
        members = [sql_api.member_row(member, leader_name) for member in self.node.jobs.members()]
        pretty = "pretty" in self.request.query_arguments
        work = functools.partial(
            sql_api.answer, self.node.history, request, jobs, members, arrow=arrow, pretty=pretty
        )
        result, body = await asyncio.get_running_loop().run_in_executor(sql_api.POOL, work)
        self.set_header("X-Dkron-Truncated", "true" if result.truncated else "false")
        self.set_header("X-Dkron-Rows", result.table.num_rows)
        content_type = sql_api.ARROW_STREAM if arrow else "application/json; charset=UTF-8"
        self.finish_as(bytes(body), content_type)


# -- what the web UI reads (issue 12) -------------------------------------------------------------

EXECUTION_STATUSES = ("success", "failed", "running")
EXECUTION_PAGE = 100
"""Rows of ``GET /v1/executions`` without ``_end``."""
MAX_EXECUTION_PAGE = 1000
"""Most rows one page of ``GET /v1/executions`` holds."""
NDJSON = "application/x-ndjson"


def all_executions_query(
    arguments: Arguments,
) -> tuple[ExecutionFilter, ExecutionQuery, str | None]:
    """``GET /v1/executions`` parameters: the filter, the page (``end`` always set) and the
    ``status`` asked for; ``BadRequest`` says which is wrong."""
    status = _text(arguments, "status") or None
    if status is not None and status not in EXECUTION_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(EXECUTION_STATUSES)}, not {status!r}")
    since, until = _instant(arguments, "since"), _instant(arguments, "until")
    if since is not None and until is not None and until <= since:
        raise BadRequest(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    query = execution_query(arguments)
    end = query.start + EXECUTION_PAGE if query.end is None else query.end
    if end - query.start > MAX_EXECUTION_PAGE:
        raise BadRequest(
            f"a page holds at most {MAX_EXECUTION_PAGE} executions: ask for _start={query.start}"
            f"&_end={query.start + MAX_EXECUTION_PAGE}, then the next page"
        )
    found = ExecutionFilter(
        job=_text(arguments, "job") or None,
        node=_text(arguments, "node") or None,
        success={"success": True, "failed": False}.get(status or ""),
        since=since,
        until=until,
    )
    return found, replace(query, end=end), status


class AllExecutions(ApiMixin):
    """``GET /v1/executions``: every job's executions, running ones first, then this server's
    history newest first; filtered by job, status, node and start time, paged."""

    async def get(self) -> None:
        found, query, status = all_executions_query(self.request.query_arguments)
        page, truncated, total = await self.node.jobs.list_all_executions(
            found, query, finished=status != "running", running=status in (None, "running")
        )
        zones = {name: _zone_of(self.node, name) for name in {e.job_name for e in page}}
        self.set_header("X-Total-Count", total)
        self.write_json(
            [_listed(e, zones[e.job_name], cut) for e, cut in zip(page, truncated, strict=True)]
        )


class ExecutionOutput(ApiMixin):
    """``GET /v1/jobs/<job>/executions/<id>/output?offset=N``: the output from byte N, running
    or finished; the node that runs it is asked by this one, never by the caller."""

    async def get(self, job: str, execution: str) -> None:
        offset = _integer(self.request.query_arguments, "offset") or 0
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
        offset = _integer(self.request.query_arguments, "offset") or 0
        read = functools.partial(self.node.jobs.read_output, job, execution)
        chunk = await read(offset)  # an unknown job or execution is a 404, before any line
        self.set_header("Content-Type", NDJSON)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # a proxy in front must not buffer it
        try:
            while True:
                self.write(_encode_json(chunk.to_json(), pretty=False) + b"\n")
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


def _with_stats(shown: dict[str, Any], stats: RunStats | None, zone: tzinfo) -> dict[str, Any]:
    """A job's JSON with ``last_results`` (newest first) and ``median_duration`` (seconds)."""
    last = stats.last if stats is not None else ()
    return shown | {
        "last_results": [
            {
                "status": "success" if run.success else "failed",
                "started_at": codec.format_time(run.started_at, zone),
                "duration": run.duration,
            }
            for run in last
        ],
        "median_duration": stats.median_duration if stats is not None else None,
    }


RESOURCES: tuple[tuple[str, type[ApiMixin]], ...] = (
    ("/health", Health),
    ("/metrics", PrometheusMetrics),
    ("/v1", Status),
    ("/v1/members", Members),
    ("/v1/leader", Leader),
    ("/v1/isleader", IsLeader),
    ("/v1/leave", Leave),
    ("/v1/raft/peers", RaftPeers),
    ("/v1/raft/peers/{peer}", RaftPeer),
    ("/v1/busy", Busy),
    ("/v1/pause", Pause),
    ("/v1/unpause", Unpause),
    ("/v1/concurrency", Concurrency),
    ("/v1/restore", Restore),
    ("/v1/jobs", Jobs),
    ("/v1/jobs/{job}", JobResource),
    ("/v1/jobs/{job}/run", Run),
    ("/v1/jobs/{job}/toggle", Toggle),
    ("/v1/jobs/{job}/executions", Executions),
    ("/v1/jobs/{job}/executions/{execution}", ExecutionResource),
    ("/v1/jobs/{job}/executions/{execution}/output", ExecutionOutput),
    ("/v1/jobs/{job}/executions/{execution}/output/stream", ExecutionOutputStream),
    ("/v1/jobs/{job}/skipped", Skipped),
    ("/v1/executions", AllExecutions),
    ("/v1/executions/{job}", LegacyExecutions),
    ("/v1/schedule", SchedulePreview),
    ("/v1/sql", Sql),
    ("/v1/openapi.json", OpenAPI),
)
"""Every route as an OpenAPI path template (``{name}`` = one path segment) and its resource."""


def route_pattern(template: str) -> str:
    """The tornado pattern for an OpenAPI path template; a trailing slash is optional, as in gin."""
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    pattern = "".join(
        f"(?P<{part}>[^/]+)" if odd else re.escape(part)
        for odd, part in zip(itertools.cycle((False, True)), parts)
    )
    return pattern + "/?"


def mount(
    resource: type[ApiMixin], base: type[tornado.web.RequestHandler]
) -> type[tornado.web.RequestHandler]:
    """``resource`` composed with a concrete handler ``base`` (headless, or Jupyter's APIHandler).

    Resources that read a body stream it, so an oversized body is refused from its
    ``Content-Length`` before it is read.
    """
    handler: type[tornado.web.RequestHandler] = type(resource.__name__, (resource, base), {})
    if resource.accepts_body:
        handler = tornado.web.stream_request_body(handler)
    return handler
