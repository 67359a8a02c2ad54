"""Which server a client talks to when it is not told: ``discover()`` (the Jupyter server that
started this kernel, ``DKRON_LAB_URL``, ``DKRON_ADDRESS``, the default) and the token a server on
this host generated into its data dir (``local_token``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from dkron_lab.netaddr import is_loopback

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_URL",
    "TOKEN_FILE",
    "Connection",
    "discover",
    "local_token",
    "token_file",
]

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATA_DIR = "dkron.data"
"""A headless server's data dir when it is not given: relative to where it was started."""
TOKEN_FILE = "api-token"
"""The file of the data dir where a server started without ``--api-token`` keeps its token."""


@dataclass(frozen=True, slots=True)
class Connection:
    """Where a client talks to and how it proves who it is; ``source`` says how it was found."""

    url: str
    token: str | None = None
    source: str = "explicit"


def discover(environ: Mapping[str, str] | None = None) -> Connection:
    """The server this process should talk to, with no configuration, in this order:

    1. ``DKRON_LAB_URL`` (and ``DKRON_LAB_TOKEN``): exported by the Jupyter extension into the
       environment its kernels inherit;
    2. ``jpserver-<JPY_PARENT_PID>.json`` in the Jupyter runtime dir: the server that started
       this kernel, its URL + ``dkron/`` and its Jupyter token;
    3. ``DKRON_ADDRESS`` / ``DKRON_API_TOKEN``, as the CLI reads them;
    4. ``http://127.0.0.1:8080``, a headless agent's default.

    The token of 3 and 4 is ``local_token``'s: ``DKRON_API_TOKEN``, else (for a server on this
    host, or with ``DKRON_DATA_DIR`` naming its data dir) the one it generated there.
    """
    env = os.environ if environ is None else environ
    if env.get("DKRON_LAB_URL"):
        return Connection(env["DKRON_LAB_URL"], env.get("DKRON_LAB_TOKEN") or None, "DKRON_LAB_URL")
    found = _from_runtime_file(env)
    if found is not None:
        return found
    url, source = (env["DKRON_ADDRESS"], "DKRON_ADDRESS") if env.get("DKRON_ADDRESS") else (
        DEFAULT_URL, "default"
    )  # fmt: skip
    return Connection(url, local_token(url, environ=env), source)


def token_file(
    data_dir: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """Where a server keeps its generated token: ``<data_dir>/api-token``, the data dir being
    ``data_dir``, else ``DKRON_DATA_DIR``, else ``./dkron.data`` (a server's own default)."""
    env = os.environ if environ is None else environ
    return Path(data_dir or env.get("DKRON_DATA_DIR") or DEFAULT_DATA_DIR) / TOKEN_FILE


def local_token(
    url: str,
    data_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The token for the server at ``url`` when none is given: ``DKRON_API_TOKEN``, else the
    ``api-token`` file of its data dir (``token_file``), else ``None``.

    The file is read only when the data dir is named (``data_dir``, ``DKRON_DATA_DIR``) or the
    server is on this host (a loopback URL): the local server's admin token is never sent to
    another host just because a file happens to sit in the working directory.
    """
    env = os.environ if environ is None else environ
    if env.get("DKRON_API_TOKEN"):
        return env["DKRON_API_TOKEN"]
    if not (data_dir or env.get("DKRON_DATA_DIR") or _is_loopback(url)):
        return None
    try:
        return token_file(data_dir, env).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):  # none there, or another user's server
        return None


def _is_loopback(url: str) -> bool:
    return is_loopback(httpx.URL(url).host if "://" in url else url.rsplit(":", 1)[0])


def _from_runtime_file(env: Mapping[str, str]) -> Connection | None:
    """The launching Jupyter server's ``jpserver-<pid>.json`` (``JPY_PARENT_PID`` is its pid
    whatever wraps the kernel; ``os.getppid()`` is not)."""
    pid = env.get("JPY_PARENT_PID", "")
    if not pid.isdigit():
        return None
    runtime_dir = env.get("JUPYTER_RUNTIME_DIR") or _jupyter_runtime_dir()
    path = Path(runtime_dir) / f"jpserver-{pid}.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not url.startswith("http") or url.startswith("http+unix"):
        return None  # a unix-socket server needs an explicit %dkron connect
    return Connection(url.rstrip("/") + "/dkron", info.get("token") or None, str(path))


def _jupyter_runtime_dir() -> str:
    from jupyter_core.paths import jupyter_runtime_dir

    return jupyter_runtime_dir()
