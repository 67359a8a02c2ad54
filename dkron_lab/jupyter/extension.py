"""The Jupyter server extension: a dkron-lab node inside the Jupyter server's process and loop.

``DkronLab`` (an ``ExtensionApp``, config section ``c.DkronLab``) builds one ``Config`` from its
traits, checked by the same ``resolve_config`` as the CLI's flags, and one ``Node`` from it. The
traits that name an agent option take their type and help from its declaration
(``dkron_lab.config.OPTIONS``); only their defaults are the extension's own. By
default the node is a one-node server whose data lives in ``<jupyter data dir>/dkron-lab``; with
``join`` (and ``server=False`` for an agent) it is a member of an existing cluster.

What it serves:

* every route of ``dkron_lab.api.handlers.RESOURCES`` under ``{base_url}dkron/``, on a
  jupyter_server ``APIHandler``: Jupyter authenticates each request (token, cookie + XSRF,
  JupyterHub), and the server's ``Authorizer`` is asked with one resource per route group
  (``RESOURCE_JOBS``, ``RESOURCE_EXECUTIONS``, ``RESOURCE_CLUSTER``, ``RESOURCE_SQL``) and the
  action of the role the headless server would require (``auth_action``): ``read`` for what a
  viewer may do, ``execute`` for an operator's run, toggle and pause, ``write`` for the rest;
* the web UI (``dkron_lab/ui/static``) at ``{base_url}dkron/ui/`` (``UiFiles``), behind
  Jupyter's login (a browser without it is redirected there), its ``index.html`` switched to
  Jupyter's cookie and ``_xsrf`` (``<meta name="dkron-auth" content="jupyter">``); its API base
  stays ``../v1``, i.e. ``{base_url}dkron/v1``. The UI's Content-Security-Policy lets only this
  origin frame it (the JupyterLab extension's dashboard tab), unless the operator's
  ``c.ServerApp.tornado_settings["headers"]`` names other frame ancestors for Jupyter itself;
* the same routes accept the secret this extension gives its kernels (``X-Dkron-Lab-Token``):
  a request with it is a kernel of this server, running as the server's user, so it is trusted
  as the server's owner (no XSRF: a header is not sent by browsers on their own);
* the cluster's internal API (``/internal/v1/...``) on the node's own ``http_addr`` (default
  ``127.0.0.1:<free port>``), where other nodes reach it; every call there is signed with the
  cluster key (``encrypt``, else the one a standalone node keeps in its ``0700`` data dir).

The node's own admin token (``<data_dir>/api-token``) opens nothing here: the public API is
Jupyter's, and kernels reach it with the Jupyter token or the secret above.

Lifecycle (jupyter_server >= 2.15): ``initialize_settings`` builds the node (before the port is
bound); ``_start_jupyter_server_extension`` exports ``DKRON_LAB_URL``/``DKRON_LAB_TOKEN`` for the
kernels started afterwards and starts the node in a task, so Jupyter does not wait for Raft (the
API answers 503 until the node is ready); ``stop_extension`` stops it, idempotently. SIGTERM
stops Jupyter through ``stop_extension``; a SIGINT without a terminal does not
(docs/jupyter.md).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

import tornado.httpserver
import tornado.web
from jupyter_core.paths import jupyter_data_dir
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.auth.identity import User
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import ensure_async
from traitlets import Bool, Dict, Integer, List, TraitType, Unicode, default

from dkron_lab import ui
from dkron_lab.api import handlers
from dkron_lab.api.app import make_app, record_change
from dkron_lab.api.auth import Principal, Role, role_needed
from dkron_lab.api.handlers import ApiMixin, Health, NotFound, mount, route_pattern
from dkron_lab.client import KERNEL_TOKEN_HEADER
from dkron_lab.config import OPTIONS, Config, resolve_config
from dkron_lab.errors import DkronError, Forbidden, Unavailable
from dkron_lab.netaddr import free_port
from dkron_lab.node import Node

__all__ = [
    "RESOURCE_CLUSTER",
    "RESOURCE_EXECUTIONS",
    "RESOURCE_JOBS",
    "RESOURCE_SQL",
    "DkronHandler",
    "DkronLab",
    "UiFiles",
    "auth_action",
    "auth_resource",
    "routes",
]

log = logging.getLogger(__name__)

PREFIX = "dkron"
"""The REST API is served under ``{base_url}dkron/``."""

RESOURCE_JOBS = "dkron_lab:jobs"
RESOURCE_EXECUTIONS = "dkron_lab:executions"
RESOURCE_CLUSTER = "dkron_lab:cluster"
RESOURCE_SQL = "dkron_lab:sql"

_EXECUTION_ROUTES = ("/v1/jobs/{job}/executions", "/v1/jobs/{job}/skipped", "/v1/executions")
_CLUSTER_ROUTES = (  # and "/v1" itself, the node's status
    "/health", "/v1/members", "/v1/leader", "/v1/isleader", "/v1/leave", "/v1/raft",
    "/v1/busy", "/v1/pause", "/v1/unpause", "/metrics",
)  # fmt: skip


def auth_resource(template: str) -> str:
    """The ``Authorizer`` resource of a route template: SQL, executions (history), cluster
    (members, leader, Raft, pause, leave, health, metrics), or jobs (everything else)."""
    if template == "/v1/sql" or template.startswith("/v1/sql/"):
        return RESOURCE_SQL
    if template.startswith(_EXECUTION_ROUTES):
        return RESOURCE_EXECUTIONS
    if template == "/v1" or any(
        template == route or template.startswith(route + "/") for route in _CLUSTER_ROUTES
    ):
        return RESOURCE_CLUSTER
    return RESOURCE_JOBS


ROLE_ACTIONS = {Role.VIEWER: "read", Role.OPERATOR: "execute", Role.ADMIN: "write"}
"""The ``Authorizer`` action that stands for each role of the headless server's tokens."""


