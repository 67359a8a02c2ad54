"""One frozen configuration for a node, built once at the edge (CLI flags, ``DKRON_*``
environment variables, ``dkron.yml``; or the Jupyter extension's traits) and read everywhere else.

Each option is declared once, on its ``Config`` field: type, default, parser, the form it
expects, help, and how it is given as a flag (``Option``). ``OPTIONS`` is read from those fields;
the config-file keys, the ``DKRON_*`` variables, the flags of ``dkron-lab agent`` (``cli/node.py``) and
the ``c.DkronLab`` traits (``jupyter/extension.py``) are all made from ``OPTIONS``. Field names
are Dkron's flag names with ``-`` turned into ``_``.

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
from dataclasses import MISSING, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_type_hints

import yaml

from dkron_lab.errors import ValidationError
from dkron_lab.model.units import format_duration, parse_duration, parse_size

__all__ = [
    "CONFIG_FILE_NAMES",
    "FSYNC_MODES",
    "LOG_LEVELS",
    "NOTIFY_ON",
    "NOT_YET_SUPPORTED",
    "OPTIONS",
    "SEARCH_DIRS",
    "Config",
    "FlagStyle",
    "LoadedConfig",
    "Option",
    "env_name",
    "find_config_file",
    "load_config",
    "read_config_file",
    "resolve_config",
    "split_host_port",
]

log = logging.getLogger(__name__)


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


FlagStyle = Literal["value", "many", "switch", "toggle"]
"""How an option is given as a ``dkron-lab agent`` flag: ``value`` (``--region eu``), ``many``
(repeatable: ``--join a --join b``), ``switch`` (``--server`` sets true) or ``toggle``
(``--ui``/``--no-ui``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One option of a node, declared once on its ``Config`` field. Its config-file key, its
    ``DKRON_*`` variable, its ``dkron-lab agent`` flag and, for some, a ``c.DkronLab`` trait of
    the Jupyter extension are all made from this; nothing else lists the options."""

    key: str
    """The Dkron flag name without ``--``, e.g. ``bootstrap-expect``; also the config-file key."""
    name: str
    """The ``Config`` field (and Jupyter trait): the key with ``-`` turned into ``_``."""
    type: Any
    """The field's type, e.g. ``int`` or ``tuple[str, ...]``."""
    default: Any
    """The value when no source sets it."""
    parse: Callable[[Any], Any]
    """Turns a value from a flag, a variable, a file or a trait into the field's type; raises
    ``ValueError`` (or ``TypeError``) for a value of the wrong form."""
    expected: str
    """The form ``parse`` takes, for error messages: ``a whole number >= 0``."""
    help: str
    """What the option does, in words that fit a flag, a config key and a trait alike."""
    metavar: str = ""
    """The flag's placeholder for its value (``N``, ``HOST:PORT``)."""
    flag: FlagStyle = "value"
    """How it is given as a flag."""
    flag_name: str = ""
    """The flag when it is not ``--<key>``: ``--tag`` gives one of ``tags``."""
    shown_default: str | None = None
    """The default in words, when the value would not say it (``the host name``)."""

    @property
    def shown(self) -> str:
        """The default as ``--help`` and docs show it; ``""`` when there is nothing to show."""
        if self.shown_default is not None:
            return self.shown_default
        value = self.default
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, timedelta):
            return format_duration(value)
        if self.parse is _size:
            return _show_size(value)
        return "" if value is None or value in ("", (), {}) else str(value)


