"""What every resource shares (``ApiMixin``): the node (as ``NodeApi``), JSON in and out,
errors answered in one place, the body size limit; and the small helpers resources use."""

from __future__ import annotations

import json
import logging
from datetime import UTC, tzinfo
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import tornado.iostream
import tornado.web

from dkron_lab import codec
from dkron_lab.api.errors import error_body, http_error_body, status_for
from dkron_lab.api.nodeapi import NodeApi
from dkron_lab.errors import (
    BadRequest,
    DkronError,
    JobNotFound,
    PayloadTooLarge,
)

__all__ = ["ApiMixin", "encode_json", "http_reason", "job_location", "parse_json", "zone_of"]

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    _HandlerBase = tornado.web.RequestHandler
else:
    _HandlerBase = object


def encode_json(value: Any, *, pretty: bool) -> bytes:
    """Go's ``encoding/json`` look: compact, or indented by four spaces with ``?pretty``."""
    if pretty:
        return json.dumps(value, indent=4, ensure_ascii=False).encode() + b"\n"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def job_location(name: str) -> str:
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
        value = parse_json(self.request_body(), what="the request body")
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
        self.finish(encode_json(value, pretty="pretty" in self.request.query_arguments))

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
            body = http_error_body(status_code, http_reason(status_code))
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
        return error.reason or http_reason(error.status_code)

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


def parse_json(raw: bytes, *, what: str) -> Any:
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


def zone_of(node: NodeApi, job_name: str) -> tzinfo:
    try:
        return node.jobs.get_job(job_name).zone
    except JobNotFound:
        return UTC


def http_reason(status: int) -> str:
    """The standard phrase of an HTTP status (``Not Found``), else ``error``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"
