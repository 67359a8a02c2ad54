"""The wire under both clients: the ``Request`` an operation yields, building it from an
operation's arguments, and reading what comes back (JSON, an Arrow table, or the exception the
server raised)."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    TypeVar,
)
from urllib.parse import quote

import httpx

from dkron_lab.errors import (
    HTTP_STATUS,
    DkronError,
    Unauthorized,
    Unavailable,
    error_class,
)

if TYPE_CHECKING:
    import pyarrow

__all__ = [
    "ARROW_STREAM",
    "CLIENT_TIMEOUT",
    "KERNEL_TOKEN_HEADER",
    "NDJSON",
    "Operation",
    "Request",
    "Unset",
    "any_request",
    "arrow_table",
    "error_of",
    "get_request",
    "json_of",
    "post_request",
    "query_of",
    "quoted",
    "stream_request",
    "unavailable",
]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
NDJSON = "application/x-ndjson"
KERNEL_TOKEN_HEADER = "X-Dkron-Lab-Token"
"""The header the Jupyter extension reads the secret it gave its kernels from."""

_BY_STATUS: dict[int, type[DkronError]] = {status: cls for cls, status in HTTP_STATUS.items()}
_BY_STATUS[403] = Unauthorized  # Jupyter refuses unauthenticated and unauthorized calls so

# Keyword arguments that stand for Dkron's react-admin query parameters.
_QUERY_NAMES = {"sort": "_sort", "order": "_order", "start": "_start", "end": "_end"}

_T = TypeVar("_T")


class Unset:
    """The client's own timeout (``Request.timeout`` not given)."""


CLIENT_TIMEOUT = Unset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One HTTP request an operation needs; a path is relative to the client's URL."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    content: str | None = None
    """A text body (sent as ``text/plain``), for the requests whose body is not JSON."""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None | Unset = CLIENT_TIMEOUT


Operation = Generator[Request, httpx.Response, _T]
"""An operation: yields the requests it needs, receives each successful response, returns."""


def json_of(request: Request) -> Operation[Any]:
    response = yield request
    return response.json() if response.content else None


def quoted(segment: str) -> str:
    return quote(str(segment), safe="")


def query_of(params: Mapping[str, Any]) -> dict[str, str]:
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


def get_request(path: str, **params: Any) -> Request:
    return Request(method="GET", path=path, params=query_of(params) if params else None)


def post_request(path: str, body: Any = None, **params: Any) -> Request:
    return Request(method="POST", path=path, json=body, params=query_of(params) if params else None)


def stream_request(job: str, id: str, offset: int) -> Request:
    """``follow_output``'s request: the stream may be quiet between keep-alives for longer than
    the client's timeout, so only the connection is timed."""
    return Request(
        method="GET",
        path=f"/v1/jobs/{quoted(job)}/executions/{quoted(id)}/output/stream",
        params={"offset": str(offset)},
        headers={"Accept": NDJSON},
    )


def any_request(method: str, path: str, params: Mapping[str, Any] | None, body: Any) -> Request:
    query = query_of(params) if params else None
    return Request(method=method.upper(), path="/" + path.lstrip("/"), params=query, json=body)


def arrow_table(response: httpx.Response) -> pyarrow.Table:
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


def error_of(response: httpx.Response, request: str) -> DkronError:
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


def unavailable(url: str, timeout: float | None, request: Request, exc: Exception) -> Unavailable:
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
