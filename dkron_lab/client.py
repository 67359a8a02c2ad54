"""Clients for the Dkron v1 REST API, served by dkron-lab (headless or inside Jupyter) or by
Dkron itself: ``Client`` (synchronous) and ``AsyncClient`` (its ``await``-able twin).

The kernel, the CLI and the widget use them, so this module imports no server code: only
``httpx`` and ``dkron_lab.errors`` (``pyarrow`` when an Arrow result is asked for). It speaks plain
dicts in Dkron's JSON shapes. A server error comes back as the same exception class the server
raised, read from dkron-lab's JSON error body ``{"error": "<message>", "type": "<ClassName>"}``;
a plain-text error body (Dkron's) is mapped by status code. A node that cannot be reached is an
``Unavailable`` that says how to start one.

Each operation is written once, as a generator that yields the ``Request`` it needs and gets the
``httpx.Response`` back (``endpoint``); ``Client`` drives it with blocking I/O and
``AsyncClient`` with ``await``, so both have the same methods, arguments and errors::

    with Client("http://127.0.0.1:8080") as dkron:
        dkron.put_job({"name": "hello", "schedule": "@every 1m",
                       "executor": "shell", "executor_config": {"command": "echo hi"}})
        dkron.run_job("hello", wait=True)
        print(dkron.executions("hello")[0]["output"])

    async with AsyncClient() as dkron:       # no URL: the server that started this kernel
        jobs = await dkron.jobs()

Without ``url``, ``discover()`` finds the server: ``DKRON_LAB_URL``/``DKRON_LAB_TOKEN`` (exported
by the Jupyter extension to its kernels), else the runtime file of the Jupyter server that
started this kernel (``jpserver-<JPY_PARENT_PID>.json``), else ``DKRON_ADDRESS`` (as the CLI
reads it), else ``http://127.0.0.1:8080``; for those two the token is ``DKRON_API_TOKEN``, else
the one a server on this host generated into its data dir (``local_token``).

``https://`` URLs are checked against the system's CAs, or against ``tls_ca`` (a PEM bundle;
``DKRON_TLS_CA``) for a server whose certificate a private CA signed.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
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
from urllib.parse import quote

import httpx

from dkron_lab.errors import (
    HTTP_STATUS,
    DkronError,
    Unauthorized,
    Unavailable,
    ValidationError,
    error_class,
)
from dkron_lab.netaddr import is_loopback

if TYPE_CHECKING:
    import pyarrow

__all__ = [
    "ARROW_STREAM",
    "DEFAULT_URL",
    "AsyncClient",
    "Client",
    "Connection",
    "Request",
    "discover",
    "endpoint",
    "local_token",
    "token_file",
]

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATA_DIR = "dkron.data"
"""A headless server's data dir when it is not given: relative to where it was started."""
TOKEN_FILE = "api-token"
"""The file of the data dir where a server started without ``--api-token`` keeps its token."""
ARROW_STREAM = "application/vnd.apache.arrow.stream"
NDJSON = "application/x-ndjson"
KERNEL_TOKEN_HEADER = "X-Dkron-Lab-Token"
"""The header the Jupyter extension reads the secret it gave its kernels from."""

_BY_STATUS: dict[int, type[DkronError]] = {status: cls for cls, status in HTTP_STATUS.items()}
_BY_STATUS[403] = Unauthorized  # Jupyter refuses unauthenticated and unauthorized calls so

# Keyword arguments that stand for Dkron's react-admin query parameters.
_QUERY_NAMES = {"sort": "_sort", "order": "_order", "start": "_start", "end": "_end"}

_T = TypeVar("_T")
_P = ParamSpec("_P")


class _Unset:
    """The client's own timeout (``Request.timeout`` not given)."""


CLIENT_TIMEOUT = _Unset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One HTTP request an operation needs; a path is relative to the client's URL."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None | _Unset = CLIENT_TIMEOUT


Operation = Generator[Request, httpx.Response, _T]
"""An operation: yields the requests it needs, receives each successful response, returns."""


# -- discovery ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connection:
    """Where a client talks to and how it proves who it is; ``source`` says how it was found."""

    url: str
    token: str | None = None
    source: str = "explicit"


