"""Who may call the headless API, and from where: tokens, roles, and the browser guards.

The pure decisions of ``dkron_lab.api.app.HeadlessHandler`` (``docs/security.md``):

* **Tokens.** ``Policy.from_config`` builds the tokens a node accepts: its admin token
  (``--api-token`` or the generated ``<data-dir>/api-token``, named ``admin``) and the named
  tokens of ``--api-tokens-file`` (YAML: ``tokens: [{name, role, token}]``). A request sends one
  as ``Authorization: Bearer``, ``X-Dkron-Token`` or ``Authorization: Basic`` whose password is
  the token (``credential``). ``--no-auth`` makes every caller ``ANONYMOUS``, an admin.
* **Roles.** ``viewer`` reads (and queries with ``POST /v1/sql``), ``operator`` also runs,
  toggles and pauses, ``admin`` does everything: ``ROLE_NEEDED`` is the one table.
* **Browsers.** A request whose ``Origin`` is neither this server's nor listed by
  ``--cors-origin`` is refused (``check_origin``), and only a listed origin gets CORS headers
  (``cors_headers``). A write that carries a body must be ``application/json``
  (``check_media_type``), which a page of another origin cannot send without a preflight.
* **DNS rebinding.** The ``Host`` header must be an IP address, ``localhost``, this machine's
  name, the listen host or an ``--allowed-host`` (``check_host``).
* **Listening.** ``check_listen`` refuses ``--no-auth`` beyond loopback without TLS unless
  ``--allow-insecure-remote`` says so, and a certificate without its key.

``GET``/``HEAD /health`` skips the Host and Origin checks (probes and load balancers name the
node as they like; the answer says only "healthy"), and the internal API (``/internal/...``),
signed with the cluster key, skips all of this.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hmac
import ipaddress
import logging
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import yaml
from tornado.httputil import HTTPHeaders

from dkron_lab.config import Config
from dkron_lab.credentials import API_TOKEN_FILE, ConfigError
from dkron_lab.errors import Forbidden, Unauthorized, UnsupportedMediaType
from dkron_lab.netaddr import is_loopback

__all__ = [
    "ADMIN_NAME",
    "ANONYMOUS",
    "MIN_TOKEN_LENGTH",
    "READS",
    "ROLE_NEEDED",
    "Policy",
    "Principal",
    "Role",
    "check_host",
    "check_listen",
    "check_media_type",
    "check_origin",
    "check_role",
    "cors_headers",
    "credential",
    "read_tokens_file",
    "role_needed",
]

log = logging.getLogger(__name__)

ADMIN_NAME = "admin"
"""The name of the node's own token (``--api-token`` or the generated one) in the audit table."""
MIN_TOKEN_LENGTH = 16
READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.StrEnum):
    """What a token may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


ROLE_NEEDED: Final[Mapping[tuple[str, str], Role]] = MappingProxyType(
    {
        ("POST", "/v1/sql"): Role.VIEWER,
        ("POST", "/v1/jobs/{job}"): Role.OPERATOR,  # Dkron's "run this job"
        ("POST", "/v1/jobs/{job}/run"): Role.OPERATOR,
        ("POST", "/v1/jobs/{job}/toggle"): Role.OPERATOR,
        ("POST", "/v1/jobs/{job}/ping"): Role.OPERATOR,  # or the job's ping key
        ("POST", "/v1/jobs/{job}/ping/{kind}"): Role.OPERATOR,
        ("POST", "/v1/jobs/{job}/backfill"): Role.OPERATOR,
        ("DELETE", "/v1/backfills/{backfill}"): Role.OPERATOR,
        ("POST", "/v1/pause"): Role.OPERATOR,
        ("POST", "/v1/unpause"): Role.OPERATOR,
    }
)
"""The writes (method, route of ``handlers.RESOURCES``) that a role below admin may make.
Every read needs ``viewer``; every other write, and any route not listed, needs ``admin``."""


def role_needed(method: str, route: str | None) -> Role:
    """The least role that may send ``method`` to ``route`` (an OpenAPI path template)."""
    if method in READS:
        return Role.VIEWER
    return ROLE_NEEDED.get((method, route or ""), Role.ADMIN)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who sent a request: the name of their token (``anonymous`` with --no-auth) and its role."""

    name: str
    role: Role


