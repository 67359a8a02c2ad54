"""The dashboard widget: the web UI (``/ui``) in a notebook cell, talking through the kernel.

::

    from dkron_lab.jupyter.widget import Dashboard
    Dashboard()                      # the dkron-lab server that started this kernel
    Dashboard(Client(url=..., token=...), refresh=5)

How it is built (anywidget, no build step, nothing from a CDN):

- **The front end is the web UI's own code.** The synced traits carry the texts of
  ``dkron_lab/ui/static``'s modules (``modules``), its page (``page``, index.html) and its style
  sheet scoped to the widget (``css``); ``static/widget.js`` links the modules in the browser
  and mounts the app in a shadow root, at an address of its own (the notebook's
  ``location.hash`` is left alone).
- **Every server call is made in Python through ``dkron_lab.client.Client``**, never from the
  browser, so the widget works under whatever URL and authentication the client has, including
  a server only the kernel can reach. The app's requests arrive as custom messages
  ``{"kind": "request", "id", "method", "path", "query", "body"}`` and are answered with
  ``{"kind": "response", "id", "status", "body", "total"}`` (``total``: X-Total-Count). Only
  paths under ``/v1`` are relayed (``api_path``): the widget is no proxy to other URLs.
- **One worker thread owns the client** and serves the requests in order; the message handler
  on the kernel's thread only enqueues, so a slow or dead server never blocks the kernel. The
  worker stops when the widget is closed. (Messages from the browser reach the kernel only
  between cells: while a cell runs, the widget waits.)
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anywidget
import httpx
import traitlets

from dkron_lab.client import Client
from dkron_lab.client.operations import endpoint
from dkron_lab.client.wire import Operation, Request
from dkron_lab.errors import HTTP_STATUS, DkronError, ValidationError

__all__ = ["METHODS", "Dashboard", "api_path", "scoped_css", "ui_modules"]

log = logging.getLogger(__name__)

_STATIC = Path(__file__).parent / "static"
_UI = Path(__file__).parents[1] / "ui" / "static"

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
"""The HTTP methods the widget relays."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Relayed:
    """One request from the browser, checked: ``path`` is under ``/v1``."""

    id: str
    method: str
    path: str
    query: Mapping[str, str]
    body: Any = None


