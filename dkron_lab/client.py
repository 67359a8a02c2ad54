"""A small synchronous client for the Dkron v1 REST API, served by dkron-lab or by Dkron itself.

The CLI and kernel-side code use it, so it imports no server code: only ``dkron_lab.errors``,
and it speaks plain dicts in Dkron's JSON shapes. A server error comes back as the same
exception class the server raised, read from dkron-lab's JSON error body
``{"error": "<message>", "type": "<ClassName>"}``; a plain-text error body (Dkron's) is mapped
by status code. A node that cannot be reached is an ``Unavailable`` that says how to start one.

::

    with Client("http://127.0.0.1:8080") as dkron:
        dkron.put_job({"name": "hello", "schedule": "@every 1m",
                       "executor": "shell", "executor_config": {"command": "echo hi"}})
        dkron.run_job("hello", wait=True)
        print(dkron.executions("hello")[0]["output"])
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from dkron_lab.errors import HTTP_STATUS, DkronError, Unavailable, error_class

__all__ = ["DEFAULT_URL", "Client"]

DEFAULT_URL = "http://127.0.0.1:8080"

_BY_STATUS: dict[int, type[DkronError]] = {status: cls for cls, status in HTTP_STATUS.items()}

# Keyword arguments that stand for Dkron's react-admin query parameters.
_QUERY_NAMES = {"sort": "_sort", "order": "_order", "start": "_start", "end": "_end"}


class Client:
    """A connection to one node's REST API. ``timeout`` is in seconds (``None``: wait for ever);
    ``token`` is sent as ``Authorization: Bearer`` and as Dkron Pro's ``X-Dkron-Token``.

    Every method raises a ``DkronError`` subclass on failure; nothing returns an error value.
    """

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, timeout: float | None = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"Accept": "application/json"}
        if token:
            headers |= {"Authorization": f"Bearer {token}", "X-Dkron-Token": token}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._http.close()

    # jobs

    def jobs(self, **params: Any) -> list[dict[str, Any]]:
        """``GET /v1/jobs``: ``q``, ``status``, ``disabled``, ``metadata={k: v}``, ``sort``,
        ``order``, ``start``, ``end`` (or Dkron's own ``_sort``... names)."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/jobs", params=_query(params))
        return result

    def job(self, name: str) -> dict[str, Any]:
        """``GET /v1/jobs/{name}``; ``NotFoundError`` if there is none."""
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{_part(name)}")
        return result

    def put_job(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a job (``POST /v1/jobs``, a full replace as in Dkron)."""
        result: dict[str, Any] = self._call("POST", "/v1/jobs", json=dict(job))
        return result

    def delete_job(self, name: str) -> dict[str, Any]:
        """Delete a job; returns it as it was."""
        result: dict[str, Any] = self._call("DELETE", f"/v1/jobs/{_part(name)}")
        return result

    def run_job(self, name: str, wait: bool = False) -> dict[str, Any]:
        """Run a job now. With ``wait`` the call returns once every execution of this run has
        finished (no client timeout then); returns the job, with its ``status`` after the run."""
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/jobs/{_part(name)}/run",
            params={"wait": "true" if wait else "false"},
            timeout=None if wait else httpx.USE_CLIENT_DEFAULT,
        )
        return result

    def toggle_job(self, name: str) -> dict[str, Any]:
        """Flip ``disabled``; returns the job as it is now."""
        result: dict[str, Any] = self._call("POST", f"/v1/jobs/{_part(name)}/toggle")
        return result

    # executions

    def executions(self, job: str, **params: Any) -> list[dict[str, Any]]:
        """``GET /v1/jobs/{job}/executions``, newest first: ``sort``, ``order``,
        ``output_size_limit``. ``NotFoundError`` if the job does not exist."""
        path = f"/v1/jobs/{_part(job)}/executions"
        result: list[dict[str, Any]] = self._call("GET", path, params=_query(params))
        return result

    def execution(self, job: str, id: str) -> dict[str, Any]:
        """One execution with its full output."""
        path = f"/v1/jobs/{_part(job)}/executions/{_part(id)}"
        result: dict[str, Any] = self._call("GET", path)
        return result

    # cluster

    def members(self) -> list[dict[str, Any]]:
        """``GET /v1/members``: Dkron's Member objects."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/members")
        return result

    def leader(self) -> dict[str, Any]:
        """``GET /v1/leader``: the Member that leads the cluster."""
        result: dict[str, Any] = self._call("GET", "/v1/leader")
        return result

    def raft_peers(self) -> list[dict[str, Any]]:
        """``GET /v1/raft/peers``: the Raft voters as the server sees them."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/raft/peers")
        return result

    def add_raft_peer(self, address: str) -> list[dict[str, Any]]:
        """``POST /v1/raft/peers``: make the (already started) server at ``address`` a voter."""
        body = {"address": address}
        result: list[dict[str, Any]] = self._call("POST", "/v1/raft/peers", json=body)
        return result

    def remove_raft_peer(self, peer: str) -> list[dict[str, Any]]:
        """``DELETE /v1/raft/peers/<peer>``: take a server out of the Raft group."""
        result: list[dict[str, Any]] = self._call("DELETE", f"/v1/raft/peers/{_part(peer)}")
        return result

    def leave(self) -> list[dict[str, Any]]:
        """``POST /v1/leave``: the node shuts down gracefully."""
        result: list[dict[str, Any]] = self._call("POST", "/v1/leave")
        return result

    def info(self) -> dict[str, Any]:
        """``GET /v1``: ``{"agent": {"name", "version"}, "serf": {...}, "tags": {...}}``."""
        result: dict[str, Any] = self._call("GET", "/v1")
        return result

    def health(self) -> dict[str, Any]:
        """``GET /health``: ``{"status": "healthy"}`` once the node serves its API."""
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def _call(self, method: str, path: str, **request: Any) -> Any:
        try:
            response = self._http.request(method, path, **request)
        except httpx.ConnectError as exc:
            raise Unavailable(
                f"cannot reach dkron-lab at {self.url}: is the agent running? "
                "(dkron-lab agent --server --bootstrap-expect 1)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"dkron-lab at {self.url} did not answer {method} {path} within "
                f"{self.timeout}s: retry, or raise the timeout"
            ) from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot talk to dkron-lab at {self.url}: {exc}") from exc
        if response.is_error:
            raise _error(response, f"{method} {path}")
        return response.json() if response.content else None


def _part(segment: str) -> str:
    return quote(str(segment), safe="")


def _query(params: Mapping[str, Any]) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key == "metadata":
            query |= {f"metadata[{k}]": str(v) for k, v in value.items()}
        elif isinstance(value, bool):
            query[_QUERY_NAMES.get(key, key)] = "true" if value else "false"
        else:
            query[_QUERY_NAMES.get(key, key)] = str(value)
    return query


def _error(response: httpx.Response, request: str) -> DkronError:
    """The exception for an error response: by the body's ``type``, else by status code."""
    try:
        body = response.json()
    except ValueError:
        body = response.text.strip()  # Dkron answers errors in plain text, or not at all
    by_status = _BY_STATUS.get(response.status_code, DkronError)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        named = error_class(str(body.get("type", "")))
        return (by_status if named is DkronError else named)(body["error"])
    if isinstance(body, str) and body:
        return by_status(body)
    return by_status(f"{request} failed: {response.status_code} {response.reason_phrase}")
