"""The REST API's resources and their routes (``RESOURCES``): thin translators from HTTP to the
node's ``jobs`` facade and back.

Each resource is a mixin over ``ApiMixin`` (``base.py``) that needs only tornado's
``RequestHandler`` surface and finds the node in ``self.settings["dkron_node"]``.
``mount(resource, base)`` composes it with a concrete handler base:
``dkron_lab.api.app.HeadlessHandler`` (token auth, CORS) on a plain tornado server, or
jupyter_server's ``APIHandler`` inside Jupyter. Errors are raised as ``dkron_lab.errors``
classes and answered by the one ``ApiMixin.write_error``. The resources live by what they
serve: ``cluster.py``, ``jobs.py``, ``executions.py``, and here the API's own (OpenAPI, metrics,
SQL, not found); query parameters are parsed by the pure functions of ``params.py``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import re
from functools import cache
from importlib import resources
from typing import Any

import tornado.iostream
import tornado.web
import yaml

from dkron_lab.api import sql as sql_api
from dkron_lab.api.auth import Principal, Role
from dkron_lab.api.backfills import BackfillResource, Backfills, JobBackfill
from dkron_lab.api.badges import JobBadge, TagBadge
from dkron_lab.api.base import ApiMixin
from dkron_lab.api.calendars import CalendarResource, Calendars
from dkron_lab.api.cluster import (
    Busy,
    Concurrency,
    Health,
    IsLeader,
    Leader,
    Leave,
    Members,
    Pause,
    RaftPeer,
    RaftPeers,
    Status,
    Unpause,
)
from dkron_lab.api.executions import (
    AllExecutions,
    ExecutionOutput,
    ExecutionOutputStream,
    ExecutionResource,
    Executions,
    LegacyExecutions,
    Skipped,
)
from dkron_lab.api.jobs import (
    JobCounts,
    JobResource,
    Jobs,
    Restore,
    Run,
    SchedulePreview,
    Toggle,
)
from dkron_lab.api.params import (
    EXECUTION_PAGE,
    all_executions_query,
    execution_query,
    job_query,
)
from dkron_lab.api.ping import Ping
from dkron_lab.errors import NotFoundError
from dkron_lab.views import ExecutionQuery, JobQuery

__all__ = [
    "EXECUTION_PAGE",
    "RESOURCES",
    "ApiMixin",
    "ExecutionQuery",
    "ExecutionOutputStream",
    "Health",
    "NotFound",
    "PrometheusMetrics",
    "all_executions_query",
    "execution_query",
    "job_query",
    "mount",
    "openapi_document",
    "route_pattern",
]


class OpenAPI(ApiMixin):
    def get(self) -> None:
        self.write_json(openapi_document())


_JUPYTER_ACTIONS = ((Role.ADMIN, "write"), (Role.OPERATOR, "execute"))
"""The Authorizer actions Jupyter's handlers ask for each role (``dkron_lab.jupyter``'s
``ROLE_ACTIONS``), strongest first; a caller who got this far may ``read`` (a viewer)."""


class Whoami(ApiMixin):
    """Our addition: who the caller is and their role, so a page shows only the actions that
    role may take (the server checks every request anyway)."""

    async def get(self) -> None:
        principal: Principal | None = getattr(self, "principal", None)  # the headless server's
        if principal is None:
            principal = await self._jupyter_caller()
        self.write_json({"name": principal.name, "role": principal.role.value})

    async def _jupyter_caller(self) -> Principal:
        """Inside Jupyter: the logged-in user, and the strongest role its Authorizer grants on
        this route's resource (the server's own kernels are admins)."""
        user = self.current_user
        name = str(getattr(user, "username", None) or user or "anonymous")
        if getattr(self, "kernel_request", False):
            return Principal(name=name, role=Role.ADMIN)
        authorizer = getattr(self, "authorizer", None)
        resource = getattr(self, "auth_resource", "")
        for role, action in _JUPYTER_ACTIONS:
            if authorizer is None:
                return Principal(name=name, role=Role.ADMIN)
            allowed = authorizer.is_authorized(self, user, action, resource)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if allowed:
                return Principal(name=name, role=role)
        return Principal(name=name, role=Role.VIEWER)


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
    ("/v1/jobs/{job}/ping", Ping),
    ("/v1/jobs/{job}/ping/{kind}", Ping),
    ("/v1/jobs/{job}/backfill", JobBackfill),
    ("/v1/backfills", Backfills),
    ("/v1/backfills/{backfill}", BackfillResource),
    ("/v1/executions", AllExecutions),
    ("/v1/executions/{job}", LegacyExecutions),
    ("/v1/schedule", SchedulePreview),
    ("/v1/calendars", Calendars),
    ("/v1/calendars/{calendar}", CalendarResource),
    ("/v1/jobs/{job}/badge.{format}", JobBadge),
    ("/v1/badges/tag/{key}/{value}.{format}", TagBadge),
    ("/v1/sql", Sql),
    ("/v1/openapi.json", OpenAPI),
    ("/v1/whoami", Whoami),
    ("/v1/counts", JobCounts),
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