class Dashboard(anywidget.AnyWidget):
    """The dkron-lab web UI in a notebook cell: the jobs list, a job and its history, runs,
    live output, the job form, the cluster, SQL, the timeline and the dependency graph.

    ``client`` is any ``dkron_lab.Client``; ``None`` makes one that finds the server that started
    the kernel (``Client()``'s discovery). ``refresh``: the shortest time between two refreshes
    of the page shown, in seconds (each page has its own pace, e.g. 5 s for the jobs list;
    ``refresh`` can only slow it down, e.g. for a server far away).
    """

    _esm = _STATIC / "widget.js"

    url = traitlets.Unicode("").tag(sync=True)
    interval = traitlets.Float(2.0).tag(sync=True)
    modules = traitlets.Dict(value_trait=traitlets.Unicode()).tag(sync=True)
    page = traitlets.Unicode("").tag(sync=True)
    css = traitlets.Unicode("").tag(sync=True)

    def __init__(self, client: Client | None = None, *, refresh: float = 2.0) -> None:
        if refresh <= 0:
            raise ValidationError(f"refresh must be a positive number of seconds, not {refresh}")
        self._owns_client = client is None
        self._client = client if client is not None else Client()  # finds the server
        super().__init__(
            url=self._client.url,
            interval=float(refresh),
            modules=ui_modules(),
            page=(_UI / "index.html").read_text(encoding="utf-8"),
            css=scoped_css((_UI / "ui.css").read_text(encoding="utf-8"))
            + (_STATIC / "widget.css").read_text(encoding="utf-8"),
        )
        self._requests: queue.Queue[Relayed | None] = queue.Queue()
        self._stopped = threading.Event()
        self.on_msg(_on_message)
        self._worker = threading.Thread(target=self._work, name="dkron-dashboard", daemon=True)
        self._worker.start()

    @property
    def client(self) -> Client:
        return self._client

    @property
    def running(self) -> bool:
        """Whether the worker thread still serves requests (false once closed)."""
        return self._worker.is_alive()

    def relay(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """Make one request of the browser's through the client, now, on this thread:
        ``{"status", "body", "total"}``; an error is an answer too (its status, and the
        server's ``{"error", "type"}``), never an exception."""
        try:
            checked = _checked({"id": "", "method": method, "path": path, "query": query or {}})
            return _answer(self._client, checked, body)
        except DkronError as exc:
            return _failure(exc)

    def close(self) -> None:
        """Stop the worker, close the client if the dashboard made it, close the widget."""
        stopped = getattr(self, "_stopped", None)  # None: __init__ failed (this is __del__)
        if stopped is not None and not stopped.is_set():
            stopped.set()
            self._requests.put(None)
            if threading.current_thread() is not self._worker:
                self._worker.join(timeout=15)
            if self._owns_client:
                self._client.close()
        super().close()

    def _work(self) -> None:
        while (request := self._requests.get()) is not None:
            answer = self.relay(request.method, request.path, request.query, request.body)
            if not self._stopped.is_set():
                self.send({"kind": "response", "id": request.id, **answer})


def _on_message(widget: Dashboard, content: Any, buffers: list[bytes]) -> None:
    """A custom message from the browser: a request, queued for the worker (a bad one is
    answered at once, from here)."""
    if not isinstance(content, dict) or content.get("kind") != "request":
        log.warning("dashboard: ignoring a message that is no request: %r", content)
        return
    try:
        request = _checked(content)
    except ValidationError as exc:
        widget.send({"kind": "response", "id": str(content.get("id", "")), **_failure(exc)})
        return
    widget._requests.put(request)


def _checked(content: Mapping[str, Any]) -> Relayed:
    method = str(content.get("method", "")).upper()
    if method not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise ValidationError(f"the widget relays no {method or 'empty'} requests; only {known}")
    query = content.get("query") or {}
    if not isinstance(query, Mapping):
        raise ValidationError(f"a request's query is an object of strings, not {query!r}")
    return Relayed(
        id=str(content.get("id", "")),
        method=method,
        path=api_path(str(content.get("path", ""))),
        query={str(k): str(v) for k, v in query.items()},
        body=content.get("body"),
    )


_UNSAFE = re.compile(r"[?#\\\s\x00-\x1f\x7f]")


def api_path(path: str) -> str:
    """``path`` if it names a resource of the ``/v1`` API (``/v1``, ``/v1/``, ``/v1/jobs/x``),
    else ``ValidationError``: the widget relays the API, not any URL of the server's. Refused:
    other roots, ``.`` or ``..`` segments (even percent-encoded), empty segments, a query or
    fragment in the path (the query travels apart), backslashes, spaces and control
    characters."""
    if path in ("/v1", "/v1/"):
        return path
    segments = path.split("/")[2:]
    if (
        not path.startswith("/v1/")
        or _UNSAFE.search(path)
        or any(unquote(segment) in ("", ".", "..") for segment in segments)
    ):
        raise ValidationError(
            f"the widget relays only the /v1 API, and {path!r} is not one of its paths: "
            "ask for /v1/<resource> (e.g. /v1/jobs), with the query apart"
        )
    return path


@endpoint
def _exchange(client: Any, request: Request) -> Operation[httpx.Response]:
    """Send ``request`` and return the raw (successful) response: its headers are needed too."""
    response: httpx.Response = yield request
    return response


def _answer(client: Client, request: Relayed, body: Any) -> dict[str, Any]:
    sent = Request(
        method=request.method, path=request.path, params=dict(request.query) or None, json=body
    )
    try:
        response = _exchange.__get__(client, Client)(sent)
    except DkronError:
        raise
    except Exception as exc:  # a bug here is shown in the widget, and the worker lives on
        log.exception("dashboard: relaying %s %s failed", request.method, request.path)
        raise DkronError(
            f"the kernel could not relay {request.method} {request.path}: {exc}"
        ) from exc
    total = response.headers.get("X-Total-Count")
    try:
        data = response.json() if response.content else None
    except ValueError:
        data = response.text
    return {
        "status": response.status_code,
        "body": data,
        "total": int(total) if total is not None and total.isdigit() else None,
    }


def _failure(exc: DkronError) -> dict[str, Any]:
    """The answer the server gives for ``exc`` (``errors.HTTP_STATUS``, the one table)."""
    status = next((HTTP_STATUS[c] for c in type(exc).__mro__ if c in HTTP_STATUS), 500)
    return {
        "status": status,
        "body": {"error": str(exc), "type": type(exc).__name__},
        "total": None,
    }


def ui_modules() -> dict[str, str]:
    """The web UI's ES modules by path under ``ui/static`` (``"app.js"``, ``"views/job.js"``)."""
    return {
        path.relative_to(_UI).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(_UI.rglob("*.js"))
    }


def scoped_css(css: str) -> str:
    """ui.css for the widget's shadow root: what it says of the page said of the widget. The
    page's root (``:root``, ``html``, with its attribute tests) is the shadow host, ``:host``
    (widget.js mirrors the page root's ``data-role`` onto it); ``body`` is the app's box,
    ``.dk-app``. Every other rule already stays inside the shadow root."""
    scoped = re.sub(r":root\b", ":host", css)
    scoped = re.sub(r"(?<![\w-])html((?:\[[^\]]*\]|:not\([^)]*\))+)", r":host(\1)", scoped)
    scoped = re.sub(r"(?<![\w.#-])html\b(?![\w-])", ":host", scoped)
    return re.sub(r"(?m)^(\s*)body(\s*[,{])", r"\1.dk-app\2", scoped)