def discover(environ: Mapping[str, str] | None = None) -> Connection:
    """The server this process should talk to, with no configuration, in this order:

    1. ``DKRON_LAB_URL`` (and ``DKRON_LAB_TOKEN``): exported by the Jupyter extension into the
       environment its kernels inherit;
    2. ``jpserver-<JPY_PARENT_PID>.json`` in the Jupyter runtime dir: the server that started
       this kernel, its URL + ``dkron/`` and its Jupyter token;
    3. ``DKRON_ADDRESS`` / ``DKRON_API_TOKEN``, as the CLI reads them;
    4. ``http://127.0.0.1:8080``, a headless agent's default.

    The token of 3 and 4 is ``local_token``'s: ``DKRON_API_TOKEN``, else (for a server on this
    host, or with ``DKRON_DATA_DIR`` naming its data dir) the one it generated there.
    """
    env = os.environ if environ is None else environ
    if env.get("DKRON_LAB_URL"):
        return Connection(env["DKRON_LAB_URL"], env.get("DKRON_LAB_TOKEN") or None, "DKRON_LAB_URL")
    found = _from_runtime_file(env)
    if found is not None:
        return found
    url, source = (env["DKRON_ADDRESS"], "DKRON_ADDRESS") if env.get("DKRON_ADDRESS") else (
        DEFAULT_URL, "default"
    )  # fmt: skip
    return Connection(url, local_token(url, environ=env), source)


