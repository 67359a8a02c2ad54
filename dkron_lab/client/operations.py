"""Every operation of the API, written once (``endpoint``): a generator that yields the
``Request`` it needs and gets the response back. ``Client`` drives it with blocking I/O,
``AsyncClient`` with ``await``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    TypeVar,
    overload,
)

from dkron_lab.client.wire import (
    ARROW_STREAM,
    CLIENT_TIMEOUT,
    Operation,
    Request,
    any_request,
    arrow_table,
    get_request,
    json_of,
    post_request,
    quoted,
)
from dkron_lab.errors import (
    ValidationError,
)

if TYPE_CHECKING:
    from dkron_lab.client import AsyncClient, Client

__all__ = ["Operations", "endpoint", "twin"]

_T = TypeVar("_T")
_P = ParamSpec("_P")


class endpoint(Generic[_P, _T]):
    """An operation written once as a generator function; a method of both clients.

    On a ``Client`` it runs to completion and returns; on an ``AsyncClient`` it returns an
    awaitable. The generator's first parameter is the client (unused by most operations).
    """

    def __init__(self, operation: Callable[Concatenate[Any, _P], Operation[_T]]) -> None:
        self._operation = operation
        self.__doc__ = operation.__doc__
        signature = inspect.signature(operation)
        self._signature = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )

    @overload
    def __get__(self, client: None, owner: type) -> endpoint[_P, _T]: ...
    @overload
    def __get__(self, client: Client, owner: type) -> Callable[_P, _T]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type) -> Callable[_P, Awaitable[_T]]: ...
    @overload
    def __get__(self, client: Operations, owner: type) -> Callable[_P, Any]: ...

    def __get__(self, client: Any, owner: type) -> Any:
        if client is None:
            return self
        operation = self._operation

        def bound(*args: Any, **kwargs: Any) -> Any:
            return client._drive(operation(client, *args, **kwargs))

        functools.update_wrapper(bound, operation)
        bound.__signature__ = self._signature  # type: ignore[attr-defined]
        return bound


class Operations:
    """Every operation of the API; ``Client`` and ``AsyncClient`` differ only in how they send.

    Every method raises a ``DkronError`` subclass on failure; nothing returns an error value.
    """

    # jobs

    @endpoint
    def jobs(self, /, **params: Any) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/jobs``: ``q``, ``status``, ``disabled``, ``metadata={k: v}``, ``sort``,
        ``order``, ``start``, ``end`` (or Dkron's own ``_sort``... names)."""
        found: list[dict[str, Any]] = yield from json_of(get_request("/v1/jobs", **params))
        return found

    @endpoint
    def job(self, name: str) -> Operation[dict[str, Any]]:
        """``GET /v1/jobs/{name}``; ``JobNotFound`` if there is none."""
        found: dict[str, Any] = yield from json_of(get_request(f"/v1/jobs/{quoted(name)}"))
        return found

    @endpoint
    def put_job(self, job: Mapping[str, Any]) -> Operation[dict[str, Any]]:
        """Create or replace a job (``POST /v1/jobs``, a full replace as in Dkron)."""
        found: dict[str, Any] = yield from json_of(post_request("/v1/jobs", dict(job)))
        return found

    @endpoint
    def delete_job(self, name: str) -> Operation[dict[str, Any]]:
        """Delete a job; returns it as it was."""
        found: dict[str, Any] = yield from json_of(
            Request(method="DELETE", path=f"/v1/jobs/{quoted(name)}")
        )
        return found

    @endpoint
    def run_job(self, name: str, wait: bool = False) -> Operation[dict[str, Any]]:
        """Run a job now. With ``wait`` the call returns once every execution of this run has
        finished (no client timeout then); returns the job, with its ``status`` after the run."""
        request = Request(
            method="POST",
            path=f"/v1/jobs/{quoted(name)}/run",
            params={"wait": "true" if wait else "false"},
            timeout=None if wait else CLIENT_TIMEOUT,
        )
        found: dict[str, Any] = yield from json_of(request)
        return found

    @endpoint
    def toggle_job(self, name: str) -> Operation[dict[str, Any]]:
        """Flip ``disabled``; returns the job as it is now."""
        found: dict[str, Any] = yield from json_of(post_request(f"/v1/jobs/{quoted(name)}/toggle"))
        return found

    @endpoint
    def set_enabled(self, name: str, enabled: bool) -> Operation[dict[str, Any]]:
        """Enable or disable a job (a toggle when it is not so already); returns the job."""
        job: dict[str, Any] = yield from json_of(get_request(f"/v1/jobs/{quoted(name)}"))
        if bool(job.get("disabled")) == enabled:
            job = yield from json_of(post_request(f"/v1/jobs/{quoted(name)}/toggle"))
        return job

    @endpoint
    def skipped(self, job: str) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/jobs/{job}/skipped``: spans of missed fires that were not run, newest
        first (``{"reason", "first", "last", "count", "recorded_at"}``)."""
        found: list[dict[str, Any]] = yield from json_of(
            get_request(f"/v1/jobs/{quoted(job)}/skipped")
        )
        return found

    @endpoint
    def schedule_preview(
        self,
        schedule: str,
        *,
        timezone: str | None = None,
        count: int | None = None,
        after: str | None = None,
    ) -> Operation[dict[str, Any]]:
        """``GET /v1/schedule``: the next ``count`` fire instants of ``schedule`` in ``timezone``
        after ``after`` (RFC 3339), without saving a job: ``{"schedule", "timezone", "next"}``."""
        request = get_request(
            "/v1/schedule", schedule=schedule, timezone=timezone, count=count, after=after
        )
        found: dict[str, Any] = yield from json_of(request)
        return found

    @endpoint
    def ping(self, job: str, kind: str = "", body: str = "") -> Operation[dict[str, Any]]:
        """Ping the heartbeat check ``job`` (``kind``: ``""``, ``"start"`` or ``"fail"``); the
        body is the run's output. Returns the run recorded (``/start``: ``{"started": true}``)."""
        suffix = f"/{quoted(kind)}" if kind else ""
        request = Request(
            method="POST", path=f"/v1/jobs/{quoted(job)}/ping{suffix}", content=body or None
        )
        found: dict[str, Any] = yield from json_of(request)
        return found

    @endpoint
    def backfill(
        self,
        job: str,
        first: datetime | str,
        last: datetime | str,
        mode: str = "all",
        max_parallel: int = 4,
    ) -> Operation[dict[str, Any]]:
        """Start a backfill of ``job``'s past instants from ``first`` to ``last`` (aware
        ``datetime`` or RFC 3339); returns it (``id``, ``total``, ``state``...)."""
        body = {
            "from": first.isoformat() if isinstance(first, datetime) else first,
            "to": last.isoformat() if isinstance(last, datetime) else last,
            "mode": mode,
            "max_parallel": max_parallel,
        }
        request = post_request(f"/v1/jobs/{quoted(job)}/backfill", body)
        found: dict[str, Any] = yield from json_of(request)
        return found

    @endpoint
    def backfills(self, job: str | None = None) -> Operation[list[dict[str, Any]]]:
        """The backfills kept (of ``job``), newest first."""
        params = {"job": job} if job else {}
        found: list[dict[str, Any]] = yield from json_of(get_request("/v1/backfills", **params))
        return found

    @endpoint
    def get_backfill(self, id: str) -> Operation[dict[str, Any]]:
        """One backfill and its progress."""
        found: dict[str, Any] = yield from json_of(get_request(f"/v1/backfills/{quoted(id)}"))
        return found

    @endpoint
    def cancel_backfill(self, id: str) -> Operation[dict[str, Any]]:
        """Claim no more of its instants (runs in flight finish)."""
        request = Request(method="DELETE", path=f"/v1/backfills/{quoted(id)}")
        found: dict[str, Any] = yield from json_of(request)
        return found

    # executions

    @endpoint
    def executions(self, job: str, /, **params: Any) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/jobs/{job}/executions``, newest first: ``sort``, ``order``, ``start``,
        ``end``, ``output_size_limit``. ``JobNotFound`` if the job does not exist."""
        found: list[dict[str, Any]] = yield from json_of(
            get_request(f"/v1/jobs/{quoted(job)}/executions", **params)
        )
        return found

    @endpoint
    def execution(self, job: str, id: str) -> Operation[dict[str, Any]]:
        """One execution with its full output."""
        found: dict[str, Any] = yield from json_of(
            get_request(f"/v1/jobs/{quoted(job)}/executions/{quoted(id)}")
        )
        return found

    @endpoint
    def list_executions_all(self, /, **params: Any) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/executions``: every job's executions, running ones first, then this
        server's history newest first. Filters ``job``, ``status`` (``success``, ``failed``,
        ``running``), ``node``, ``since``/``until`` (RFC 3339 with an offset, or aware
        ``datetime``); ``sort``, ``order``, ``start``, ``end`` (100 rows without it, 1000 at
        most), ``output_size_limit``."""
        params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
        found: list[dict[str, Any]] = yield from json_of(get_request("/v1/executions", **params))
        return found

    @endpoint
    def execution_output(self, job: str, id: str, offset: int = 0) -> Operation[dict[str, Any]]:
        """``GET /v1/jobs/{job}/executions/{id}/output``: the output from byte ``offset``,
        running or finished: ``{"offset", "next", "done", "data"}``. Read again from
        ``next`` until ``done``; ``offset`` in the answer is past the one asked for when the
        bytes before it are no longer kept. ``ExecutionNotFound`` if there is no such run."""
        path = f"/v1/jobs/{quoted(job)}/executions/{quoted(id)}/output"
        found: dict[str, Any] = yield from json_of(get_request(path, offset=offset))
        return found

    @endpoint
    def busy(self) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/busy``: the executions running now, cluster-wide."""
        found: list[dict[str, Any]] = yield from json_of(get_request("/v1/busy"))
        return found

    @endpoint
    def sql(
        self,
        query: str,
        *,
        max_rows: int | None = None,
        timeout: float | None = None,
        format: Literal["arrow", "json"] = "arrow",
    ) -> Operation[Any]:
        """``POST /v1/sql``: one read-only SELECT over the history views (``executions``,
        ``jobs``, ``members``). ``format="arrow"`` returns a ``pyarrow.Table`` whose schema
        metadata has ``dkron.truncated`` and ``dkron.rows``; ``"json"`` returns
        ``{"columns": [{"name", "type"}], "rows": [[...]], "truncated", "row_count"}``.
        ``QueryRefused``, ``InvalidQuery`` or ``QueryTimeout`` say what is wrong."""
        if format not in ("arrow", "json"):
            raise ValidationError(f"format must be 'arrow' or 'json', not {format!r}")
        body: dict[str, Any] = {"query": query}
        body |= {"max_rows": max_rows} if max_rows is not None else {}
        body |= {"timeout": timeout} if timeout is not None else {}
        accept = ARROW_STREAM if format == "arrow" else "application/json"
        request = Request(
            method="POST",
            path="/v1/sql",
            json=body,
            headers={"Accept": accept},
            timeout=timeout + 10.0 if timeout is not None else CLIENT_TIMEOUT,
        )
        response = yield request
        if format == "json":
            return response.json()
        return arrow_table(response)

    # cluster

    @endpoint
    def members(self) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/members``: Dkron's Member objects."""
        found: list[dict[str, Any]] = yield from json_of(get_request("/v1/members"))
        return found

    @endpoint
    def leader(self) -> Operation[dict[str, Any]]:
        """``GET /v1/leader``: the Member that leads the cluster."""
        found: dict[str, Any] = yield from json_of(get_request("/v1/leader"))
        return found

    @endpoint
    def raft_peers(self) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/raft/peers``: the Raft voters as the server sees them."""
        found: list[dict[str, Any]] = yield from json_of(get_request("/v1/raft/peers"))
        return found

    @endpoint
    def add_raft_peer(self, address: str) -> Operation[list[dict[str, Any]]]:
        """``POST /v1/raft/peers``: make the (already started) server at ``address`` a voter."""
        found: list[dict[str, Any]] = yield from json_of(
            post_request("/v1/raft/peers", {"address": address})
        )
        return found

    @endpoint
    def remove_raft_peer(self, peer: str) -> Operation[list[dict[str, Any]]]:
        """``DELETE /v1/raft/peers/<peer>``: take a server out of the Raft group."""
        request = Request(method="DELETE", path=f"/v1/raft/peers/{quoted(peer)}")
        found: list[dict[str, Any]] = yield from json_of(request)
        return found

    @endpoint
    def leave(self) -> Operation[list[dict[str, Any]]]:
        """``POST /v1/leave``: the node shuts down gracefully."""
        found: list[dict[str, Any]] = yield from json_of(post_request("/v1/leave"))
        return found

    @endpoint
    def paused(self) -> Operation[bool]:
        """``GET /v1/pause``: whether new job submissions are paused."""
        answer = yield from json_of(get_request("/v1/pause"))
        return bool(answer["paused"])

    @endpoint
    def pause(self) -> Operation[bool]:
        """``POST /v1/pause``: refuse new job submissions (runs go on); returns ``True``."""
        answer = yield from json_of(post_request("/v1/pause"))
        return bool(answer["paused"])

    @endpoint
    def unpause(self) -> Operation[bool]:
        """``POST /v1/unpause``: accept job submissions again; returns ``False``."""
        answer = yield from json_of(post_request("/v1/unpause"))
        return bool(answer["paused"])

    @endpoint
    def info(self) -> Operation[dict[str, Any]]:
        """``GET /v1``: ``{"agent": {"name", "version"}, "serf": {...}, "tags": {...}}``."""
        found: dict[str, Any] = yield from json_of(get_request("/v1"))
        return found

    @endpoint
    def health(self) -> Operation[dict[str, Any]]:
        """``GET /health``: ``{"status": "healthy"}`` once the node serves its API."""
        found: dict[str, Any] = yield from json_of(get_request("/health"))
        return found

    @endpoint
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Operation[Any]:
        """Any other endpoint: ``method path`` (relative to the client's URL), JSON in and out."""
        return (yield from json_of(any_request(method, path, params, json)))


_F = TypeVar("_F", bound=Callable[..., Any])


def twin(method: _F) -> _F:
    """A streaming method of both clients, shown without its return type as ``endpoint``
    shows the operations: the twins' iterators differ only in being sync or async."""
    signature = inspect.signature(method)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty
    )
    return method
