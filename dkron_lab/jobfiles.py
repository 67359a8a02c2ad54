"""Job definitions written by hand, in YAML or JSON: ``dkron-lab jobs apply -f`` files and
``%%dkron job`` cell bodies read through this one parser.

YAML is a superset of JSON, so one loader takes both. What comes out is what the API takes:
plain mappings with string keys, timestamps as RFC 3339 strings (YAML reads an unquoted
``2026-01-01T00:00:00Z`` as a datetime).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from dkron_lab.errors import BadRequest

__all__ = ["JOB_KEYS", "looks_like_job", "read_jobs"]

# A mapping with one of these keys is a job definition (not, say, a shell command).
JOB_KEYS = frozenset({"name", "schedule", "executor", "executor_config"})


def read_jobs(text: str, source: str = "the input") -> list[dict[str, Any]]:
    """Every job in ``text``: one mapping, a list of them, or several YAML documents of
    either. Raises ``BadRequest`` saying what is wrong with ``source``."""
    import yaml  # only where job files are read: keeps `import dkron_lab` light in a kernel

    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise BadRequest(f"{source} is neither JSON nor YAML: {exc}") from None
    found = [job for doc in documents for job in (doc if isinstance(doc, list) else [doc])]
    for job in found:
        if not isinstance(job, dict) or not isinstance(job.get("name"), str):
            raise BadRequest(
                f"{source}: every job must be a mapping with a name, e.g. "
                '{"name": "hello", "schedule": "@every 1m", "executor": "shell", ...}'
            )
    if not found:
        raise BadRequest(f"{source} holds no job")
    return [_plain(job) for job in found]


def looks_like_job(text: str) -> dict[str, Any] | None:
    """``text`` as one job mapping (it has a job key; a name is not required), else ``None``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not JOB_KEYS & set(data):
        return None
    plain: dict[str, Any] = _plain(data)
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    return value