def token_file(
    data_dir: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """Where a server keeps its generated token: ``<data_dir>/api-token``, the data dir being
    ``data_dir``, else ``DKRON_DATA_DIR``, else ``./dkron.data`` (a server's own default)."""
    env = os.environ if environ is None else environ
    return Path(data_dir or env.get("DKRON_DATA_DIR") or DEFAULT_DATA_DIR) / TOKEN_FILE


def local_token(
    url: str,
    data_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The token for the server at ``url`` when none is given: ``DKRON_API_TOKEN``, else the
    ``api-token`` file of its data dir (``token_file``), else ``None``.

    The file is read only when the data dir is named (``data_dir``, ``DKRON_DATA_DIR``) or the
    server is on this host (a loopback URL): the local server's admin token is never sent to
    another host just because a file happens to sit in the working directory.
    """
    env = os.environ if environ is None else environ
    if env.get("DKRON_API_TOKEN"):
        return env["DKRON_API_TOKEN"]
    if not (data_dir or env.get("DKRON_DATA_DIR") or _is_loopback(url)):
        return None
    try:
        return token_file(data_dir, env).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):  # none there, or another user's server
        return None


def _is_loopback(url: str) -> bool:
    return is_loopback(httpx.URL(url).host if "://" in url else url.rsplit(":", 1)[0])


def _from_runtime_file(env: Mapping[str, str]) -> Connection | None:
    """The launching Jupyter server's ``jpserver-<pid>.json`` (``JPY_PARENT_PID`` is its pid
    whatever wraps the kernel; ``os.getppid()`` is not)."""
    pid = env.get("JPY_PARENT_PID", "")
    if not pid.isdigit():
        return None
    runtime_dir = env.get("JUPYTER_RUNTIME_DIR") or _jupyter_runtime_dir()
    path = Path(runtime_dir) / f"jpserver-{pid}.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not url.startswith("http") or url.startswith("http+unix"):
        return None  # a unix-socket server needs an explicit %dkron connect
    return Connection(url.rstrip("/") + "/dkron", info.get("token") or None, str(path))


def _jupyter_runtime_dir() -> str:
    from jupyter_core.paths import jupyter_runtime_dir

    return jupyter_runtime_dir()


# -- operations, declared once ----------------------------------------------------------------


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
    def __get__(self, client: _Operations, owner: type) -> Callable[_P, Any]: ...

    def __get__(self, client: Any, owner: type) -> Any:
        if client is None:
            return self
        operation = self._operation

        def bound(*args: Any, **kwargs: Any) -> Any:
            return client._drive(operation(client, *args, **kwargs))

        functools.update_wrapper(bound, operation)
        bound.__signature__ = self._signature  # type: ignore[attr-defined]
        return bound


def _json(request: Request) -> Operation[Any]:
    response = yield request
    return response.json() if response.content else None


def _part(segment: str) -> str:
    return quote(str(segment), safe="")


def _query(params: Mapping[str, Any]) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key == "metadata":
            query |= {f"metadata[{k}]": str(v) for k, v in value.items()}
        elif isinstance(value, bool):
            query[_QUERY_NAMES.get(key, key)] = "true" if value else "false"
        else:
            query[_QUERY_NAMES.get(key, key)] = str(value)
    return query


def _get(path: str, **params: Any) -> Request:
    return Request(method="GET", path=path, params=_query(params) if params else None)


def _post(path: str, body: Any = None, **params: Any) -> Request:
    return Request(method="POST", path=path, json=body, params=_query(params) if params else None)


class _Operations:
    """Every operation of the API; ``Client`` and ``AsyncClient`` differ only in how they send.

    Every method raises a ``DkronError`` subclass on failure; nothing returns an error value.
    """

    # jobs

    @endpoint
    def jobs(self, /, **params: Any) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/jobs``: ``q``, ``status``, ``disabled``, ``metadata={k: v}``, ``sort``,
        ``order``, ``start``, ``end`` (or Dkron's own ``_sort``... names)."""
        found: list[dict[str, Any]] = yield from _json(_get("/v1/jobs", **params))
        return found

    @endpoint
    def job(self, name: str) -> Operation[dict[str, Any]]:
        """``GET /v1/jobs/{name}``; ``JobNotFound`` if there is none."""
        found: dict[str, Any] = yield from _json(_get(f"/v1/jobs/{_part(name)}"))
        return found

    @endpoint
    def put_job(self, job: Mapping[str, Any]) -> Operation[dict[str, Any]]:
        """Create or replace a job (``POST /v1/jobs``, a full replace as in Dkron)."""
        found: dict[str, Any] = yield from _json(_post("/v1/jobs", dict(job)))
        return found

    @endpoint
    def delete_job(self, name: str) -> Operation[dict[str, Any]]:
        """Delete a job; returns it as it was."""
        found: dict[str, Any] = yield from _json(
            Request(method="DELETE", path=f"/v1/jobs/{_part(name)}")
        )
        return found

    @endpoint
    def run_job(self, name: str, wait: bool = False) -> Operation[dict[str, Any]]:
        """Run a job now. With ``wait`` the call returns once every execution of this run has
        finished (no client timeout then); returns the job, with its ``status`` after the run."""
        request = Request(
            method="POST",
            path=f"/v1/jobs/{_part(name)}/run",
            params={"wait": "true" if wait else "false"},
            timeout=None if wait else CLIENT_TIMEOUT,
        )
        found: dict[str, Any] = yield from _json(request)
        return found

    @endpoint
    def toggle_job(self, name: str) -> Operation[dict[str, Any]]:
        """Flip ``disabled``; returns the job as it is now."""
        found: dict[str, Any] = yield from _json(_post(f"/v1/jobs/{_part(name)}/toggle"))
        return found

    @endpoint
    def set_enabled(self, name: str, enabled: bool) -> Operation[dict[str, Any]]:
        """Enable or disable a job (a toggle when it is not so already); returns the job."""
        job: dict[str, Any] = yield from _json(_get(f"/v1/jobs/{_part(name)}"))
        if bool(job.get("disabled")) == enabled:
            job = yield from _json(_post(f"/v1/jobs/{_part(name)}/toggle"))
        return job

    @endpoint
    def skipped(self, job: str) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/jobs/{job}/skipped``: spans of missed fires that were not run, newest
        first (``{"reason", "first", "last", "count", "recorded_at"}``)."""
        found: list[dict[str, Any]] = yield from _json(_get(f"/v1/jobs/{_part(job)}/skipped"))
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
        request = _get(
            "/v1/schedule", schedule=schedule, timezone=timezone, count=count, after=after
        )
        found: dict[str, Any] = yield from _json(request)
        return found

    # executions

    @endpoint
    def executions(self, job: str, /, **params: Any) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/jobs/{job}/executions``, newest first: ``sort``, ``order``, ``start``,
        ``end``, ``output_size_limit``. ``JobNotFound`` if the job does not exist."""
        found: list[dict[str, Any]] = yield from _json(
            _get(f"/v1/jobs/{_part(job)}/executions", **params)
        )
        return found

    @endpoint
    def execution(self, job: str, id: str) -> Operation[dict[str, Any]]:
        """One execution with its full output."""
        found: dict[str, Any] = yield from _json(
            _get(f"/v1/jobs/{_part(job)}/executions/{_part(id)}")
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
        found: list[dict[str, Any]] = yield from _json(_get("/v1/executions", **params))
        return found

    @endpoint
    def execution_output(self, job: str, id: str, offset: int = 0) -> Operation[dict[str, Any]]:
        """``GET /v1/jobs/{job}/executions/{id}/output``: the output from byte ``offset``,
        running or finished: ``{"offset", "next", "done", "data"}``. Read again from
        ``next`` until ``done``; ``offset`` in the answer is past the one asked for when the
        bytes before it are no longer kept. ``ExecutionNotFound`` if there is no such run."""
        path = f"/v1/jobs/{_part(job)}/executions/{_part(id)}/output"
        found: dict[str, Any] = yield from _json(_get(path, offset=offset))
        return found

    @endpoint
    def busy(self) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/busy``: the executions running now, cluster-wide."""
        found: list[dict[str, Any]] = yield from _json(_get("/v1/busy"))
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
        return _arrow_table(response)

    # cluster

    @endpoint
    def members(self) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/members``: Dkron's Member objects."""
        found: list[dict[str, Any]] = yield from _json(_get("/v1/members"))
        return found

    @endpoint
    def leader(self) -> Operation[dict[str, Any]]:
        """``GET /v1/leader``: the Member that leads the cluster."""
        found: dict[str, Any] = yield from _json(_get("/v1/leader"))
        return found

    @endpoint
    def raft_peers(self) -> Operation[list[dict[str, Any]]]:
        """``GET /v1/raft/peers``: the Raft voters as the server sees them."""
        found: list[dict[str, Any]] = yield from _json(_get("/v1/raft/peers"))
        return found

    @endpoint
    def add_raft_peer(self, address: str) -> Operation[list[dict[str, Any]]]:
        """``POST /v1/raft/peers``: make the (already started) server at ``address`` a voter."""
        found: list[dict[str, Any]] = yield from _json(
            _post("/v1/raft/peers", {"address": address})
        )
        return found

    @endpoint
    def remove_raft_peer(self, peer: str) -> Operation[list[dict[str, Any]]]:
        """``DELETE /v1/raft/peers/<peer>``: take a server out of the Raft group."""
        request = Request(method="DELETE", path=f"/v1/raft/peers/{_part(peer)}")
        found: list[dict[str, Any]] = yield from _json(request)
        return found

    @endpoint
    def leave(self) -> Operation[list[dict[str, Any]]]:
        """``POST /v1/leave``: the node shuts down gracefully."""
        found: list[dict[str, Any]] = yield from _json(_post("/v1/leave"))
        return found

    @endpoint
    def paused(self) -> Operation[bool]:
        """``GET /v1/pause``: whether new job submissions are paused."""
        answer = yield from _json(_get("/v1/pause"))
        return bool(answer["paused"])

    @endpoint
    def pause(self) -> Operation[bool]:
        """``POST /v1/pause``: refuse new job submissions (runs go on); returns ``True``."""
        answer = yield from _json(_post("/v1/pause"))
        return bool(answer["paused"])

    @endpoint
    def unpause(self) -> Operation[bool]:
        """``POST /v1/unpause``: accept job submissions again; returns ``False``."""
        answer = yield from _json(_post("/v1/unpause"))
        return bool(answer["paused"])

    @endpoint
    def info(self) -> Operation[dict[str, Any]]:
        """``GET /v1``: ``{"agent": {"name", "version"}, "serf": {...}, "tags": {...}}``."""
        found: dict[str, Any] = yield from _json(_get("/v1"))
        return found

    @endpoint
    def health(self) -> Operation[dict[str, Any]]:
        """``GET /health``: ``{"status": "healthy"}`` once the node serves its API."""
        found: dict[str, Any] = yield from _json(_get("/health"))
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
        return (yield from _json(_request(method, path, params, json)))


_F = TypeVar("_F", bound=Callable[..., Any])


def _twin(method: _F) -> _F:
    """A streaming method of both clients, shown without its return type as ``endpoint``
    shows the operations: the twins' iterators differ only in being sync or async."""
    signature = inspect.signature(method)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty
    )
    return method


def _stream_request(job: str, id: str, offset: int) -> Request:
    """``follow_output``'s request: the stream may be quiet between keep-alives for longer than
    the client's timeout, so only the connection is timed."""
    return Request(
        method="GET",
        path=f"/v1/jobs/{_part(job)}/executions/{_part(id)}/output/stream",
        params={"offset": str(offset)},
        headers={"Accept": NDJSON},
    )


def _request(method: str, path: str, params: Mapping[str, Any] | None, body: Any) -> Request:
    query = _query(params) if params else None
    return Request(method=method.upper(), path="/" + path.lstrip("/"), params=query, json=body)


def _arrow_table(response: httpx.Response) -> pyarrow.Table:
    """The Arrow IPC stream body as a table (zero-copy); a JSON answer (a server that does not
    speak Arrow) is converted. The row count and truncation go into the schema metadata."""
    import pyarrow as pa

    if response.headers.get("Content-Type", "").startswith(ARROW_STREAM):
        table = pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()
        truncated = response.headers.get("X-Dkron-Truncated", "false").lower() == "true"
        rows = response.headers.get("X-Dkron-Rows", str(table.num_rows))
    else:
        body = response.json()
        names = [column["name"] for column in body["columns"]]
        table = pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in body["rows"]])
        if not names or table.num_columns == 0:
            table = pa.table({name: pa.array([], pa.null()) for name in names})
        truncated, rows = bool(body.get("truncated")), str(body.get("row_count", table.num_rows))
    metadata = dict(table.schema.metadata or {})
    metadata |= {
        b"dkron.truncated": b"true" if truncated else b"false",
        b"dkron.rows": rows.encode(),
    }
    return table.replace_schema_metadata(metadata)


