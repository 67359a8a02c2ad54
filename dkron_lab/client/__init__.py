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

import json
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from dkron_lab.client.discovery import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    TOKEN_FILE,
    Connection,
    discover,
    local_token,
    token_file,
)
from dkron_lab.client.operations import Operations, endpoint, twin
from dkron_lab.client.wire import (
    ARROW_STREAM,
    KERNEL_TOKEN_HEADER,
    NDJSON,
    Operation,
    Request,
    Unset,
    error_of,
    stream_request,
    unavailable,
)
from dkron_lab.errors import ValidationError

__all__ = [
    "ARROW_STREAM",
    "DEFAULT_DATA_DIR",
    "DEFAULT_URL",
    "KERNEL_TOKEN_HEADER",
    "NDJSON",
    "TOKEN_FILE",
    "AsyncClient",
    "Client",
    "Connection",
    "Request",
    "discover",
    "endpoint",
    "local_token",
    "token_file",
]

_T = TypeVar("_T")


# -- the two clients ------------------------------------------------------------------------------


class _Base(Operations):
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
        self._open(base_url=self.url, headers=self._headers, timeout=timeout, verify=self._verify)

    def _open(self, **options: Any) -> None:
        """Make the pooled HTTP client (``httpx.Client`` or ``httpx.AsyncClient``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _options(self, request: Request) -> dict[str, Any]:
        options: dict[str, Any] = {"params": request.params, "headers": dict(request.headers)}
        if request.json is not None:
            options["json"] = request.json
        if request.content is not None:
            options["content"] = request.content.encode()
            options["headers"].setdefault("Content-Type", "text/plain; charset=utf-8")
        if not isinstance(request.timeout, Unset):
            options["timeout"] = request.timeout
        return options

    def _checked(self, request: Request, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise error_of(response, f"{request.method} {request.path}")
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

    _http: httpx.Client

    def _open(self, **options: Any) -> None:
        self._http = httpx.Client(**options)

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

    @twin
    def follow_output(self, job: str, id: str, offset: int = 0) -> Iterator[dict[str, Any]]:
        """``GET /v1/jobs/{job}/executions/{id}/output/stream``: the output's chunks
        (``{"offset", "next", "done", "data"}``) as the run prints them, until the one with
        ``done``; chunks with empty ``data`` are the server's keep-alives. A stream that ends
        without ``done`` (the node running it stopped answering) can be resumed with
        ``execution_output`` from the last ``next``. ::

            for chunk in dkron.follow_output("backup", execution_id):
                print(chunk["data"], end="")
        """
        request = stream_request(job, id, offset)
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self._http.stream(
                "GET", request.path, params=request.params, headers=request.headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_of(response, f"GET {request.path}")
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise unavailable(self.url, self.timeout, request, exc) from exc

    def _send(self, request: Request) -> httpx.Response:
        try:
            response = self._http.request(request.method, request.path, **self._options(request))
        except httpx.HTTPError as exc:
            raise unavailable(self.url, self.timeout, request, exc) from exc
        return self._checked(request, response)


class AsyncClient(_Base):
    """The ``await``-able twin of ``Client``: the same methods, arguments and errors."""

    _http: httpx.AsyncClient

    def _open(self, **options: Any) -> None:
        self._http = httpx.AsyncClient(**options)

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

    @twin
    async def follow_output(
        self, job: str, id: str, offset: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """The ``async for`` twin of ``Client.follow_output``:
        ``async for chunk in dkron.follow_output(job, id): print(chunk["data"], end="")``."""
        request = stream_request(job, id, offset)
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "GET", request.path, params=request.params, headers=request.headers, timeout=timeout
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_of(response, f"GET {request.path}")
                async for line in response.aiter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise unavailable(self.url, self.timeout, request, exc) from exc

    async def _send(self, request: Request) -> httpx.Response:
        try:
            response = await self._http.request(
                request.method, request.path, **self._options(request)
            )
        except httpx.HTTPError as exc:
            raise unavailable(self.url, self.timeout, request, exc) from exc
        return self._checked(request, response)
