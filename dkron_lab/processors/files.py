"""The ``files`` processor: writes the output to a file per execution (Dkron's files processor).

Config: ``forward`` (default false) and ``log_dir`` (default ``/var/log/dkron``, created if
missing). The output goes to ``<log_dir>/<execution id>.log`` on the node running the
processor; unless ``forward`` is true, the stored output becomes that file's path. Characters
of the id that are unsafe in a file name (the id ends with the node name) become ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from dkron_lab.errors import InvalidJob
from dkron_lab.model.execution import Execution
from dkron_lab.plugins import apply_forward, config_bool

__all__ = ["DEFAULT_LOG_DIR", "FilesProcessor", "log_file_name"]

DEFAULT_LOG_DIR = "/var/log/dkron"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def log_file_name(execution_id: str) -> str:
    """``<id>.log`` with every character outside ``[A-Za-z0-9._-]`` and a leading dot as ``_``."""
    safe = _UNSAFE.sub("_", execution_id)[:200]
    if not safe or safe.startswith("."):
        safe = "_" + safe
    return f"{safe}.log"


class FilesProcessor:
    """Writes each execution's output to its own file; see the module docstring."""

    def validate(self, config: Mapping[str, str]) -> None:
        config_bool(config, "forward")
        if "log_dir" in config and not config["log_dir"].strip():
            raise InvalidJob(
                f'files processor: "log_dir" is empty; leave it out for {DEFAULT_LOG_DIR}'
            )

    def process(self, execution: Execution, config: Mapping[str, str]) -> Execution:
        directory = Path(config.get("log_dir") or DEFAULT_LOG_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / log_file_name(execution.id)
        path.write_text(execution.output, encoding="utf-8")
        return apply_forward(execution, config, str(path))
