"""What one manual run may change of its job: environment variables for the ``shell`` executor
and ``parameters`` for the ``notebook`` executor (``POST /v1/jobs/{job}`` with a body,
docs/api.md). They are parsed and checked here, and applied to a copy of the job that this run
alone carries to its nodes; the stored job never changes.

The overridden job is what the runner gets, so its override values are secrets as the job's own
env is (``model.secrets``): every env value, and every parameter whose name says so, is scrubbed
from the run's output. Everything here is pure.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dkron_lab.errors import BadRequest
from dkron_lab.model.job import Job

__all__ = ["ENV_NAME", "RunOverrides", "apply_overrides", "parse_overrides"]

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
"""What an environment variable's name may be."""

_KEYS = ("env", "parameters")


@dataclass(frozen=True, slots=True)
class RunOverrides:
    """The overrides of one run: ``env`` (name, value) and ``parameters`` (name, JSON value),
    each in the order given. Empty: the run is the job's, unchanged."""

    env: tuple[tuple[str, str], ...] = ()
    parameters: tuple[tuple[str, Any], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.env or self.parameters)

    def to_json(self) -> dict[str, Any]:
        """The body ``parse_overrides`` reads back (for the call to the leader)."""
        return {"env": dict(self.env), "parameters": dict(self.parameters)}


def parse_overrides(data: Any) -> RunOverrides:
    """The overrides a run request's body asks for (``None``: none); ``BadRequest`` says what
    is wrong with it and how to write it."""
    if data is None:
        return RunOverrides()
    if not isinstance(data, dict):
        raise BadRequest(
            "the run request body must be a JSON object, e.g. "
            '{"env": {"NAME": "value"}, "parameters": {"name": 1}}, or no body at all'
        )
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise BadRequest(
            f"the run request body has unknown key(s) {', '.join(map(repr, unknown))}: "
            "only 'env' (shell jobs) and 'parameters' (notebook jobs) can be overridden"
        )
    return RunOverrides(env=_env(data.get("env")), parameters=_parameters(data.get("parameters")))


def _object(value: Any, key: str, example: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(
            f"{key!r} in the run request body must be a JSON object, e.g. {example}, "
            f"not {type(value).__name__}"
        )
    return value


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    pairs = []
    for name, text in _object(value, "env", '{"NAME": "value"}').items():
        if not ENV_NAME.match(name):
            raise BadRequest(
                f"env name {name!r} is not a variable name: use letters, digits and _, "
                "not starting with a digit"
            )
        if not isinstance(text, str):
            raise BadRequest(
                f"env {name}: the value must be a string, not {type(text).__name__} "
                f'(write "{name}": "{json.dumps(text)}")'
            )
        if "," in text or "\0" in text:
            raise BadRequest(
                f"env {name}: the value cannot contain a comma or a NUL byte (the shell "
                'executor\'s "env" is "K1=v1,K2=v2")'
            )
        pairs.append((name, text))
    return tuple(pairs)


def _parameters(value: Any) -> tuple[tuple[str, Any], ...]:
    found = _object(value, "parameters", '{"region": "eu", "days": 7}')
    bad = [name for name in found if not name.isidentifier() or keyword.iskeyword(name)]
    if bad:
        raise BadRequest(
            f"parameters {', '.join(map(repr, bad))} are not Python variable names: use "
            "letters, digits and _, not starting with a digit, and no keyword"
        )
    return tuple(found.items())


def apply_overrides(job: Job, overrides: RunOverrides) -> Job:
    """``job`` as this one run runs it: its env (``shell``) or parameters (``notebook``) with
    the overrides laid over them. ``BadRequest`` when the job's executor takes neither."""
    if not overrides:
        return job
    config = dict(job.executor_config)
    if overrides.env:
        if job.executor != "shell":
            raise BadRequest(
                f"job {job.name!r} runs the {job.executor!r} executor, which takes no env: "
                "env overrides are for shell jobs"
            )
        env = dict(_split_env(config.get("env", "")))
        env.update(overrides.env)
        config["env"] = ",".join(f"{name}={value}" for name, value in env.items())
    if overrides.parameters:
        if job.executor != "notebook":
            raise BadRequest(
                f"job {job.name!r} runs the {job.executor!r} executor, which takes no "
                "parameters: parameter overrides are for notebook jobs"
            )
        parameters = _stored_parameters(config.get("parameters", ""))
        parameters.update(overrides.parameters)
        config["parameters"] = json.dumps(parameters)
    return replace(job, executor_config=config)


def _split_env(text: str) -> list[tuple[str, str]]:
    """The job's ``"K1=v1,K2=v2"`` as pairs (the shell executor checked it when it was
    saved)."""
    pairs = []
    for entry in text.split(","):
        name, sep, value = entry.partition("=")
        if sep and name.strip():
            pairs.append((name.strip(), value))
    return pairs


def _stored_parameters(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}  # the notebook executor refused it when the job was saved
    return dict(value) if isinstance(value, dict) else {}
