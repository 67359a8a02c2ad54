"""Calls between nodes: run requests to targets, heartbeats to servers, forwarded runs.

Every call is a signed POST on a pooled HTTP connection to the other node's internal API
(``/internal/v1/...``). With a cluster key (``--encrypt``) the body, path and a timestamp are
signed with HMAC-SHA256; without one, the internal API answers loopback callers only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from dkron_lab.errors import ClusterError, DkronError, error_class

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Peers", "cluster_key", "signature", "verify"]

SIGNATURE_HEADER = "X-Dkron-Signature"
TIMESTAMP_HEADER = "X-Dkron-Timestamp"
MAX_SKEW = 60.0


def cluster_key(encrypt: str) -> bytes:
    """The HMAC key from ``--encrypt`` (base64 from ``dkron-lab keygen``, or any text)."""
    if not encrypt:
        return b""
    try:
        return base64.b64decode(encrypt, validate=True)
    except ValueError:
        return encrypt.encode()


def signature(key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    message = b"\n".join([method.encode(), path.encode(), timestamp.encode(), body])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(key: bytes, method: str, path: str, headers: Any, body: bytes) -> bool:
    """A request carries a fresh, valid signature for ``key``."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    try:
        fresh = abs(time.time() - float(timestamp)) <= MAX_SKEW
    except ValueError:
        return False
    expected = signature(key, method, path, timestamp, body)
    return fresh and hmac.compare_digest(given, expected)


class Peers:
    """A pooled client for the internal API of other nodes."""

    def __init__(self, key: bytes, *, timeout: float = 5.0) -> None:
        self._key = key
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def post(
        self, address: str, path: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """POST ``payload`` to ``http://address/path``; the other node's error is raised here."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = f"{time.time():.3f}"
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
        if self._key:
            headers[SIGNATURE_HEADER] = signature(self._key, "POST", path, timestamp, body)
        try:
            response = await self._http.post(
                f"http://{address}{path}",
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