def auth_action(method: str, template: str | None) -> str:
    """The ``Authorizer`` action of ``method`` on a route (its template, e.g.
    ``/v1/jobs/{job}/run``; ``None`` for no route): the role the headless server requires for
    it (``dkron_lab.api.auth.role_needed``), as Jupyter's ``read`` (viewer), ``execute``
    (operator: run, toggle, pause) or ``write`` (admin)."""
    return ROLE_ACTIONS[role_needed(method, template)]


class DkronHandler(APIHandler):
    """The Jupyter base of every route: Jupyter's auth, or the kernels' secret header."""

    auth_resource = RESOURCE_JOBS
    route_template: str | None = None
    """The route this handler serves (``None``: the JSON 404 of unknown paths)."""
    kernel_request = False
    """True when the request carried this server's kernel secret."""

    async def prepare(self) -> None:  # type: ignore[override]
        app: DkronLab = self.settings[DkronLab.name]
        given = self.request.headers.get(KERNEL_TOKEN_HEADER, "")
        if given and hmac.compare_digest(given.encode(), app.kernel_secret.encode()):
            self.kernel_request = True
            self.current_user = self._jupyter_current_user = User(username="dkron-lab-kernel")
        else:
            await super().prepare()
        app.check_ready()

    async def authorize(self) -> None:
        """Ask the server's ``Authorizer`` (never for this server's kernels): ``Forbidden``
        (403) unless the user may do this request's ``auth_action`` on ``auth_resource``."""
        if self.kernel_request:
            return
        app: DkronLab = self.settings[DkronLab.name]
        method = self.request.method or "GET"
        action = auth_action(method, self.route_template)
        user = self.current_user
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, user, action, self.auth_resource)
        )
        if not allowed:
            app.log.warning(
                "dkron-lab: %s may not %s %s (%s %s)",
                user.username, action, self.auth_resource, method, self.request.path,
            )  # fmt: skip
            raise Forbidden(
                f"user {user.username} is not authorized to {action} on resource: "
                f"{self.auth_resource} ({method} {self.route_template or self.request.path} "
                f"needs the {role_needed(method, self.route_template)} role); ask the admin "
                "of this Jupyter server for that permission"
            )

    def on_finish(self) -> None:
        super().on_finish()
        user = self.current_user
        if user is None or "dkron_node" not in self.settings:
            return
        method = self.request.method or "GET"
        role = Role.ADMIN if self.kernel_request else role_needed(method, self.route_template)
        record_change(self, Principal(name=user.username, role=role))

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        # APIHandler.finish would label every body JSON: keep what the resource set (Arrow).
        kwargs.setdefault("set_content_type", self._headers.get("Content-Type", "application/json"))
        return super().finish(*args, **kwargs)


