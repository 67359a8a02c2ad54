"""The headless HTTP server: Dkron's v1 REST API on a plain tornado application.

``make_app(node)`` mounts every resource of ``dkron_lab.api.handlers`` on ``HeadlessHandler``,
which adds what Jupyter would otherwise provide, by the rules of ``dkron_lab.api.auth``: the
``Host`` and ``Origin`` guards, the token and its role, JSON-only writes, CORS only for the
origins ``--cors-origin`` names, and one ``audit`` row per change. ``serve(node)`` listens on
``node.config.http_addr`` (HTTPS with ``--tls-cert``/``--tls-key``) and returns the server to
``stop()``.
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import tornado.httpserver
import tornado.web

from dkron_lab import ui
from dkron_lab.api import auth
from dkron_lab.api.handlers import (
    RESOURCES,
    ApiMixin,
    Health,
    NotFound,
    PrometheusMetrics,
    mount,
    route_pattern,
)
from dkron_lab.api.internal import INTERNAL_RESOURCES
from dkron_lab.api.nodeapi import NodeApi
from dkron_lab.credentials import API_TOKEN_FILE, ConfigError
from dkron_lab.errors import DkronError
from dkron_lab.netaddr import is_loopback

__all__ = ["HeadlessHandler", "make_app", "record_change", "serve"]

log = logging.getLogger(__name__)

_INTERNAL = "/internal/"


class HeadlessHandler(tornado.web.RequestHandler):
    """The concrete base of every route on the headless server: guards, token, role, audit.

    ``route`` (the OpenAPI path template the handler is mounted at, from ``make_app``) picks the
    role a method needs; an unknown route needs ``admin`` for writes.
    """

    public: ClassVar[bool] = False
    route: str | None = None
    principal: auth.Principal | None = None
    """Who sent the request, once the token was checked."""
    _refused: DkronError | None = None

    def initialize(self, route: str | None = None) -> None:
        self.route = route

    @property
    def policy(self) -> auth.Policy:
        policy: auth.Policy = self.settings["dkron_policy"]
        return policy

    @property
    def internal(self) -> bool:
        """The cluster's own calls: signed with the cluster key, so no browser rule applies."""
        return self.request.path.startswith(_INTERNAL)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if not self.internal:
            for name, value in auth.cors_headers(self.policy, self.request.headers).items():
                self.set_header(name, value)
            if self.policy.cors_origins:
                self.set_header("Vary", "Origin")

    def prepare(self) -> None:
        method = self.request.method or ""
        if self.internal or (self.public and method in ("GET", "HEAD")):
            return  # signed calls, and /health for every probe and page
        try:
            self._check(method)
        except DkronError as refused:
            if not getattr(type(self), "_stream_request_body", False):
                raise
            # A streamed request answered before its body is read gets its connection closed
            # (tornado), and a client still sending the body, or reusing the connection, sees
            # it reset instead of the answer: answer once the body is in (at most
            # max_body_size, the same as a handler that does not stream).
            self._refused = refused
            setattr(self, method.lower(), self._refuse)

    def _check(self, method: str) -> None:
        headers = self.request.headers
        auth.check_host(self.policy, headers)
        auth.check_origin(self.policy, headers)
        if method == "OPTIONS" or self.public or self._opened_by_key():
            return
        self.principal = self.policy.authenticate(headers)
        auth.check_role(self.principal, method, self.route, self.request.path)
        auth.check_media_type(method, self.route, headers)

    def _opened_by_key(self) -> bool:
        """A resource a key of its own may open (a heartbeat check's ping) says so."""
        opened = getattr(self, "opened_by_key", None)
        return bool(opened is not None and opened())

    def _refuse(self, *args: str, **kwargs: str) -> None:
        if self._refused is not None:
            raise self._refused

    def options(self, *args: str, **kwargs: str) -> None:
        if auth.cors_headers(self.policy, self.request.headers):
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def on_finish(self) -> None:
        if not self.internal:
            record_change(self, self.principal)


def record_change(handler: tornado.web.RequestHandler, who: auth.Principal | None) -> None:
    """Write the ``audit`` row of the request ``handler`` answered, unless it was a read:
    ``who`` sent it (``None``: no valid credential). For ``on_finish`` of any handler base that
    serves the public API (``settings["dkron_node"]`` is the node)."""
    request = handler.request
    method = request.method or ""
    if method in auth.READS:
        return
    node: NodeApi = handler.settings["dkron_node"]
    try:
        node.history.record_audit(
            at=node.clock.now(),
            actor=who.name if who else auth.ANONYMOUS.name,
            role=who.role.value if who else None,
            remote=request.remote_ip or "",
            method=method,
            path=request.path,
            status=handler.get_status(),
        )
    except RuntimeError as exc:  # the history is closed: the node is stopping
        log.warning("audit: %s %s not recorded: %s", method, request.path, exc)