ANONYMOUS = Principal(name="anonymous", role=Role.ADMIN)
"""Every caller of a node started with ``--no-auth``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What the headless API accepts, built once from the node's config.

    ``tokens`` maps each accepted token to its principal (empty with ``no_auth``);
    ``allowed_hosts`` is ``None`` when ``--allowed-host '*'`` turned the Host check off.
    """

    no_auth: bool
    tokens: tuple[tuple[bytes, Principal], ...]
    cors_origins: frozenset[str]
    allowed_hosts: frozenset[str] | None

    @classmethod
    def from_config(cls, config: Config, admin_token: str) -> Policy:
        """The policy of a node with ``config`` whose admin token is ``admin_token`` (``""``
        only with ``--no-auth``). Raises ``ConfigError`` for a bad ``--api-tokens-file``."""
        named: list[tuple[str, Principal]] = []
        if admin_token:
            named.append((admin_token, Principal(name=ADMIN_NAME, role=Role.ADMIN)))
        if config.api_tokens_file is not None and not config.no_auth:
            named.extend(read_tokens_file(config.api_tokens_file))
        hosts: frozenset[str] | None = None
        if "*" not in config.allowed_host:
            listen_host = config.http_host_port[0]
            hosts = frozenset(
                _host_name(name) for name in (*config.allowed_host, listen_host, *_machine_names())
            ) - {""}
        return cls(
            no_auth=config.no_auth,
            tokens=tuple((token.encode(), who) for token, who in named),
            cors_origins=frozenset(_origin(o) for o in config.cors_origin),
            allowed_hosts=hosts,
        )

    def authenticate(self, headers: HTTPHeaders) -> Principal:
        """Who sent ``headers``; ``Unauthorized`` when no accepted token is among them."""
        if self.no_auth:
            return ANONYMOUS
        given = credential(headers)
        found = None
        if given is not None:
            raw = given.encode("utf-8", "surrogateescape")
            for token, who in self.tokens:  # every one compared, in constant time
                if hmac.compare_digest(raw, token) and found is None:
                    found = who
        if found is None:
            raise Unauthorized(
                "missing or wrong API token: send it as 'Authorization: Bearer <token>' (or "
                "'X-Dkron-Token: <token>', or HTTP Basic with the token as the password). "
                "A server started without --api-token keeps its token in the file "
                f"<data-dir>/{API_TOKEN_FILE} on its host"
            )
        return found


def credential(headers: HTTPHeaders) -> str | None:
    """The token in ``headers``: ``Authorization: Bearer``, the password of ``Authorization:
    Basic``, else ``X-Dkron-Token``; ``None`` when there is none."""
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return headers.get("X-Dkron-Token")


def check_role(who: Principal, method: str, route: str | None, path: str) -> None:
    """``Forbidden`` unless ``who`` may send ``method`` to ``route``."""
    needed = role_needed(method, route)
    if not who.role.allows(needed):
        raise Forbidden(
            f"{method} {path} needs the {needed} role (or higher); the token "
            f"{who.name!r} has the role {who.role}"
        )


# -- browsers and DNS rebinding -----------------------------------------------------------------


def check_host(policy: Policy, headers: HTTPHeaders) -> None:
    """``Forbidden`` unless the ``Host`` header names this server (the DNS rebinding guard)."""
    if policy.allowed_hosts is None:
        return
    given = headers.get("Host", "")
    host = _host_name(given)
    if not host or _is_ip(host) or host in policy.allowed_hosts:
        return  # no Host at all: HTTP/1.0, never a browser
    shown = given[:100]
    raise Forbidden(
        f"the Host header {shown!r} is not a name of this server (a guard against DNS "
        f"rebinding): if clients reach it by that name, start it with --allowed-host "
        f"{_host_name(shown) or 'NAME'} (or --allowed-host '*' to turn the check off)"
    )


def check_origin(policy: Policy, headers: HTTPHeaders) -> None:
    """``Forbidden`` for a request sent by a web page of another origin that ``--cors-origin``
    does not list (whatever its method: a page can send a GET that has effects on a server
    it does not know, and read the answer after DNS rebinding)."""
    origin = headers.get("Origin")
    if origin is None:
        return
    if _same_origin(origin, headers.get("Host", "")) or _origin(origin) in policy.cors_origins:
        return
    shown = origin[:100]
    raise Forbidden(
        f"requests from web pages of another origin ({shown}) are refused: if that page may "
        f"use this API, start the server with --cors-origin {shown}"
    )


def cors_headers(policy: Policy, headers: HTTPHeaders) -> dict[str, str]:
    """The CORS headers for a request: none unless its ``Origin`` is listed by --cors-origin.

    No ``Access-Control-Allow-Credentials``: tokens travel in headers a page sets itself,
    never as cookies or cached Basic credentials a browser would add on its own."""
    origin = headers.get("Origin")
    if origin is None or _origin(origin) not in policy.cors_origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": headers.get(
            "Access-Control-Request-Headers", "Authorization, Content-Type, X-Dkron-Token"
        ),
        "Access-Control-Expose-Headers": (
            "Location, X-Total-Count, X-Whom, X-Dkron-Rows, X-Dkron-Truncated"
        ),
    }


_PING_ROUTES = ("/v1/jobs/{job}/ping", "/v1/jobs/{job}/ping/{kind}")


