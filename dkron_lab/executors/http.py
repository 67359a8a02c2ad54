"""The ``http`` executor: sends one HTTP request (Dkron's http executor).

Keys of ``executor_config`` (all strings; see docs/executors.md):

``method``, ``url``           required.
``headers``                   JSON array of ``"Name: value"`` strings.
``body``                      request body.
``timeout``                   whole seconds for the whole exchange; default 30, ``0`` for none.
``expectCode``                comma list of statuses counted as success (default: any status).
``expectBody``                regular expression that must be found in the response body.
``debug``                     any non-empty value: the output starts with the job's config.
``tlsNoVerifyPeer``           ``"true"``: do not verify the server's certificate.
``tlsCertificateFile``        client certificate (PEM); its key in ``tlsCertificateKeyFile``
                              or in the same file.
``tlsRootCAsFile``            CA bundle (PEM) trusted instead of the system's.

The output is the response body (its last ``output_limit`` bytes), streamed to ``emit`` as it
arrives. Clients are pooled per TLS setting in a small LRU and closed by ``aclose()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from dkron_lab.errors import ExecutionError, InvalidJob
from dkron_lab.model.units import parse_codes
from dkron_lab.plugins import Emit, ExecutionRequest, ExecutorResult, OutputTail, config_bool

__all__ = ["HttpExecutor", "HttpRequest", "TlsSettings", "parse_config"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30
# expectBody is searched in at most this much of the body (the output keeps only the tail).
_MATCH_LIMIT = 16 * 1024 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS keys of a job; clients are pooled per distinct value."""

    no_verify: bool = False
    certificate_file: str = ""
    key_file: str = ""
    root_cas_file: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """An http ``executor_config``, parsed and checked."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    timeout: float | None = DEFAULT_TIMEOUT
    expect_codes: frozenset[int] = frozenset()
    expect_body: re.Pattern[str] | None = None
    debug: bool = False
    tls: TlsSettings = field(default_factory=TlsSettings)


def parse_config(config: Mapping[str, str]) -> HttpRequest:
    """Parse an http ``executor_config``; ``InvalidJob`` says which key is wrong and why."""
    return HttpRequest(
        method=_parse_method(config.get("method", "")),
        url=_parse_url(config.get("url", "")),
        headers=_parse_headers(config.get("headers", "")),
        body=config.get("body", ""),
        timeout=_parse_timeout(config.get("timeout", "")),
        expect_codes=_parse_codes(config.get("expectCode", "")),
        expect_body=_parse_pattern(config.get("expectBody", "")),
        debug=config.get("debug", "") != "",
        tls=_parse_tls(config),
    )


def _parse_method(text: str) -> str:
    if not text:
        raise InvalidJob('http executor: "method" is required, e.g. "GET" or "POST"')
    if not _TOKEN.match(text):
        raise InvalidJob(f'http executor: "method" {text!r} is not an HTTP method, e.g. "GET"')
    return text


def _parse_url(text: str) -> str:
    if not text:
        raise InvalidJob('http executor: "url" is required, e.g. "https://example.com/hook"')
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise InvalidJob(f'http executor: "url" {text!r} is not a valid URL: {exc}') from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidJob(
            f'http executor: "url" {text!r} must be an absolute http:// or https:// URL'
        )
    return text


def _debug_config(config: Mapping[str, str], spec: HttpRequest) -> bytes:
    """The config as ``debug`` shows it: one key per line, each header on its own, every value
    as written (not escaped, so the runner finds and masks a secret in it, in any spelling)."""
    lines = ["Config:"]
    for key in sorted(config):
        if key == "headers":
            lines += [f"  header: {name}: {value}" for name, value in spec.headers]
        else:
            lines.append(f"  {key}: {config[key]}")
    return ("\n".join(lines) + "\n").encode()


def _parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    example = '"[\\"Content-Type: application/json\\"]"'
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJob(f'http executor: "headers" is not JSON ({exc}); write {example}') from None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise InvalidJob(f'http executor: "headers" must be a JSON array of strings: {example}')
    return tuple(_parse_header(entry) for entry in entries if entry)


def _parse_header(entry: str) -> tuple[str, str]:
    # Split on the first colon only: values such as URLs and times keep theirs.
    name, sep, value = entry.partition(":")
    name = name.strip()
    if not sep or not _TOKEN.match(name) or "\r" in value or "\n" in value:
        raise InvalidJob(f'http executor: header {entry!r} is not "Name: value"')
    return name, value.strip()


def _parse_timeout(text: str) -> float | None:
    if not text:
        return DEFAULT_TIMEOUT
    if not text.strip().isdigit():
        raise InvalidJob(
            f'http executor: "timeout" is whole seconds, e.g. "30", not {text!r} ("0": none)'
        )
    return int(text) or None


def _parse_codes(text: str) -> frozenset[int]:
    try:
        return parse_codes(text, low=100, high=599)
    except ValueError:
        raise InvalidJob(
            f'http executor: "expectCode" {text!r} must list status codes, e.g. "200,206"'
        ) from None


def _parse_pattern(text: str) -> re.Pattern[str] | None:
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise InvalidJob(f'http executor: "expectBody" {text!r} is not a regex: {exc}') from None


def _parse_tls(config: Mapping[str, str]) -> TlsSettings:
    settings = TlsSettings(
        no_verify=config_bool(config, "tlsNoVerifyPeer"),
        certificate_file=config.get("tlsCertificateFile", ""),
        key_file=config.get("tlsCertificateKeyFile", ""),
        root_cas_file=config.get("tlsRootCAsFile", ""),
    )
    if settings.key_file and not settings.certificate_file:
        raise InvalidJob('http executor: "tlsCertificateKeyFile" needs "tlsCertificateFile" too')
    return settings


class HttpExecutor:
    """Sends the request of ``executor_config``; keeps at most ``pool_size`` pooled clients."""

    def __init__(self, *, pool_size: int = 8) -> None:
        self._pool = _ClientPool(pool_size)

    def validate(self, config: Mapping[str, str]) -> None:
        parse_config(config)

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        try:
            spec = parse_config(request.config)
        except InvalidJob as exc:
            return ExecutorResult(success=False, output=b"", error=str(exc))
        tail = OutputTail(request.output_limit)
        head = bytearray() if spec.expect_body is not None else None

        def sink(chunk: bytes) -> None:
            tail.write(chunk)
            emit(chunk)

        if spec.debug:
            sink(_debug_config(request.config, spec))
        try:
            async with self._pool.client(spec.tls) as client, asyncio.timeout(spec.timeout):
                status = await _exchange(client, spec, sink, head)
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ExecutionError) as exc:
            error = _failure_text(spec, exc)
            return ExecutorResult(success=False, output=tail.getvalue(), error=error)
        error = _verdict(spec, status, head)
        return ExecutorResult(success=not error, output=tail.getvalue(), error=error)

    async def aclose(self) -> None:
        await self._pool.aclose()


async def _exchange(
    client: httpx.AsyncClient, spec: HttpRequest, sink: Emit, head: bytearray | None
) -> int:
    headers = httpx.Headers()
    for name, value in spec.headers:
        headers[name] = value  # a later header of the same name wins, as Go's Header.Set
    content = spec.body.encode() or None
    async with client.stream(spec.method, spec.url, headers=headers, content=content) as response:
        if spec.debug:
            logger.info("http: %s %s -> %d", spec.method, spec.url, response.status_code)
        async for chunk in response.aiter_bytes():
            sink(chunk)
            if head is not None and len(head) < _MATCH_LIMIT:
                head += chunk[: _MATCH_LIMIT - len(head)]
        return response.status_code


def _failure_text(spec: HttpRequest, exc: Exception) -> str:
    if isinstance(exc, TimeoutError) and spec.timeout is not None:
        return f"{spec.method} {spec.url}: no complete response within {spec.timeout:g}s timeout"
    if isinstance(exc, ExecutionError):
        return f"{spec.method} {spec.url}: {exc}"
    return f"{spec.method} {spec.url}: {type(exc).__name__}: {exc}"


def _verdict(spec: HttpRequest, status: int, head: bytearray | None) -> str:
    """Why the response is a failure, or ``""``."""
    if spec.expect_codes and status not in spec.expect_codes:
        expected = ",".join(str(code) for code in sorted(spec.expect_codes))
        return f"received response code {status} does not match the expected code ({expected})"
    body = head.decode("utf-8", errors="replace") if head is not None else None
    if spec.expect_body is not None and body is not None and not spec.expect_body.search(body):
        pattern = spec.expect_body.pattern
        return f"received response body did not match the expected body /{pattern}/"
    return ""


class _Pooled:
    __slots__ = ("client", "retired", "users")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.users = 0
        self.retired = False


class _ClientPool:
    """One ``httpx.AsyncClient`` per TLS setting, least recently used evicted past ``size``.

    An evicted client still in use is closed when its last request ends.
    """

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._entries: OrderedDict[TlsSettings, _Pooled] = OrderedDict()

    @asynccontextmanager
    async def client(self, tls: TlsSettings) -> AsyncIterator[httpx.AsyncClient]:
        entry = await self._checkout(tls)
        entry.users += 1
        try:
            yield entry.client
        finally:
            entry.users -= 1
            if entry.retired and entry.users == 0:
                await entry.client.aclose()

    async def _checkout(self, tls: TlsSettings) -> _Pooled:
        entry = self._entries.get(tls)
        if entry is not None:
            self._entries.move_to_end(tls)
            return entry
        entry = _Pooled(_new_client(tls))
        self._entries[tls] = entry
        if len(self._entries) > self._size:
            _, evicted = self._entries.popitem(last=False)
            evicted.retired = True
            if evicted.users == 0:
                await evicted.client.aclose()
        return entry

    async def aclose(self) -> None:
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            await entry.client.aclose()


def _new_client(tls: TlsSettings) -> httpx.AsyncClient:
    # As Dkron's Go client: redirects followed, no proxy from the environment (a node's jobs
    # should not change route with its shell's variables). Timeouts are asyncio.timeout's.
    return httpx.AsyncClient(
        verify=_ssl_context(tls), follow_redirects=True, timeout=None, trust_env=False
    )


def _ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """``ExecutionError`` naming the key whose file is missing or unreadable."""
    context = _load_tls("tlsRootCAsFile", tls.root_cas_file, _verify_context)
    if tls.no_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.certificate_file:
        _load_tls(
            "tlsCertificateFile",
            tls.certificate_file,
            lambda path: context.load_cert_chain(path, tls.key_file or None),
        )
    return context


def _verify_context(root_cas_file: str) -> ssl.SSLContext:
    if root_cas_file:
        # Only these CAs, as Go's RootCAs: create_default_context skips the system ones then.
        return ssl.create_default_context(cafile=root_cas_file)
    # certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set (Go honours those too).
    return httpx.create_ssl_context(trust_env=True)


_T = TypeVar("_T")


def _load_tls(key: str, path: str, load: Callable[[str], _T]) -> _T:
    try:
        return load(path)
    except OSError as exc:
        raise ExecutionError(f"{key} {path!r}: {exc.strerror or exc}") from None