def _error(response: httpx.Response, request: str) -> DkronError:
    """The exception for an error response: by the body's ``type``, else by status code."""
    try:
        body = response.json()
    except ValueError:
        body = response.text.strip()  # Dkron answers errors in plain text, or not at all
    by_status = _BY_STATUS.get(response.status_code, DkronError)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        named = error_class(str(body.get("type", "")))
        return (by_status if named is DkronError else named)(body["error"])
    if isinstance(body, dict) and isinstance(body.get("message"), str):  # Jupyter's own errors
        return by_status(f"{request} failed: {response.status_code} {body['message']}")
    if isinstance(body, str) and body and not body.lstrip().startswith("<"):
        return by_status(body)
    return by_status(f"{request} failed: {response.status_code} {response.reason_phrase}")


def _unavailable(url: str, timeout: float | None, request: Request, exc: Exception) -> Unavailable:
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return Unavailable(
            f"the TLS certificate of {url} is not trusted ({exc}): give the PEM file of the CA "
            "that signed it with --tls-ca (or DKRON_TLS_CA; Client(tls_ca=...))"
        )
    if isinstance(exc, httpx.ConnectError):
        return Unavailable(
            f"cannot reach dkron-lab at {url}: is the agent running? "
            "(dkron-lab agent --server --bootstrap-expect 1, or Jupyter with dkron-lab installed)"
        )
    if isinstance(exc, httpx.TimeoutException):
        return Unavailable(
            f"dkron-lab at {url} did not answer {request.method} {request.path} within "
            f"{timeout}s: retry, or raise the timeout"
        )
    return Unavailable(f"cannot talk to dkron-lab at {url}: {exc}")