def _protect(method: Callable[..., Any]) -> Callable[..., Any]:
    """``@web.authenticated`` and the ``Authorizer``, except for this server's kernels."""

    @functools.wraps(method)
    async def guarded(self: DkronHandler, *args: Any, **kwargs: Any) -> Any:
        await self.authorize()
        result = method(self, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    return tornado.web.authenticated(guarded)


def _guarded(
    resource: type[ApiMixin], auth: str, template: str | None
) -> type[tornado.web.RequestHandler]:
    handler = mount(resource, DkronHandler)
    verbs: dict[str, Any] = {"auth_resource": auth, "route_template": template}
    for verb in (m.lower() for m in handler.SUPPORTED_METHODS if m != "OPTIONS"):
        method = getattr(handler, verb)
        if method is not tornado.web.RequestHandler._unimplemented_method:
            verbs[verb] = _protect(method)
    return type(handler.__name__, (handler,), verbs)


def routes() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """Every route of ``RESOURCES`` (read now, so routes added later are served too) under
    ``dkron/``, and a JSON 404 for any other path there; patterns are relative to base_url."""
    found = [
        (PREFIX + route_pattern(template), _guarded(resource, auth_resource(template), template))
        for template, resource in handlers.RESOURCES
    ]
    return [*found, (PREFIX + r"(?:/.*)?", _guarded(NotFound, RESOURCE_JOBS, None))]


_AUTH_META = re.compile(r'(<meta name="dkron-auth" content=")[^"]*(")')
_FRAME_ANCESTORS = re.compile(r"(?:^|;)\s*(frame-ancestors[^;]*)")


def jupyter_index() -> str:
    """The UI's ``index.html`` with its client switched to Jupyter's cookie and ``_xsrf``."""
    page, found = _AUTH_META.subn(r"\1jupyter\2", (ui.STATIC / "index.html").read_text())
    if found != 1:
        raise RuntimeError("dkron_lab/ui/static/index.html has no <meta name='dkron-auth'>")
    return page


class UiFiles(JupyterHandler, tornado.web.StaticFileHandler):
    """The web UI's files under ``{base_url}dkron/ui/``, for a user Jupyter has logged in (any
    other is sent to Jupyter's login page); ``index.html`` says ``dkron-auth: jupyter``. The
    page holds no data: each API call it makes is authorized on its own."""

    auth_resource = RESOURCE_JOBS

    @property
    def content_security_policy(self) -> str:
        # frame-ancestors applies to every ancestor: where the operator let others frame
        # Jupyter, they frame the Lab tab that frames this page too.
        configured = self.settings.get("headers", {}).get("Content-Security-Policy", "")
        ancestors = _FRAME_ANCESTORS.search(configured)
        if ancestors is None:
            return ui.CONTENT_SECURITY_POLICY
        return ui.CONTENT_SECURITY_POLICY.replace("frame-ancestors 'self'", ancestors[1].strip())

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Referrer-Policy", "no-referrer")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")

    def compute_etag(self) -> str | None:
        if getattr(self, "absolute_path", None) is None:  # the page get wrote: hash its body
            return tornado.web.RequestHandler.compute_etag(self)
        return super().compute_etag()

    @tornado.web.authenticated
    @authorized
    async def get(self, path: str, include_body: bool = True) -> None:  # type: ignore[override]
        await self._serve(path, include_body)

    @tornado.web.authenticated
    @authorized
    async def head(self, path: str) -> None:  # type: ignore[override]
        await self._serve(path, False)

    async def _serve(self, path: str, include_body: bool) -> None:
        self.xsrf_token  # noqa: B018 (sets the _xsrf cookie the page sends back on writes)
        if path in ("", "index.html"):
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.set_header("Cache-Control", "no-cache")
            await self.finish(jupyter_index() if include_body else None)
            return
        await tornado.web.StaticFileHandler.get(self, path, include_body)


class _ToUi(JupyterHandler):
    """``{base_url}dkron/ui``: to ``ui/``, relative, so the base URL stays."""

    @allow_unauthenticated
    def get(self) -> None:
        self.redirect("ui/")


def ui_routes() -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The web UI under ``dkron/ui/`` (before ``routes()``' JSON 404 for other paths)."""
    files = {"path": str(ui.STATIC), "default_filename": "index.html"}
    return [(PREFIX + "/ui", _ToUi, {}), (PREFIX + r"/ui/(.*)", UiFiles, files)]


def _listen(node: Node) -> tornado.httpserver.HTTPServer:
    """Serve the internal API on the node's ``http_addr`` (a socket that fails to bind is
    closed, unlike ``HTTPServer.listen``'s)."""
    host, port = node.config.http_host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on {node.config.http_addr} for the cluster's internal API: "
            f"{exc.strerror or exc}; set c.DkronLab.http_addr to a free host:port"
        ) from None
    sock.setblocking(False)
    server = tornado.httpserver.HTTPServer(
        make_app(node, public=(("/health", Health),)), max_body_size=node.config.max_body_size
    )
    server.add_sockets([sock])
    return server


