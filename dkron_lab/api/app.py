"""The headless HTTP server: Dkron's v1 REST API on a plain tornado application.

``make_app(node)`` mounts every resource of ``dkron_lab.api.handlers`` on ``HeadlessHandler``,
which adds what Dkron's gin router gives and Jupyter would otherwise provide: CORS for every
origin, OPTIONS preflight answered with 204, and the optional bearer token (``api_token``).
``serve(node)`` listens on ``node.config.http_addr`` and returns the server to ``stop()``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import ClassVar

import tornado.httpserver
import tornado.web
from tornado.httputil import HTTPHeaders

from dkron_lab.api.handlers import (
    RESOURCES,
    Health,
    NotFound,
    PrometheusMetrics,
    mount,
    route_pattern,
)
from dkron_lab.api.internal import INTERNAL_RESOURCES
from dkron_lab.errors import Unauthorized
from dkron_lab.node import Node

__all__ = ["HeadlessHandler", "make_app", "serve"]

log = logging.getLogger(__name__)

_ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


class HeadlessHandler(tornado.web.RequestHandler):
    """The concrete base of every route on the headless server: CORS and token auth."""

    public: ClassVar[bool] = False

    def set_default_headers(self) -> None:
        super().set_default_headers()
        headers = self.request.headers
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Methods", _ALLOWED_METHODS)
        # "*" does not cover Authorization in browsers, so the asked-for headers are echoed.
        self.set_header(
            "Access-Control-Allow-Headers", headers.get("Access-Control-Request-Headers", "*")
        )
        self.set_header("Access-Control-Expose-Headers", "*")

    def prepare(self) -> None:
        token: str = self.settings.get("dkron_api_token", "")
        if not token or self.public or self.request.method == "OPTIONS":
            return
        if not _token_matches(self.request.headers, token):
            raise Unauthorized(
                "missing or wrong API token: send 'Authorization: Bearer <token>' "
                "(or 'X-Dkron-Token: <token>') with the api_token this node was started with"
            )

    def options(self, *args: str, **kwargs: str) -> None:
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


def _token_matches(headers: HTTPHeaders, token: str) -> bool:
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = headers.get("X-Dkron-Token", "")
    return hmac.compare_digest(given.strip().encode(), token.encode())


def make_app(node: Node) -> tornado.web.Application:
    """The REST API of ``node`` as a tornado application (token and limits from its config).

    Every node serves the internal API; only servers serve the public one (agents answer
    ``/health`` and ``/metrics`` too, for their supervisors and scrapers).
    """
    public = (
        RESOURCES if node.config.server else (("/health", Health), ("/metrics", PrometheusMetrics))
    )
    rules = [
        (route_pattern(template), mount(resource, HeadlessHandler))
        for template, resource in (*public, *INTERNAL_RESOURCES)
    ]
    return tornado.web.Application(
        rules,
        default_handler_class=mount(NotFound, HeadlessHandler),
        dkron_node=node,
        dkron_api_token=node.api_token,
    )


async def serve(node: Node) -> tornado.httpserver.HTTPServer:
    """Listen on ``node.config.http_addr`` (host ``""`` = every interface); ``stop()`` the result.

    Bodies over ``max_body_size`` are refused before they are read.
    """
    host, port = node.config.http_host_port
    server = tornado.httpserver.HTTPServer(make_app(node), max_body_size=node.config.max_body_size)
    server.listen(port, address=host)
    if not node.config.api_token and not _loopback_only(host):
        log.warning(
            "\n%s\nThe HTTP API listens on %s WITHOUT an API token: anyone who can reach this "
            "port can create jobs, that is run any command on this machine as this user.\n"
            "Set a token (api_token in dkron.yml, --api-token, or DKRON_API_TOKEN) or listen "
            "on 127.0.0.1 only (--http-addr 127.0.0.1:%d).\n%s",
            "!" * 78,
            node.config.http_addr,
            port,
            "!" * 78,
        )
    log.info("HTTP API listening on %s", node.config.http_addr)
    return server


def _loopback_only(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every interface) or a host name that may resolve anywhere
