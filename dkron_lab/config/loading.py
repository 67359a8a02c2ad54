"""Where a config comes from and which source wins, as Dkron (viper) does it: a flag given on the
command line beats ``DKRON_<KEY>``, which beats the config file, which beats the default."""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dkron_lab.config.schema import OPTIONS, Config
from dkron_lab.config.values import BadPart
from dkron_lab.errors import ValidationError

__all__ = [
    "CONFIG_FILE_NAMES",
    "NOT_YET_SUPPORTED",
    "SEARCH_DIRS",
    "LoadedConfig",
    "env_name",
    "find_config_file",
    "load_config",
    "read_config_file",
    "resolve_config",
]

log = logging.getLogger("dkron_lab.config")


SEARCH_DIRS: tuple[str, ...] = ("/etc/dkron", "~/.dkron", "config")
CONFIG_FILE_NAMES: tuple[str, ...] = ("dkron.json", "dkron.yaml", "dkron.yml")

# Dkron keys a Dkron config may carry that nothing in dkron-lab reads yet.
NOT_YET_SUPPORTED: frozenset[str] = frozenset(
    {
        "advertise-rpc-port",
        "bootstrap",
        "cronitor-endpoint",
        "devmode",
        "disable-usage-stats",
        "dog-statsd-addr",
        "dog-statsd-tags",
        "otel-endpoint",
        "profile",
        "reconcileinterval",
        "rpc-port",
        "serf-reconnect-timeout",
        "webhook-url",
    }
)

# Dkron reads node tags from the ``tag`` list (flag, env) before the ``tags`` map (file).
_ALIASES = {"tag": "tags"}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    """A config and how it was found: the file read (if any) and the warnings to show."""

    config: Config
    file: Path | None = None
    warnings: tuple[str, ...] = ()


_KNOWN = sorted({*OPTIONS, *_ALIASES, *NOT_YET_SUPPORTED})


def env_name(key: str) -> str:
    """``bootstrap-expect`` (or ``bootstrap_expect``) -> ``DKRON_BOOTSTRAP_EXPECT``."""
    return "DKRON_" + _normal(key).upper().replace("-", "_")


def find_config_file(search_dirs: Iterable[str | Path] = SEARCH_DIRS) -> Path | None:
    """The first ``dkron.json|yaml|yml`` in ``search_dirs`` (``~`` expanded), else ``None``."""
    for directory in search_dirs:
        for name in CONFIG_FILE_NAMES:
            candidate = Path(directory).expanduser() / name
            if candidate.is_file():
                return candidate
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML or JSON config file (``{}`` when the file is empty).

    Raises ``ValidationError`` naming the file when it cannot be read or parsed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValidationError(f"config file {path} does not parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationError(
            f"config file {path} must hold a map of keys to values (e.g. 'server: true'), "
            f"not a {type(data).__name__}"
        )
    return data


def resolve_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    search_dirs: Iterable[str | Path] = SEARCH_DIRS,
) -> LoadedConfig:
    """Build the config from ``flags`` (keys are flag names; ``None`` and ``()`` mean "not
    given"), ``env`` (default ``os.environ``) and the config file, without side effects.

    Raises ``ValidationError`` for a value of the wrong form or a missing ``config_file``.
    """
    env = os.environ if env is None else env
    if config_file is not None and not Path(config_file).is_file():
        raise ValidationError(f"config file {config_file} not found: check the --config path")
    path = Path(config_file) if config_file is not None else find_config_file(search_dirs)
    layers = [
        _layer(read_config_file(path) if path else {}, f"file {path}"),
        _layer(_from_env(env), "env"),
        _layer(flags or {}, "flag"),
    ]
    values = {key: value for layer in layers for key, value in layer.values.items()}
    config = Config(**{key.replace("-", "_"): _convert(key, *pair) for key, pair in values.items()})
    return LoadedConfig(config=config, file=path, warnings=_warnings(layers))


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    search_dirs: Iterable[str | Path] = SEARCH_DIRS,
) -> Config:
    """``resolve_config``, with its warnings logged on ``dkron_lab.config``."""
    loaded = resolve_config(flags, env=env, config_file=config_file, search_dirs=search_dirs)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded.config


@dataclass(frozen=True, slots=True)
class _Layer:
    origin: str  # "flag", "env" or "file <path>"
    values: dict[str, tuple[Any, str]]  # canonical key -> (raw value, where it came from)
    unsupported: list[str]
    unknown: list[str]


def _normal(key: Any) -> str:
    return str(key).strip().lower().replace("_", "-")


def _from_env(env: Mapping[str, str]) -> dict[str, str]:
    # ``tags`` before its alias ``tag``, so DKRON_TAG wins over DKRON_TAGS as in Dkron.
    names = [env_name(key) for key in (*OPTIONS, *_ALIASES, *NOT_YET_SUPPORTED)]
    return {name: env[name] for name in names if env.get(name, "").strip()}


def _layer(data: Mapping[Any, Any], origin: str) -> _Layer:
    layer = _Layer(origin, {}, [], [])
    for raw_key, value in data.items():
        key = _normal(str(raw_key).removeprefix("DKRON_") if origin == "env" else raw_key)
        canonical = _ALIASES.get(key, key)
        if canonical in NOT_YET_SUPPORTED:
            layer.unsupported.append(key)
        elif canonical not in OPTIONS:
            layer.unknown.append(str(raw_key))
        elif value is not None and value != ():
            layer.values[canonical] = (value, _where(origin, key, str(raw_key)))
    return layer


def _where(origin: str, key: str, raw_key: str) -> str:
    if origin == "flag":
        return f"flag --{key}"
    if origin == "env":
        return f"env {raw_key}"
    return f"{origin} (key {raw_key!r})"


def _convert(key: str, value: Any, where: str) -> Any:
    option = OPTIONS[key]
    try:
        return option.parse(value)
    except BadPart as exc:
        shown = exc.args[0]
    except (ValueError, TypeError):  # binascii.Error and our ValidationError are ValueErrors
        shown = value
    raise ValidationError(f"invalid {key} {shown!r} from {where}: expected {option.expected}")


def _warnings(layers: list[_Layer]) -> tuple[str, ...]:
    warnings = [_unknown_warning(key, layer.origin) for layer in layers for key in layer.unknown]
    unsupported = sorted({key for layer in layers for key in layer.unsupported})
    if unsupported:
        warnings.append(
            "Dkron options accepted but not yet supported (ignored): " + ", ".join(unsupported)
        )
    return tuple(warnings)


def _unknown_warning(raw_key: str, origin: str) -> str:
    close = difflib.get_close_matches(_normal(raw_key), _KNOWN, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "it is ignored"
    return f"unknown key {raw_key!r} in {origin}: {hint}"