_TRAIT_TYPES: dict[Any, Callable[..., TraitType[Any, Any]]] = {
    bool: Bool,
    int: Integer,
    str: Unicode,
    Path: Unicode,
}


def _trait(key: str, default: Any = None, *, help: str = "", note: str = "") -> Any:
    """The ``c.DkronLab`` trait of the agent option ``key``, typed and worded from its
    declaration (``dkron_lab.config.OPTIONS``). ``default`` is the extension's: ``None`` leaves
    the option unset, so ``node_flags`` or the option's own default decides; ``help`` replaces
    the option's words where Jupyter gives it another meaning, ``note`` says the default."""
    option = OPTIONS[key]
    if not note and default is None and option.shown:
        note = f"Default: {option.shown}."
    words = " ".join(part for part in (help or option.help, note) if part)
    container, items = get_origin(option.type), get_args(option.type)
    trait: TraitType[Any, Any]
    if container is tuple:
        trait = List(_TRAIT_TYPES[items[0]](), help=words)
    elif container is dict:
        trait = Dict(value_trait=_TRAIT_TYPES[items[1]](), help=words)
    elif option.type is int:
        trait = Integer(default, allow_none=True, help=words)
    else:
        trait = _TRAIT_TYPES[option.type](default if default is not None else "", help=words)
    return trait.tag(config=True, option=key)


def _plain(value: Any) -> Any:
    """A trait's value as a flag's: lists as tuples, dicts copied."""
    if isinstance(value, list):
        return tuple(value)
    return dict(value) if isinstance(value, dict) else value


