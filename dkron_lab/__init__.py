"""dkron-lab: a distributed, fault-tolerant cron, wire-compatible with Dkron's v1 REST API.

Importing the package is cheap: it loads no server code (no pysyncobj, DuckDB, tornado or
jupyter_server) and not even the HTTP client. ``Client`` and ``AsyncClient`` are imported on
first use; the Jupyter hooks (``_jupyter_server_extension_points`` for the server,
``load_ipython_extension`` for ``%load_ext dkron_lab``) import their modules only when called.
``tests/jupyter/test_import.py`` checks this.
"""

from __future__ import annotations

from dkron_lab._version import __version__
from dkron_lab.errors import (
    DkronError,
    ExecutionNotFound,
    JobNotFound,
    NotFoundError,
    ValidationError,
)

TYPE_CHECKING = False  # not typing's: importing typing would cost more than the package
if TYPE_CHECKING:
    from typing import Any

    from IPython.core.interactiveshell import InteractiveShell

    from dkron_lab.client import AsyncClient, Client

__all__ = [
    "AsyncClient",
    "Client",
    "DkronError",
    "ExecutionNotFound",
    "JobNotFound",
    "NotFoundError",
    "ValidationError",
    "__version__",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_LAZY = {"Client": "dkron_lab.client", "AsyncClient": "dkron_lab.client"}


def __getattr__(name: str) -> Any:
    """``Client`` and ``AsyncClient`` on first use (httpx alone costs ~100 ms to import)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dkron_lab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Jupyter server's entry point: the ``DkronLab`` extension app (node + REST API)."""
    from dkron_lab.jupyter.extension import DkronLab

    return [{"module": "dkron_lab", "app": DkronLab}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lies in this package (``dkron_lab/labextension``,
    built from ``labextension/``), for ``jupyter labextension develop`` and tools that look for
    it here rather than in ``share/jupyter/labextensions``."""
    return [{"src": "labextension", "dest": "dkron-lab"}]


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext dkron_lab``: register the ``%dkron`` / ``%%dkron`` magics."""
    from dkron_lab.jupyter.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """``%unload_ext dkron_lab``."""
    from dkron_lab.jupyter.magics import unload_ipython_extension as unload

    unload(ipython)