def check_media_type(method: str, route: str | None, headers: HTTPHeaders) -> None:
    """``UnsupportedMediaType`` for a write whose body is not JSON.

    A page of another origin can send a form or text without a preflight, JSON it cannot.
    ``/v1/restore`` takes Dkron's multipart form when the request also carries a header such a
    page cannot send (the token as ``Authorization: Bearer``/``X-Dkron-Token``, or
    ``X-Requested-With``); bodiless writes (``curl -X POST .../run``) need no type."""
    if method in READS or not _has_body(headers):
        return
    media = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if media == "application/json":
        return
    if route == "/v1/restore" and media == "multipart/form-data" and _custom_header(headers):
        return
    if route in _PING_ROUTES and _custom_header(headers):
        return  # a ping's body is its output, any text (curl -d), sent with the token
    if route == "/v1/restore":
        raise UnsupportedMediaType(
            f"{method} /v1/restore takes multipart/form-data only with the token in an "
            "'Authorization: Bearer' or 'X-Dkron-Token' header (or with 'X-Requested-With'), e.g. "
            'curl -H "Authorization: Bearer $TOKEN" -F file=@backup.json .../v1/restore'
        )
    sent = f"Content-Type {media}" if media else "no Content-Type"
    raise UnsupportedMediaType(
        f"the body of a {method} must be JSON sent with 'Content-Type: application/json', not "
        f"{sent} (curl --json does that; curl -d alone sends a form type)"
    )


def _has_body(headers: HTTPHeaders) -> bool:
    """True when the request carries a body (a length above 0, or chunks)."""
    length = headers.get("Content-Length", "").strip()
    return "Transfer-Encoding" in headers or (length not in ("", "0"))


def _custom_header(headers: HTTPHeaders) -> bool:
    scheme = headers.get("Authorization", "").partition(" ")[0].lower()
    return scheme == "bearer" or "X-Dkron-Token" in headers or "X-Requested-With" in headers


def _same_origin(origin: str, host: str) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.strip().lower()


def _origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _host_name(host: str) -> str:
    """``host`` of a ``Host`` header or a listen address, without port and trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.cache
def _machine_names() -> tuple[str, ...]:
    """``localhost`` and this machine's names (asked once: ``getfqdn`` may ask DNS)."""
    return ("localhost", socket.gethostname(), socket.getfqdn())


# -- the listener -------------------------------------------------------------------------------


def check_listen(config: Config) -> None:
    """``ConfigError`` for a listener that must not start: a certificate without its key (or
    the reverse), or ``--no-auth`` beyond loopback over plain HTTP without
    ``--allow-insecure-remote``."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError(
            "--tls-cert and --tls-key go together: give both (the PEM certificate and its "
            "private key) to serve HTTPS, or neither to serve HTTP"
        )
    host, port = config.http_host_port
    tls = config.tls_cert is not None
    if config.no_auth and not is_loopback(host) and not tls and not config.allow_insecure_remote:
        raise ConfigError(
            f"refusing to serve the API on {config.http_addr} with --no-auth over plain HTTP: "
            "anyone on the network could run commands as this user. Drop --no-auth (clients "
            "then send the token), serve HTTPS (--tls-cert, --tls-key), listen on loopback "
            f"(--http-addr 127.0.0.1:{port}), or pass --allow-insecure-remote to do it anyway"
        )


def read_tokens_file(path: Path) -> list[tuple[str, Principal]]:
    """The (token, principal) pairs of an ``--api-tokens-file``; ``ConfigError`` says what is
    wrong with a bad one::

        tokens:
          - {name: alice, role: operator, token: "a long random string"}
    """
    try:
        text = path.read_text(encoding="utf-8")
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            log.warning("%s holds API tokens but other users may read it: chmod 600 it", path)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the API tokens file {path}: {exc}") from None
    entries = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(
            f"the API tokens file {path} must hold a list under 'tokens:', e.g. "
            'tokens: [{name: alice, role: operator, token: "<a long random string>"}]'
        )
    found = [_token_entry(path, position, entry) for position, entry in enumerate(entries)]
    _check_unique(path, found)
    return found


def _token_entry(path: Path, position: int, entry: Any) -> tuple[str, Principal]:
    where = f"entry #{position} of the API tokens file {path}"
    if not isinstance(entry, dict) or set(entry) != {"name", "role", "token"}:
        raise ConfigError(f"{where} must have exactly the keys name, role and token")
    name, role, token = entry["name"], entry["role"], entry["token"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string (it is shown in the audit)")
    if role not in {r.value for r in Role}:
        raise ConfigError(f"{where}: role must be one of {', '.join(Role)}, not {role!r}")
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ConfigError(
            f"{where}: token must be a string of at least {MIN_TOKEN_LENGTH} characters "
            "without surrounding spaces, e.g. from: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    return token, Principal(name=name.strip(), role=Role(role))


def _check_unique(path: Path, found: list[tuple[str, Principal]]) -> None:
    names = [who.name for _, who in found]
    tokens = [token for token, _ in found]
    if len(set(names)) != len(names):
        raise ConfigError(f"the API tokens file {path} names a token twice: names must differ")
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"the API tokens file {path} has one token twice: tokens must differ")