class DkronLab(ExtensionApp):
    """A dkron-lab node in the Jupyter server (``c.DkronLab.*``)."""

    name = "dkron_lab"
    description = "dkron-lab: a distributed cron in the Jupyter server"

    server = _trait("server", True)
    bootstrap_expect = _trait(
        "bootstrap-expect",
        note="Default: 1 for a server with no join or retry_join (a one-node cluster), else 0.",
    )
    join = _trait("join")
    retry_join = _trait("retry-join")
    bind_addr = _trait(
        "bind-addr",
        note="Default: 127.0.0.1 and a free port (set it for a server that other nodes join).",
    )
    advertise_addr = _trait("advertise-addr")
    http_addr = _trait(
        "http-addr",
        help="host:port where other nodes call this node's internal API.",
        note="Default: 127.0.0.1 and a free port. The public API is served by Jupyter under "
        "{base_url}dkron/.",
    )
    node_name = _trait("node-name")
    tags = _trait("tags")
    encrypt = _trait("encrypt")
    data_dir = _trait("data-dir", note="Default: <jupyter data dir>/dkron-lab.")
    options = Dict(
        config=True,
        help="Any other dkron-lab config key (dkron.yml names), e.g. {'history-retention': "
        "'720h', 'catchup': 'skip'}. The traits named after a key (server, join, tags, ...) win "
        "over it here when they are set.",
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(Path(jupyter_data_dir()) / "dkron-lab")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_secret = secrets.token_urlsafe(32)
        self.node: Node | None = None
        self.ready = False
        self.failure: BaseException | None = None
        self._starting: asyncio.Task[None] | None = None
        self._listener: tornado.httpserver.HTTPServer | None = None
        self._node_started = False
        self._stopped = False
        self._exported: dict[str, str] = {}
        self._leaving: asyncio.Future[None] | None = None

    # -- configuration ----------------------------------------------------------------------

    def node_flags(self) -> dict[str, Any]:
        """``options`` and the traits that are set, as config flags (``resolve_config`` checks
        them like the CLI's), with the extension's own defaults for the rest."""
        flags: dict[str, Any] = {str(k).replace("_", "-"): v for k, v in self.options.items()}
        for name, trait in self.traits(option=lambda key: key is not None).items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool | int) or value):
                flags[trait.metadata["option"]] = _plain(value)
        standalone = not flags.get("join") and not flags.get("retry-join")
        flags.setdefault("bootstrap-expect", 1 if self.server and standalone else 0)
        flags.setdefault("bind-addr", f"127.0.0.1:{free_port()}")
        flags.setdefault("http-addr", f"127.0.0.1:{free_port()}")
        return flags

    def node_config(self) -> Config:
        """The node's config from the traits only: no ``DKRON_*`` variables, no dkron.yml
        (those belong to headless agents that may run beside this server)."""
        loaded = resolve_config(self.node_flags(), env={}, search_dirs=())
        for warning in loaded.warnings:
            self.log.warning("dkron-lab: %s", warning)
        return loaded.config

    # -- lifecycle ----------------------------------------------------------------------------

    def initialize_settings(self) -> None:
        """Build the node; a configuration it cannot start with (a bad trait, a joining node
        without the cluster key) is logged and answered as 503 by the API, Jupyter runs on."""
        try:
            self.node = Node(self.node_config())
        except DkronError as exc:
            self.failure = exc
            self.log.error("dkron-lab: the node cannot start: %s", exc)
            return
        self.node.on_leave = self._leave
        self.settings.update(dkron_node=self.node)

    def initialize_handlers(self) -> None:
        """The API's routes, after the web UI's unless ``ui`` is off (``options={"ui": False}``)."""
        if self.node is None or self.node.config.ui:
            self.handlers.extend(ui_routes())
        self.handlers.extend(routes())

    async def _start_jupyter_server_extension(self, serverapp: ServerApp) -> None:
        """Export where kernels find the API, then start the node without waiting for it."""
        url = kernel_url(serverapp)
        if url is not None:
            self._export(DKRON_LAB_URL=url, DKRON_LAB_TOKEN=self.kernel_secret)
        if self._starting is None and not self._stopped and self.node is not None:
            self._starting = asyncio.ensure_future(self._start_node())

    async def _start_node(self) -> None:
        node = self.node
        assert node is not None
        try:
            self._listener = _listen(node)
            self._node_started = True
            await node.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            trace = None if isinstance(exc, DkronError) else exc  # ours say what to fix
            self.log.error("dkron-lab: the node did not start: %s", exc, exc_info=trace)
            await self._release(graceful=False)  # its ports and threads; the API answers 503
            return
        self.ready = True
        self.log.info(
            "dkron-lab: node %s is %s; its API is at %sdkron/",
            node.name, "the leader" if node.is_leader else "a follower",
            self.serverapp.base_url if self.serverapp else "/",
        )  # fmt: skip

    def check_ready(self) -> None:
        """Raise ``Unavailable`` (503) while the node starts, or if it failed or stopped."""
        if self.ready:
            return
        if self.failure is not None:
            raise Unavailable(
                f"the dkron-lab node did not start: {self.failure}; fix c.DkronLab.* in the "
                "Jupyter config and restart Jupyter (the server log has the details)"
            )
        if self._stopped:
            raise Unavailable("the dkron-lab node has stopped (POST /v1/leave, or Jupyter stops)")
        raise Unavailable("the dkron-lab node is starting (joining its cluster): retry shortly")

    def _leave(self) -> None:
        """``POST /v1/leave``: stop the node (Jupyter goes on)."""
        self._leaving = asyncio.ensure_future(self.stop_extension())

    async def stop_extension(self) -> None:
        """Stop the node: running executions finish first. Safe to call more than once."""
        if self._stopped:
            return
        was_ready = self.ready
        self._stopped, self.ready = True, False
        self._unexport()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        await self._release(graceful=was_ready)

    async def _release(self, *, graceful: bool) -> None:
        """Close the internal API's listener and stop the node, once."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
            await listener.close_all_connections()
        started, self._node_started = self._node_started, False
        if started and self.node is not None:
            try:
                await self.node.stop(graceful=graceful)
            except Exception as exc:  # Jupyter must still stop; say why the node did not
                self.log.error("dkron-lab: stopping node %s failed: %s", self.node.name, exc)
            else:
                self.log.info("dkron-lab: node %s stopped", self.node.name)

    def _export(self, **values: str) -> None:
        os.environ.update(values)
        self._exported.update(values)

    def _unexport(self) -> None:
        for name, value in self._exported.items():
            if os.environ.get(name) == value:
                del os.environ[name]
        self._exported.clear()


def kernel_url(serverapp: ServerApp) -> str | None:
    """The loopback URL of the REST API for kernels of ``serverapp`` (``None`` for a server on
    a unix socket: kernels then need ``%dkron connect``)."""
    if serverapp.sock:
        return None
    ip = serverapp.ip
    if ip in ("", "localhost", "0.0.0.0", "127.0.0.1"):
        host = "127.0.0.1"
    elif ip == "::":
        host = "[::1]"
    else:
        host = f"[{ip}]" if ":" in ip else ip
    scheme = "https" if serverapp.certfile else "http"
    return f"{scheme}://{host}:{serverapp.port}{serverapp.base_url}{PREFIX}"
