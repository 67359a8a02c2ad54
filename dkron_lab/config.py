"""One frozen configuration for a node, built once at the edge (CLI flags, ``DKRON_*``
environment variables, ``dkron.yml``; or the Jupyter extension's traits) and read everywhere else.

Field names are Dkron's flag names with ``-`` turned into ``_``.

Loading follows Dkron (viper): a flag given on the command line beats the environment variable
``DKRON_<KEY_UPPER_WITH_UNDERSCORES>``, which beats the config file, which beats the default.
The config file is ``--config PATH``, else the first ``dkron.json|yaml|yml`` found in
``/etc/dkron``, ``$HOME/.dkron`` and ``./config``, in that order, as Dkron searches them.
Keys are the flag names, case-insensitive, with ``-`` or ``_``. Dkron keys that dkron-lab does
not act on yet are accepted with one warning; unknown keys are warned about with the nearest
known key; a value of the wrong form is a ``ValidationError`` naming the key, where it came from
and the form expected.
"""

from __future__ import annotations

import base64
import difflib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from dkron_lab.errors import ValidationError
from dkron_lab.model.units import parse_duration, parse_size

__all__ = [
    "CONFIG_FILE_NAMES",
    "FSYNC_MODES",
    "LOG_LEVELS",
    "NOTIFY_ON",
    "NOT_YET_SUPPORTED",
    "SEARCH_DIRS",
    "Config",
    "LoadedConfig",
    "env_name",
    "find_config_file",
    "load_config",
    "read_config_file",
    "resolve_config",
    "split_host_port",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a node needs to start. Defaults are Dkron's where Dkron has one."""

    server: bool = False
    bootstrap_expect: int = 0
    node_name: str = field(default_factory=socket.gethostname)
    data_dir: Path = Path("dkron.data")
    http_addr: str = "127.0.0.1:8080"
    bind_addr: str = "127.0.0.1:8946"
    advertise_addr: str = ""
    join: tuple[str, ...] = ()
    retry_join: tuple[str, ...] = ()
    retry_max: int = 0
    retry_interval: timedelta = timedelta(seconds=30)
    tags: dict[str, str] = field(default_factory=dict)
    datacenter: str = "dc1"
    region: str = "global"
    encrypt: str = ""
    log_level: str = "info"
    api_token: str = ""
    # security (docs/security.md)
    no_auth: bool = False
    api_tokens_file: Path | None = None
    allow_insecure_remote: bool = False
    cors_origin: tuple[str, ...] = ()
    allowed_host: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # durability and resource limits
    fsync: str = "batch"
    sql_memory_limit: int = 1024**3
    sql_temp_limit: int = 1024**3
    sql_max_bytes: int = 64 * 1024**2
    sql_max_queries: int = 2
    max_body_size: int = 8 * 1024 * 1024
    output_limit: int = 256_000
    history_retention: timedelta | None = None
    catchup: str = "once"
    catchup_window: timedelta = timedelta(hours=1)
    raft_multiplier: int = 1
    ui: bool = True
    # concurrency (docs/jobs.md)
    executor_concurrency: int = 0
    executor_limits: dict[str, int] = field(default_factory=dict)
    concurrency_limit: int = 0
    concurrency_groups: dict[str, int] = field(default_factory=dict)
    # notifications (docs/notifications.md), Dkron's names
    notify_on: str = "always"
    webhook_endpoint: str = ""
    webhook_payload: str = ""
    webhook_headers: tuple[str, ...] = ()
    pre_webhook_endpoint: str = ""
    pre_webhook_payload: str = ""
    pre_webhook_headers: tuple[str, ...] = ()
    mail_host: str = ""
    mail_port: int = 25
    mail_username: str = ""
    mail_password: str = ""
    mail_from: str = ""
    mail_payload: str = ""
    mail_subject_prefix: str = "[Dkron]"
    # metrics (docs/metrics.md)
    enable_prometheus: bool = False
    statsd_addr: str = ""

    @property
    def http_host_port(self) -> tuple[str, int]:
        """``(host, port)`` of the HTTP API; host ``""`` means every interface, as in Dkron."""
        return split_host_port(self.http_addr, default_port=8080)

    @property
    def bind_host_port(self) -> tuple[str, int]:
        """``(host, port)`` of the cluster (Raft) listener."""
        return split_host_port(self.bind_addr, default_port=8946)


def split_host_port(address: str, *, default_port: int) -> tuple[str, int]:
    """``"host:port"``, ``":port"``, ``"host"`` or ``"[::1]:port"`` into ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        host, port = address, ""
    host = host.strip("[]")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValidationError(
            f"invalid port in address {address!r}: use host:port, e.g. 127.0.0.1:8080"
        )
    return host, int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    """A config and how it was found: the file read (if any) and the warnings to show."""

    config: Config
    file: Path | None = None
    warnings: tuple[str, ...] = ()


SEARCH_DIRS: tuple[str, ...] = ("/etc/dkron", "~/.dkron", "config")
CONFIG_FILE_NAMES: tuple[str, ...] = ("dkron.json", "dkron.yaml", "dkron.yml")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warn", "warning", "error", "fatal", "panic")

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


class _BadPart(ValueError):
    """One item of a list value is wrong: the error message shows that item."""


_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = _text(value).lower()
    if word not in _TRUE | _FALSE:
        raise ValueError(word)
    return word in _TRUE


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(value)
    return str(value).strip()


def _name(value: Any) -> str:
    text = _text(value)
    if not text:
        raise ValueError(value)
    return text


def _whole(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(value)
        number = value if isinstance(value, int) else int(_text(value))
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(value)
        return number

    return parse


def _address(default_port: int, *, optional: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value)
        if "{{" in text or (not text and not optional):
            raise ValueError(value)
        if text:
            split_host_port(text, default_port=default_port)
        return text

    return parse


def _strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    # Dkron's string-slice flags split on commas too: --join a,b is two addresses.
    parts = (part.strip() for item in items for part in _text(item).split(","))
    return tuple(part for part in parts if part)


def _tags(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {_name(key): _text(tag) for key, tag in value.items()}
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return _tags(json.loads(value))
    if isinstance(value, list | tuple) and all(isinstance(item, Mapping) for item in value):
        return {key: tag for item in value for key, tag in _tags(item).items()}
    tags: dict[str, str] = {}
    for pair in _strings(value):
        key, sep, tag = pair.partition("=")
        if not sep or not key.strip():
            raise _BadPart(pair)
        tags[key.strip()] = tag.strip()
    return tags


def _duration(value: Any) -> timedelta:
    duration = value if isinstance(value, timedelta) else parse_duration(_text(value))
    if duration < timedelta(0):
        raise ValueError(value)
    return duration


def _retention(value: Any) -> timedelta | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _duration(value) or None


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    size = value if isinstance(value, int) else parse_size(_text(value))
    if size <= 0:
        raise ValueError(value)
    return size


# The same choices as dkron_lab.model.job.CATCHUP_POLICIES (a test keeps them equal); not
# imported, so that loading a config does not load the schedule engine.
_CATCHUP_POLICIES = ("skip", "once", "all")


def _catchup(value: Any) -> str:
    policy = _text(value).lower()
    if policy not in _CATCHUP_POLICIES:
        raise ValueError(value)
    return policy


NOTIFY_ON = ("always", "failure", "recovery", "never")


def _notify_on(value: Any) -> str:
    when = _text(value).lower()
    if when not in NOTIFY_ON:
        raise ValueError(value)
    return when


def _limits(value: Any) -> dict[str, int]:
    counts = _whole(0)
    return {key: counts(limit) for key, limit in _tags(value).items()}


FSYNC_MODES = ("always", "batch", "never")


def _fsync(value: Any) -> str:
    mode = _text(value).lower()
    if mode not in FSYNC_MODES:
        raise ValueError(value)
    return mode


def _optional_path(value: Any) -> Path | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _path(value)


def _log_level(value: Any) -> str:
    level = _text(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(value)
    return level


def _path(value: Any) -> Path:
    return Path(_name(value)).expanduser()


def _gossip_key(value: Any) -> str:
    text = _text(value)
    if text and len(base64.b64decode(text, validate=True)) not in (16, 24, 32):
        raise ValueError(value)
    return text


@dataclass(frozen=True, slots=True)
class _Option:
    parse: Callable[[Any], Any]
    expected: str


_DURATION = "a Go duration, e.g. 30s, 5m or 1h30m"
_SIZE = "a size in bytes, or with a unit: e.g. 8MB, 512KB"
_ADDRESS = "host:port, e.g. 127.0.0.1:8946 (go-sockaddr templates are not supported)"

_OPTIONS: dict[str, _Option] = {
    "server": _Option(_boolean, "true or false"),
    "bootstrap-expect": _Option(_whole(0), "a whole number >= 0, e.g. 1 for a single server"),
    "node-name": _Option(_name, "a non-empty name, e.g. node1"),
    "data-dir": _Option(_path, "a directory path, e.g. /var/lib/dkron-lab"),
    "http-addr": _Option(_address(8080), "host:port or :port, e.g. 127.0.0.1:8080"),
    "bind-addr": _Option(_address(8946), _ADDRESS),
    "advertise-addr": _Option(_address(8946, optional=True), _ADDRESS + ", or empty"),
    "join": _Option(_strings, "a list of host:port addresses (or a comma-separated string)"),
    "retry-join": _Option(_strings, "a list of host:port addresses (or a comma-separated string)"),
    "retry-max": _Option(_whole(0), "a whole number >= 0 (0 retries for ever)"),
    "retry-interval": _Option(_duration, _DURATION),
    "tags": _Option(_tags, "a map, or key=value pairs: e.g. role=web,dc=east"),
    "datacenter": _Option(_name, "a non-empty name, e.g. dc1"),
    "region": _Option(_name, "a non-empty name, e.g. global"),
    "encrypt": _Option(_gossip_key, "base64 of 16, 24 or 32 bytes, as `dkron-lab keygen` prints"),
    "log-level": _Option(_log_level, "one of " + ", ".join(LOG_LEVELS)),
    "api-token": _Option(_text, "a string"),
    "no-auth": _Option(_boolean, "true or false"),
    "api-tokens-file": _Option(_optional_path, "a path to a YAML tokens file (docs/security.md)"),
    "allow-insecure-remote": _Option(_boolean, "true or false"),
    "cors-origin": _Option(_strings, "a list of origins, e.g. https://dash.example.com"),
    "allowed-host": _Option(_strings, "a list of host names, e.g. dkron.example.com"),
    "tls-cert": _Option(_optional_path, "a path to a PEM certificate (chain)"),
    "tls-key": _Option(_optional_path, "a path to the certificate's PEM private key"),
    "tls-ca": _Option(_optional_path, "a path to the PEM CA bundle that signed the nodes' certs"),
    "fsync": _Option(_fsync, "one of " + ", ".join(FSYNC_MODES)),
    "sql-memory-limit": _Option(_size, _SIZE),
    "sql-temp-limit": _Option(_size, _SIZE),
    "sql-max-bytes": _Option(_size, _SIZE),
    "sql-max-queries": _Option(_whole(1), "a whole number >= 1"),
    "max-body-size": _Option(_size, _SIZE),
    "output-limit": _Option(_size, _SIZE),
    "history-retention": _Option(_retention, _DURATION + "; 0 or empty keeps every execution"),
    "catchup": _Option(_catchup, "one of skip, once or all (see docs/schedules.md)"),
    "catchup-window": _Option(_duration, _DURATION + "; 0 catches up nothing"),
    "raft-multiplier": _Option(_whole(1, 10), "a whole number from 1 to 10"),
    "ui": _Option(_boolean, "true or false"),
    "executor-concurrency": _Option(_whole(0), "a whole number >= 0 (0: no limit)"),
    "executor-limits": _Option(_limits, "executor=N pairs, e.g. shell=4,http=16"),
    "concurrency-limit": _Option(_whole(0), "a whole number >= 0 (0: no limit)"),
    "concurrency-groups": _Option(_limits, "group=N pairs, e.g. etl=2,reports=1"),
    "notify-on": _Option(_notify_on, "one of " + ", ".join(NOTIFY_ON)),
    "webhook-endpoint": _Option(_text, "a URL, e.g. https://hooks.example.com/dkron"),
    "webhook-payload": _Option(_text, "a Go-style template, e.g. {{.JobName}} {{.Success}}"),
    "webhook-headers": _Option(_strings, "a list of 'Name: value' headers"),
    "pre-webhook-endpoint": _Option(_text, "a URL, e.g. https://hooks.example.com/dkron"),
    "pre-webhook-payload": _Option(_text, "a Go-style template, e.g. {{.JobName}}"),
    "pre-webhook-headers": _Option(_strings, "a list of 'Name: value' headers"),
    "mail-host": _Option(_text, "a host name, e.g. smtp.example.com"),
    "mail-port": _Option(_whole(1, 65535), "a port number, e.g. 25 or 587"),
    "mail-username": _Option(_text, "a string"),
    "mail-password": _Option(_text, "a string"),
    "mail-from": _Option(_text, "an email address, e.g. dkron@example.com"),
    "mail-payload": _Option(_text, "a Go-style template for the mail body"),
    "mail-subject-prefix": _Option(_text, "a string, e.g. [Dkron]"),
    "enable-prometheus": _Option(_boolean, "true or false"),
    "statsd-addr": _Option(_address(8125, optional=True), "host:port of a statsd server"),
}

_KNOWN = sorted({*_OPTIONS, *_ALIASES, *NOT_YET_SUPPORTED})


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
    names = [env_name(key) for key in (*_OPTIONS, *_ALIASES, *NOT_YET_SUPPORTED)]
    return {name: env[name] for name in names if env.get(name, "").strip()}


def _layer(data: Mapping[Any, Any], origin: str) -> _Layer:
    layer = _Layer(origin, {}, [], [])
    for raw_key, value in data.items():
        key = _normal(str(raw_key).removeprefix("DKRON_") if origin == "env" else raw_key)
        canonical = _ALIASES.get(key, key)
        if canonical in NOT_YET_SUPPORTED:
            layer.unsupported.append(key)
        elif canonical not in _OPTIONS:
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
    option = _OPTIONS[key]
    try:
        return option.parse(value)
    except _BadPart as exc:
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
