"""Calls between nodes: run requests to targets, heartbeats to servers, forwarded runs.

Every call is a POST on a pooled HTTP connection to the other node's internal API
(``/internal/v1/...``), signed with the cluster key (HMAC-SHA256; a node always has one, see
``credentials.cluster_key``). No address is trusted, loopback included: a local user who can
open a socket is an attacker like any other (issue 10). The signature covers the method, the
path, the node the call is meant for (``X-Dkron-Target``), the signing time
(``X-Dkron-Timestamp``), a random nonce (``X-Dkron-Nonce``) and the body, and the callee
(``Verifier``) refuses a call that

* is not signed with its cluster key, or whose headers are missing or malformed;
* names another node (a call captured on its way to one node cannot be sent to another);
* was signed more than ``WINDOW`` seconds ago (or that far in the future);
* was signed before the callee's process started (a restart forgets the nonces it has seen,
  so it must not accept anything it could have seen before);
* carries a nonce it has already accepted (nonces are kept until their call expires).

Clocks: the window assumes the nodes' clocks agree to well within ``WINDOW`` (NTP, as Nomad
and Dkron assume for their TLS and gossip). A node whose clock runs behind by ``d`` has its
calls refused for ``d`` seconds after a peer restarts; callers retry (heartbeats every second,
runs are reported lost and retried by policy), so that costs a beat, never a wrong acceptance.
Conversely, a call signed by a peer whose clock runs ahead by ``d`` carries a time up to ``d``
later than when it was sent, so across a restart the replay protection holds only up to the
clock skew: one more reason to keep the clocks synchronised.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from dkron_lab.errors import ClusterError, DkronError, Unauthorized, error_class

__all__ = [
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "TARGET_HEADER",
    "TIMESTAMP_HEADER",
    "WINDOW",
    "Peers",
    "Verifier",
    "cluster_key",
    "sign",
    "signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Dkron-Signature"
TIMESTAMP_HEADER = "X-Dkron-Timestamp"
NONCE_HEADER = "X-Dkron-Nonce"
TARGET_HEADER = "X-Dkron-Target"
WINDOW = 30.0  # seconds a signed call stays valid (and the clock skew tolerated)

_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_NONCE = re.compile(r"[0-9a-f]{32}", re.ASCII)
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?", re.ASCII)
_TARGET = re.compile(r"[A-Za-z0-9%._~-]{1,600}", re.ASCII)


def cluster_key(encrypt: str) -> bytes:
    """The HMAC key from ``--encrypt`` (base64 from ``dkron-lab keygen``, or any text)."""
    if not encrypt:
        return b""
    try:
        return base64.b64decode(encrypt, validate=True)
    except (ValueError, binascii.Error):
        return encrypt.encode()


def _target(name: str) -> str:
    """A node name as it travels in a header (percent-encoded: names need not be ASCII)."""
    return urllib.parse.quote(name, safe="")


def signature(
    key: bytes, *, method: str, path: str, target: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """HMAC-SHA256 (hex) over the call; ``target`` is the header's (encoded) value."""
    parts = [method, path, target, timestamp, nonce]
    message = b"\n".join([*(part.encode() for part in parts), body])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(
    key: bytes, *, method: str, path: str, target: str, body: bytes, now: float
) -> dict[str, str]:
    """The headers that make a call to node ``target`` signed at ``now`` (a fresh nonce)."""
    headers = {
        TARGET_HEADER: _target(target),
        TIMESTAMP_HEADER: f"{now:.3f}",
        NONCE_HEADER: secrets.token_hex(16),
    }
    headers[SIGNATURE_HEADER] = signature(
        key,
        method=method,
        path=path,
        target=headers[TARGET_HEADER],
        timestamp=headers[TIMESTAMP_HEADER],
        nonce=headers[NONCE_HEADER],
        body=body,
    )
    return headers