def _show_size(size: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def _option(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    parse: Callable[[Any], Any],
    expected: str,
    help: str,
    metavar: str = "",
    flag: FlagStyle = "value",
    flag_name: str = "",
    shown_default: str | None = None,
) -> Any:
    """A ``Config`` field with its ``Option`` (less what the field itself says)."""
    about = {
        "parse": parse,
        "expected": expected,
        "help": help,
        "metavar": metavar,
        "flag": flag,
        "flag_name": flag_name,
        "shown_default": shown_default,
    }
    if factory is not None:
        return field(default_factory=factory, metadata={_ABOUT: about})
    return field(default=default, metadata={_ABOUT: about})


_ABOUT = "dkron_lab.option"
_BOOL = "true or false"
_DURATION = "a Go duration, e.g. 30s, 5m or 1h30m"
_SIZE = "a size in bytes, or with a unit: e.g. 8MB, 512KB"
_ADDRESS = "host:port, e.g. 127.0.0.1:8946 (go-sockaddr templates are not supported)"
_ADDRESSES = "a list of host:port addresses (or a comma-separated string)"
_NO_LIMIT = "a whole number >= 0 (0: no limit)"
_URL = "a URL, e.g. https://hooks.example.com/dkron"
_HEADERS = "a list of 'Name: value' headers"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a node needs to start. Defaults are Dkron's where Dkron has one.

    Each field declares its option (``_option``): ``OPTIONS`` is read from here, and the
    agent's flags and the extension's traits from ``OPTIONS``. The field order is the order of
    ``dkron-lab agent --help``.
    """

    server: bool = _option(
        False,
        parse=_boolean,
        expected=_BOOL,
        flag="switch",
        help="Run as a server: a Raft voter that holds the job state, serves the REST API and "
        "schedules when leader.",
    )
    bootstrap_expect: int = _option(
        0,
        parse=_whole(0),
        expected="a whole number >= 0, e.g. 1 for a single server",
        metavar="N",
        help="Servers to wait for before bootstrapping the cluster; 1 starts a single-node "
        "cluster.",
    )
    node_name: str = _option(
        factory=socket.gethostname,
        parse=_name,
        expected="a non-empty name, e.g. node1",
        metavar="NAME",
        shown_default="the host name",
        help="Unique name of this node; also its Raft id.",
    )
    data_dir: Path = _option(
        Path("dkron.data"),
        parse=_path,
        expected="a directory path, e.g. /var/lib/dkron-lab",
        metavar="DIR",
        help="Directory for the Raft log, snapshots and the DuckDB history.",
    )
    http_addr: str = _option(
        "127.0.0.1:8080",
        parse=_address(8080),
        expected="host:port or :port, e.g. 127.0.0.1:8080",
        metavar="HOST:PORT",
        help="Address of the REST API and UI (servers); ':8080' listens on every interface.",
    )
    bind_addr: str = _option(
        "127.0.0.1:8946",
        parse=_address(8946),
        expected=_ADDRESS,
        metavar="HOST:PORT",
        help="Address of the cluster (Raft) listener.",
    )
    advertise_addr: str = _option(
        "",
        parse=_address(8946, optional=True),
        expected=_ADDRESS + ", or empty",
        metavar="HOST:PORT",
        shown_default="the bind address",
        help="Cluster address other nodes use to reach this one, behind NAT.",
    )
    join: tuple[str, ...] = _option(
        (),
        parse=_strings,
        expected=_ADDRESSES,
        metavar="HOST:PORT",
        flag="many",
        help="Cluster (Raft) addresses of the servers to join at start; a failed join only warns.",
    )
    retry_join: tuple[str, ...] = _option(
        (),
        parse=_strings,
        expected=_ADDRESSES,
        metavar="HOST:PORT",
        flag="many",
        help="Like join, but retried until it succeeds.",
    )
    retry_max: int = _option(
        0,
        parse=_whole(0),
        expected="a whole number >= 0 (0 retries for ever)",
        metavar="N",
        help="Give up retry-join after N attempts; 0 retries for ever.",
    )
    retry_interval: timedelta = _option(
        timedelta(seconds=30),
        parse=_duration,
        expected=_DURATION,
        metavar="DURATION",
        help="Wait between retry-join attempts, a Go duration.",
    )
    tags: dict[str, str] = _option(
        factory=dict,
        parse=_tags,
        expected="a map, or key=value pairs: e.g. role=web,dc=east",
        metavar="KEY=VALUE",
        flag="many",
        flag_name="tag",
        help="Node tags for job targeting, e.g. role=web; not merged across sources.",
    )
    datacenter: str = _option(
        "dc1",
        parse=_name,
        expected="a non-empty name, e.g. dc1",
        metavar="NAME",
        help="Datacenter of this node (tag dc).",
    )
    region: str = _option(
        "global",
        parse=_name,
        expected="a non-empty name, e.g. global",
        metavar="NAME",
        help="Region of this node; jobs target nodes of the leader's region.",
    )
    encrypt: str = _option(
        "",
        parse=_gossip_key,
        expected="base64 of 16, 24 or 32 bytes, as `dkron-lab keygen` prints",
        metavar="KEY",
        shown_default="none; a lone server makes one into <data-dir>/cluster-key",
        help="Cluster key, base64 of 16, 24 or 32 bytes (see `dkron-lab keygen`); the same on "
        "every node.",
    )
    raft_multiplier: int = _option(
        1,
        parse=_whole(1, 10),
        expected="a whole number from 1 to 10",
        metavar="N",
        help="Scale Raft timeouts, 1 (fast, LAN) to 10.",
    )
    ui: bool = _option(
        True,
        parse=_boolean,
        expected=_BOOL,
        flag="toggle",
        help="Serve the web UI at /ui (servers).",
    )
    log_level: str = _option(
        "info",
        parse=_log_level,
        expected="one of " + ", ".join(LOG_LEVELS),
        metavar="LEVEL",
        help="One of " + "|".join(LOG_LEVELS) + ".",
    )
    api_token: str = _option(
        "",
        parse=_text,
        expected="a string",
        metavar="TOKEN",
        shown_default="generated on first start into <data-dir>/api-token",
        help="The admin bearer token of the REST API (env DKRON_API_TOKEN).",
    )
    # security (docs/security.md)
    no_auth: bool = _option(
        False,
        parse=_boolean,
        expected=_BOOL,
        flag="switch",
        help="Serve the REST API without any token, as Dkron OSS does: anyone who can reach the "
        "port can run commands as this user. Off loopback it also needs --allow-insecure-remote "
        "or TLS.",
    )
    api_tokens_file: Path | None = _option(
        None,
        parse=_optional_path,
        expected="a path to a YAML tokens file (docs/security.md)",
        metavar="PATH",
        help="YAML file of named tokens with roles admin, operator or viewer (docs/security.md).",
    )
    allow_insecure_remote: bool = _option(
        False,
        parse=_boolean,
        expected=_BOOL,
        flag="switch",
        help="Allow --no-auth on an address beyond loopback without TLS.",
    )
    cors_origin: tuple[str, ...] = _option(
        (),
        parse=_strings,
        expected="a list of origins, e.g. https://dash.example.com",
        metavar="ORIGIN",
        flag="many",
        shown_default="none, no cross-origin access",
        help="Origins allowed to call the API from a browser (CORS), e.g. "
        "https://dash.example.com.",
    )
    allowed_host: tuple[str, ...] = _option(
        (),
        parse=_strings,
        expected="a list of host names, e.g. dkron.example.com",
        metavar="HOST",
        flag="many",
        shown_default="loopback names, this host's names, IP addresses",
        help="Host names also accepted in the Host header (DNS rebinding guard); * turns the "
        "check off.",
    )
    tls_cert: Path | None = _option(
        None,
        parse=_optional_path,
        expected="a path to a PEM certificate (chain)",
        metavar="PATH",
        help="PEM certificate: serve the API over HTTPS.",
    )
    tls_key: Path | None = _option(
        None,
        parse=_optional_path,
        expected="a path to the certificate's PEM private key",
        metavar="PATH",
        help="PEM private key of --tls-cert.",
    )
    tls_ca: Path | None = _option(
        None,
        parse=_optional_path,
        expected="a path to the PEM CA bundle that signed the nodes' certs",
        metavar="PATH",
        help="PEM CA bundle that other nodes' certificates are checked against.",
    )
    # durability and resource limits
    fsync: str = _option(
        "batch",
        parse=_fsync,
        expected="one of " + ", ".join(FSYNC_MODES),
        metavar="MODE",
        help="When writes reach the disk before they are acknowledged: always (each write), "
        "batch (one fsync per group of writes) or never (a power cut may lose acknowledged "
        "writes).",
    )
    sql_memory_limit: int = _option(
        1024**3,
        parse=_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Memory one /v1/sql query may use, e.g. 1GB.",
    )
    sql_temp_limit: int = _option(
        1024**3,
        parse=_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Disk a /v1/sql query may spill to.",
    )
    sql_max_bytes: int = _option(
        64 * 1024**2,
        parse=_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Largest /v1/sql response body.",
    )
    sql_max_queries: int = _option(
        2,
        parse=_whole(1),
        expected="a whole number >= 1",
        metavar="N",
        help="/v1/sql queries run at once; more wait their turn.",
    )
    max_body_size: int = _option(
        8 * 1024**2,
        parse=_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Largest request body accepted, e.g. 8MB.",
    )
    output_limit: int = _option(
        256_000,
        parse=_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Output kept per execution in the history (the tail), e.g. 256KB.",
    )
    history_retention: timedelta | None = _option(
        None,
        parse=_retention,
        expected=_DURATION + "; 0 or empty keeps every execution",
        metavar="DURATION",
        shown_default="keep all",
        help="Delete executions older than this, e.g. 720h; 0 keeps all.",
    )
    catchup: str = _option(
        "once",
        parse=_catchup,
        expected="one of skip, once or all (see docs/schedules.md)",
        metavar="POLICY",
        help="What the leader does with fires missed while there was none (after a failover or "
        "a restart), for jobs that set no catchup: skip (as Dkron), once (run the latest) or "
        "all (run each). Skipped fires are recorded.",
    )
    catchup_window: timedelta = _option(
        timedelta(hours=1),
        parse=_duration,
        expected=_DURATION + "; 0 catches up nothing",
        metavar="DURATION",
        help="Catch up only fires missed this recently, a Go duration; older ones are recorded "
        "as skipped.",
    )
    # concurrency (docs/jobs.md)
    executor_concurrency: int = _option(
        0,
        parse=_whole(0),
        expected=_NO_LIMIT,
        metavar="N",
        shown_default="0, no limit",
        help="Run at most N executions at once on this node; the rest queue (shown in /v1/busy).",
    )
    executor_limits: dict[str, int] = _option(
        factory=dict,
        parse=_limits,
        expected="executor=N pairs, e.g. shell=4,http=16",
        metavar="EXECUTOR=N,...",
        help="At most N executions at once per executor on this node, e.g. shell=4,http=16.",
    )
    concurrency_limit: int = _option(
        0,
        parse=_whole(0),
        expected=_NO_LIMIT,
        metavar="N",
        shown_default="0, no limit",
        help="Cluster-wide: at most N executions running at once; the leader queues the rest "
        "in order.",
    )
    concurrency_groups: dict[str, int] = _option(
        factory=dict,
        parse=_limits,
        expected="group=N pairs, e.g. etl=2,reports=1",
        metavar="GROUP=N,...",
        help="Cluster-wide limits per job concurrency_group, e.g. etl=2,reports=1.",
    )
    # notifications (docs/notifications.md), Dkron's names
    notify_on: str = _option(
        "always",
        parse=_notify_on,
        expected="one of " + ", ".join(NOTIFY_ON),
        metavar="WHEN",
        help="When post-run notifications go out: always (as Dkron), failure, recovery (a "
        "failure and the first success after one) or never; a job's metadata notify_on "
        "overrides it.",
    )
    webhook_endpoint: str = _option(
        "", parse=_text, expected=_URL, metavar="URL", help="POST here after each run."
    )
    webhook_payload: str = _option(
        "",
        parse=_text,
        expected="a Go-style template, e.g. {{.JobName}} {{.Success}}",
        metavar="TEMPLATE",
        help="Body template of the post-run webhook.",
    )
    webhook_headers: tuple[str, ...] = _option(
        (),
        parse=_strings,
        expected=_HEADERS,
        metavar="'NAME: VALUE'",
        flag="many",
        help="Headers of the post-run webhook.",
    )
    pre_webhook_endpoint: str = _option(
        "", parse=_text, expected=_URL, metavar="URL", help="POST here as each run starts."
    )
    pre_webhook_payload: str = _option(
        "",
        parse=_text,
        expected="a Go-style template, e.g. {{.JobName}}",
        metavar="TEMPLATE",
        help="Body template of the pre-run webhook.",
    )
    pre_webhook_headers: tuple[str, ...] = _option(
        (),
        parse=_strings,
        expected=_HEADERS,
        metavar="'NAME: VALUE'",
        flag="many",
        help="Headers of the pre-run webhook.",
    )
    mail_host: str = _option(
        "",
        parse=_text,
        expected="a host name, e.g. smtp.example.com",
        metavar="HOST",
        help="SMTP server for run reports by email.",
    )
    mail_port: int = _option(
        25,
        parse=_whole(1, 65535),
        expected="a port number, e.g. 25 or 587",
        metavar="PORT",
        help="SMTP port.",
    )
    mail_username: str = _option(
        "", parse=_text, expected="a string", metavar="USER", help="SMTP user name."
    )
    mail_password: str = _option(
        "", parse=_text, expected="a string", metavar="PASSWORD", help="SMTP password."
    )
    mail_from: str = _option(
        "",
        parse=_text,
        expected="an email address, e.g. dkron@example.com",
        metavar="ADDRESS",
        help="Sender of run reports.",
    )
    mail_payload: str = _option(
        "",
        parse=_text,
        expected="a Go-style template for the mail body",
        metavar="TEMPLATE",
        help="Body template of run reports.",
    )
    mail_subject_prefix: str = _option(
        "[Dkron]",
        parse=_text,
        expected="a string, e.g. [Dkron]",
        metavar="TEXT",
        help="Subject prefix.",
    )
    # metrics (docs/metrics.md)
    enable_prometheus: bool = _option(
        False,
        parse=_boolean,
        expected=_BOOL,
        flag="toggle",
        help="Serve Prometheus metrics at /metrics.",
    )
    statsd_addr: str = _option(
        "",
        parse=_address(8125, optional=True),
        expected="host:port of a statsd server",
        metavar="HOST:PORT",
        help="Also send metrics to statsd.",
    )

    @property
    def http_host_port(self) -> tuple[str, int]:
        """``(host, port)`` of the HTTP API; host ``""`` means every interface, as in Dkron."""
        return split_host_port(self.http_addr, default_port=8080)

    @property
    def bind_host_port(self) -> tuple[str, int]:
        """``(host, port)`` of the cluster (Raft) listener."""
        return split_host_port(self.bind_addr, default_port=8946)


def _declared() -> dict[str, Option]:
    types, defaults = get_type_hints(Config), Config()
    options = {}
    for spec in fields(Config):
        key = spec.name.replace("_", "-")
        options[key] = Option(
            key=key,
            name=spec.name,
            type=types[spec.name],
            default=getattr(defaults, spec.name),
            **spec.metadata[_ABOUT],
        )
    return options


OPTIONS: Mapping[str, Option] = MappingProxyType(_declared())
"""Every option of a node by key, in ``Config``'s order: the one list the config file, the
``DKRON_*`` variables, the agent's flags and the extension's traits are read against."""


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