# -- the two clients ------------------------------------------------------------------------------


class _Base(_Operations):
    """What both clients share: where they connect, headers, and reading responses."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float | None = 10.0,
        *,
        tls_ca: str | Path | None = None,
    ) -> None:
        """``url`` and ``token`` for any dkron-lab or Dkron server; with no ``url`` the server
        is found by ``discover()`` (and its token with it); with a ``url`` but no ``token``, the
        token is ``local_token(url)``'s (``DKRON_API_TOKEN``, or the generated one of a server
        on this host). ``timeout`` is in seconds (``None``:
        wait for ever). The token is sent as ``Authorization: Bearer`` (headless dkron-lab and
        Jupyter), Dkron Pro's ``X-Dkron-Token`` and the Jupyter extension's kernel secret header.
        ``tls_ca`` (default ``DKRON_TLS_CA``): a PEM bundle that an ``https://`` server's
        certificate is checked against instead of the system's CAs.
        """
        if url:
            connection = Connection(url, token if token is not None else local_token(url))
        else:
            connection = discover()
        if url is None and token is not None:
            connection = Connection(connection.url, token, connection.source)
        self.connection = connection
        self.url = connection.url.rstrip("/")
        self.timeout = timeout
        self._verify = _verify(tls_ca or os.environ.get("DKRON_TLS_CA") or None)
        self._headers = {"Accept": "application/json"}
        if connection.token:
            tok = connection.token
            self._headers |= {
                "Authorization": f"Bearer {tok}",
                "X-Dkron-Token": tok,
                KERNEL_TOKEN_HEADER: tok,
            }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _options(self, request: Request) -> dict[str, Any]:
        options: dict[str, Any] = {"params": request.params, "headers": dict(request.headers)}
        if request.json is not None:
            options["json"] = request.json
        if not isinstance(request.timeout, _Unset):
            options["timeout"] = request.timeout
        return options

    def _checked(self, request: Request, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise _error(response, f"{request.method} {request.path}")
        return response


def _verify(tls_ca: str | Path | None) -> ssl.SSLContext | bool:
    if tls_ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(tls_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(
            f"cannot read the CA bundle {tls_ca} (--tls-ca / DKRON_TLS_CA): {exc}; "
            "give the PEM file of the CA that signed the server's certificate"
        ) from None


class Client(_Base):
    """A blocking connection to one node's REST API (kernel code, CLI, widget)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float | None = 10.0,
        *,
        tls_ca: str | Path | None = None,
    ) -> None:
        super().__init__(url, token, timeout, tls_ca=tls_ca)
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=timeout, verify=self._verify
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._http.close()

    def _drive(self, operation: Operation[_T]) -> _T:
        try:
            request = next(operation)
            while True:
                request = operation.send(self._send(request))
        except StopIteration as done:
            result: _T = done.value
            return result

    @_twin
    def follow_output(self, job: str, id: str, offset: int = 0) -> Iterator[dict[str, Any]]:
        """``GET /v1/jobs/{job}/executions/{id}/output/stream``: the output's chunks
        (``{"offset", "next", "done", "data"}``) as the run prints them, until the one with
        ``done``; chunks with empty ``data`` are the server's keep-alives. A stream that ends
        without ``done`` (the node running it stopped answering) can be resumed with
        ``execution_output`` from the last ``next``. ::

            for chunk in dkron.follow_output("backup", execution_id):
                print(chunk["data"], end="")
        """
        request = _stream_request(job, id, offset)
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self._http.stream(
                "GET", request.path, params=request.params, headers=request.headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise _error(response, f"GET {request.path}")
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise _unavailable(self.url, self.timeout, request, exc) from exc

    def _send(self, request: Request) -> httpx.Response:
        try:
            response = self._http.request(request.method, request.path, **self._options(request))
        except httpx.HTTPError as exc:
            raise _unavailable(self.url, self.timeout, request, exc) from exc
        return self._checked(request, response)


class AsyncClient(_Base):
    """The ``await``-able twin of ``Client``: the same methods, arguments and errors."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float | None = 10.0,
        *,
        tls_ca: str | Path | None = None,
    ) -> None:
        super().__init__(url, token, timeout, tls_ca=tls_ca)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=timeout, verify=self._verify
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        await self._http.aclose()

    async def _drive(self, operation: Operation[_T]) -> _T:
        try:
            request = next(operation)
            while True:
                request = operation.send(await self._send(request))
        except StopIteration as done:
            result: _T = done.value
            return result

    @_twin
    async def follow_output(
        self, job: str, id: str, offset: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """The ``async for`` twin of ``Client.follow_output``:
        ``async for chunk in dkron.follow_output(job, id): print(chunk["data"], end="")``."""
        request = _stream_request(job, id, offset)
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "GET", request.path, params=request.params, headers=request.headers, timeout=timeout
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise _error(response, f"GET {request.path}")
                async for line in response.aiter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise _unavailable(self.url, self.timeout, request, exc) from exc

    async def _send(self, request: Request) -> httpx.Response:
        try:
            response = await self._http.request(
                request.method, request.path, **self._options(request)
            )
        except httpx.HTTPError as exc:
            raise _unavailable(self.url, self.timeout, request, exc) from exc
        return self._checked(request, response)