class Verifier:
    """Checks the calls this node receives (module docstring: what is refused and why)."""

    def __init__(self, key: bytes, node_name: str, *, started: float | None = None) -> None:
        """``started``: when this process started (default: now); calls signed before are
        refused."""
        if not key:
            raise ValueError("a cluster key is required to check internal calls")
        self._key = key
        self._target = _target(node_name)
        self._started = time.time() if started is None else started
        self._seen: dict[str, float] = {}  # nonce -> when its call expires
        self._logged: dict[str, float] = {}  # "remote path" -> last refusal logged

    def check(
        self,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        remote: str = "?",
    ) -> None:
        """Accept the call (remembering its nonce) or raise ``Unauthorized`` saying why; the
        refusal is logged with ``remote`` (at most once a second per address and path)."""
        try:
            self._check(method, path, headers, body, now)
        except Unauthorized as exc:
            self._log_refusal(remote, method, path, str(exc), now)
            raise

    def _check(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> None:
        given = _header(headers, SIGNATURE_HEADER, _HEX_SIGNATURE)
        timestamp = _header(headers, TIMESTAMP_HEADER, _TIMESTAMP)
        nonce = _header(headers, NONCE_HEADER, _NONCE)
        target = _header(headers, TARGET_HEADER, _TARGET)
        expected = signature(
            self._key,
            method=method,
            path=path,
            target=target,
            timestamp=timestamp,
            nonce=nonce,
            body=body,
        )
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized(_refused("it is not signed with this cluster's key (--encrypt)"))
        if target != self._target:
            raise Unauthorized(_refused("it was signed for another node"))
        signed = float(timestamp)
        if abs(now - signed) > WINDOW or signed < self._started:
            raise Unauthorized(_refused(_stale(signed, now, self._started)))
        self._forget(now)
        if nonce in self._seen:
            raise Unauthorized(_refused("it was already received once (a replay)"))
        self._seen[nonce] = signed + WINDOW

    def _forget(self, now: float) -> None:
        expired = [nonce for nonce, until in self._seen.items() if until < now]
        for nonce in expired:
            del self._seen[nonce]

    def _log_refusal(self, remote: str, method: str, path: str, why: str, now: float) -> None:
        key = f"{remote} {path}"
        if now - self._logged.get(key, -1e9) < 1.0:
            return
        if len(self._logged) > 1000:
            self._logged.clear()
        self._logged[key] = now
        log.warning("refused %s %s from %s: %s", method, path, remote, why)


def _header(headers: Mapping[str, str], name: str, form: re.Pattern[str]) -> str:
    value = headers.get(name)
    if value is None:
        raise Unauthorized(_refused(f"the {name} header is missing (calls must be signed)"))
    if not form.fullmatch(value):
        raise Unauthorized(_refused(f"the {name} header is malformed"))
    return value


def _stale(signed: float, now: float, started: float) -> str:
    if signed < started and abs(now - signed) <= WINDOW:
        return "it was signed before this node (re)started"
    return (
        f"it was signed {now - signed:+.0f} s from this node's clock, outside the {WINDOW:g} s "
        "window (are the nodes' clocks synchronised?)"
    )


def _refused(why: str) -> str:
    return f"internal call refused: {why}"


class Peers:
    """A pooled client for the internal API of other nodes.

    With ``tls=True`` peers are called over ``https`` and their certificates checked against
    ``tls_ca`` (the system's authorities when it is None).
    """

    def __init__(
        self, key: bytes, *, timeout: float = 5.0, tls: bool = False, tls_ca: Path | None = None
    ) -> None:
        if not key:
            raise ValueError("a cluster key is required to sign internal calls")
        self._key = key
        self._scheme = "https" if tls or tls_ca is not None else "http"
        verify: ssl.SSLContext | bool = True
        if tls_ca is not None:
            verify = ssl.create_default_context(cafile=str(tls_ca))
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False, verify=verify)

    async def post(
        self,
        address: str,
        path: str,
        payload: dict[str, Any],
        *,
        target: str,
        timeout: float | None = None,
    ) -> Any:
        """POST ``payload`` to node ``target`` at ``address``; its error is raised here."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} | sign(
            self._key, method="POST", path=path, target=target, body=body, now=time.time()
        )
        try:
            response = await self._http.post(
                f"{self._scheme}://{address}{path}",
                content=body,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise ClusterError(f"cannot reach {address}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json() if response.content else None

    async def aclose(self) -> None:
        await self._http.aclose()


def _error_from(response: httpx.Response) -> DkronError:
    try:
        data = response.json()
        return error_class(str(data.get("type", "")))(str(data["error"]))
    except (ValueError, KeyError, AttributeError):
        return ClusterError(f"HTTP {response.status_code}: {response.text[:200]}")