def make_app(
    node: NodeApi, *, public: Sequence[tuple[str, type[ApiMixin]]] | None = None
) -> tornado.web.Application:
    """The REST API of ``node`` as a tornado application (tokens and guards from its config).

    Every node serves the internal API, and ``public`` beside it: by default, on servers the
    public API, on agents ``/health`` and ``/metrics`` (for their supervisors and scrapers).
    Raises ``ConfigError`` for a bad ``--api-tokens-file``.
    """
    if public is None:
        public = (
            RESOURCES
            if node.config.server
            else (("/health", Health), ("/metrics", PrometheusMetrics))
        )
    rules: list[Any] = [
        (route_pattern(template), mount(resource, HeadlessHandler), {"route": template})
        for template, resource in (*public, *INTERNAL_RESOURCES)
    ]
    app = tornado.web.Application(
        rules,
        default_handler_class=mount(NotFound, HeadlessHandler),
        dkron_node=node,
        dkron_policy=auth.Policy.from_config(node.config, node.api_token),
    )
    if node.config.server and node.config.ui:  # the web UI at /ui/, and / redirects to it
        app.add_handlers(r".*", ui.routes())
    return app


async def serve(node: NodeApi) -> tornado.httpserver.HTTPServer:
    """Listen on ``node.config.http_addr`` (host ``""`` = every interface); ``stop()`` the result.

    Bodies over ``max_body_size`` are refused before they are read. Raises ``ConfigError`` for
    a listener ``auth.check_listen`` refuses or a certificate that does not load.
    """
    config = node.config
    auth.check_listen(config)
    app = make_app(node)
    host, port = config.http_host_port
    server = tornado.httpserver.HTTPServer(
        app, max_body_size=config.max_body_size, ssl_options=_tls_context(node)
    )
    server.listen(port, address=host)
    _log_start(node)
    return server


def _tls_context(node: NodeApi) -> ssl.SSLContext | None:
    cert, key = node.config.tls_cert, node.config.tls_key
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {cert} with the key {key}: {exc}; give a PEM "
            "certificate (chain) and the PEM private key that belongs to it"
        ) from None
    return context


def _log_start(node: NodeApi) -> None:
    """Say where the API is and how to call it, as Jupyter prints its link."""
    config = node.config
    host, port = config.http_host_port
    scheme = "https" if config.tls_cert else "http"
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    url = f"{scheme}://[{shown}]:{port}" if ":" in shown else f"{scheme}://{shown}:{port}"
    if config.no_auth:
        _warn_open(config.http_addr, port, loopback=is_loopback(host))
        log.info("HTTP API listening on %s (no authentication): %s/v1/jobs", url, url)
        if config.ui:
            log.info("web UI: %s/ui/", url)
        return
    if not is_loopback(host) and scheme == "http":
        log.warning(
            "the HTTP API listens on %s over plain HTTP: API tokens cross the network in "
            "clear; serve HTTPS with --tls-cert and --tls-key",
            config.http_addr,
        )
    if config.api_token:
        where, token = "was given by --api-token", "$DKRON_API_TOKEN"
    else:
        path = (config.data_dir / API_TOKEN_FILE).absolute()
        where, token = f"is kept in {path}", f"$(cat {path})"
    log.info(
        "HTTP API listening on %s; its admin token %s. Call it with:\n"
        '    curl -H "Authorization: Bearer %s" %s/v1/jobs',
        url,
        where,
        token,
        url,
    )
    if config.ui:
        log.info("web UI: %s", _ui_link(url, node.api_token))


def _ui_link(url: str, token: str) -> str:
    """The UI's address. On a terminal it carries the token once, as Jupyter's link does (the
    page keeps it for the tab and drops it from the address); in a log that others may read,
    or that outlives the terminal, it does not, and the page asks for the token."""
    if sys.stderr.isatty():
        return f"{url}/ui/#token={quote(token, safe='')}"
    return f"{url}/ui/ (it asks for the admin token; on a terminal this link carries it)"


def _warn_open(address: str, port: int, *, loopback: bool) -> None:
    fix = "" if loopback else f", or at least listen on loopback (--http-addr 127.0.0.1:{port})"
    log.warning(
        "\n%s\nThe HTTP API listens on %s WITHOUT authentication (--no-auth): anyone who can "
        "reach this port, other users of this machine included, can create jobs, that is run "
        "any command on this machine as this user.\nDrop --no-auth (clients then send the "
        "token the node generates)%s.\n%s",
        "!" * 78,
        address,
        fix,
        "!" * 78,
    )
