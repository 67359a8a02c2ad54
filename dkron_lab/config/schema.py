"""``Config``: every option of a node declared once, on its field (type, default, parser, the form
it expects, help, flag style), and ``OPTIONS`` read from those fields."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import get_type_hints

from dkron_lab.config.options import ABOUT, Option, option
from dkron_lab.config.values import (
    FSYNC_MODES,
    LOG_LEVELS,
    NOTIFY_ON,
    parse_address,
    parse_boolean,
    parse_catchup,
    parse_duration,
    parse_fsync,
    parse_gossip_key,
    parse_limits,
    parse_log_level,
    parse_name,
    parse_notify_on,
    parse_optional_path,
    parse_path,
    parse_retention,
    parse_size,
    parse_strings,
    parse_tags,
    parse_text,
    parse_whole,
    split_host_port,
)

__all__ = ["OPTIONS", "Config"]

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

    server: bool = option(
        False,
        parse=parse_boolean,
        expected=_BOOL,
        flag="switch",
        help="Run as a server: a Raft voter that holds the job state, serves the REST API and "
        "schedules when leader.",
    )
    bootstrap_expect: int = option(
        0,
        parse=parse_whole(0),
        expected="a whole number >= 0, e.g. 1 for a single server",
        metavar="N",
        help="Servers to wait for before bootstrapping the cluster; 1 starts a single-node "
        "cluster.",
    )
    node_name: str = option(
        factory=socket.gethostname,
        parse=parse_name,
        expected="a non-empty name, e.g. node1",
        metavar="NAME",
        shown_default="the host name",
        help="Unique name of this node; also its Raft id.",
    )
    data_dir: Path = option(
        Path("dkron.data"),
        parse=parse_path,
        expected="a directory path, e.g. /var/lib/dkron-lab",
        metavar="DIR",
        help="Directory for the Raft log, snapshots and the DuckDB history.",
    )
    http_addr: str = option(
        "127.0.0.1:8080",
        parse=parse_address(8080),
        expected="host:port or :port, e.g. 127.0.0.1:8080",
        metavar="HOST:PORT",
        help="Address of the REST API and UI (servers); ':8080' listens on every interface.",
    )
    bind_addr: str = option(
        "127.0.0.1:8946",
        parse=parse_address(8946),
        expected=_ADDRESS,
        metavar="HOST:PORT",
        help="Address of the cluster (Raft) listener.",
    )
    advertise_addr: str = option(
        "",
        parse=parse_address(8946, optional=True),
        expected=_ADDRESS + ", or empty",
        metavar="HOST:PORT",
        shown_default="the bind address",
        help="Cluster address other nodes use to reach this one, behind NAT.",
    )
    join: tuple[str, ...] = option(
        (),
        parse=parse_strings,
        expected=_ADDRESSES,
        metavar="HOST:PORT",
        flag="many",
        help="Cluster (Raft) addresses of the servers to join at start; a failed join only warns.",
    )
    retry_join: tuple[str, ...] = option(
        (),
        parse=parse_strings,
        expected=_ADDRESSES,
        metavar="HOST:PORT",
        flag="many",
        help="Like join, but retried until it succeeds.",
    )
    retry_max: int = option(
        0,
        parse=parse_whole(0),
        expected="a whole number >= 0 (0 retries for ever)",
        metavar="N",
        help="Give up retry-join after N attempts; 0 retries for ever.",
    )
    retry_interval: timedelta = option(
        timedelta(seconds=30),
        parse=parse_duration,
        expected=_DURATION,
        metavar="DURATION",
        help="Wait between retry-join attempts, a Go duration.",
    )
    tags: dict[str, str] = option(
        factory=dict,
        parse=parse_tags,
        expected="a map, or key=value pairs: e.g. role=web,dc=east",
        metavar="KEY=VALUE",
        flag="many",
        flag_name="tag",
        help="Node tags for job targeting, e.g. role=web; not merged across sources.",
    )
    datacenter: str = option(
        "dc1",
        parse=parse_name,
        expected="a non-empty name, e.g. dc1",
        metavar="NAME",
        help="Datacenter of this node (tag dc).",
    )
    region: str = option(
        "global",
        parse=parse_name,
        expected="a non-empty name, e.g. global",
        metavar="NAME",
        help="Region of this node; jobs target nodes of the leader's region.",
    )
    encrypt: str = option(
        "",
        parse=parse_gossip_key,
        expected="base64 of 16, 24 or 32 bytes, as `dkron-lab keygen` prints",
        metavar="KEY",
        shown_default="none; a lone server makes one into <data-dir>/cluster-key",
        help="Cluster key, base64 of 16, 24 or 32 bytes (see `dkron-lab keygen`); the same on "
        "every node.",
    )
    raft_multiplier: int = option(
        1,
        parse=parse_whole(1, 10),
        expected="a whole number from 1 to 10",
        metavar="N",
        help="Scale Raft timeouts, 1 (fast, LAN) to 10.",
    )
    ui: bool = option(
        True,
        parse=parse_boolean,
        expected=_BOOL,
        flag="toggle",
        help="Serve the web UI at /ui (servers).",
    )
    log_level: str = option(
        "info",
        parse=parse_log_level,
        expected="one of " + ", ".join(LOG_LEVELS),
        metavar="LEVEL",
        help="One of " + "|".join(LOG_LEVELS) + ".",
    )
    api_token: str = option(
        "",
        parse=parse_text,
        expected="a string",
        metavar="TOKEN",
        shown_default="generated on first start into <data-dir>/api-token",
        help="The admin bearer token of the REST API (env DKRON_API_TOKEN).",
    )
    # security (docs/security.md)
    no_auth: bool = option(
        False,
        parse=parse_boolean,
        expected=_BOOL,
        flag="switch",
        help="Serve the REST API without any token, as Dkron OSS does: anyone who can reach the "
        "port can run commands as this user. Off loopback it also needs --allow-insecure-remote "
        "or TLS.",
    )
    api_tokens_file: Path | None = option(
        None,
        parse=parse_optional_path,
        expected="a path to a YAML tokens file (docs/security.md)",
        metavar="PATH",
        help="YAML file of named tokens with roles admin, operator or viewer (docs/security.md).",
    )
    allow_insecure_remote: bool = option(
        False,
        parse=parse_boolean,
        expected=_BOOL,
        flag="switch",
        help="Allow --no-auth on an address beyond loopback without TLS.",
    )
    public_badges: bool = option(
        False,
        parse=parse_boolean,
        expected=_BOOL,
        flag="switch",
        help="Serve the status badges (GET /v1/jobs/<job>/badge.svg|json and "
        "/v1/badges/tag/<key>/<value>.svg|json) without a token, for READMEs; nothing else "
        "opens. They show job names and statuses to anyone who can reach the port.",
    )
    cors_origin: tuple[str, ...] = option(
        (),
        parse=parse_strings,
        expected="a list of origins, e.g. https://dash.example.com",
        metavar="ORIGIN",
        flag="many",
        shown_default="none, no cross-origin access",
        help="Origins allowed to call the API from a browser (CORS), e.g. "
        "https://dash.example.com.",
    )
    allowed_host: tuple[str, ...] = option(
        (),
        parse=parse_strings,
        expected="a list of host names, e.g. dkron.example.com",
        metavar="HOST",
        flag="many",
        shown_default="loopback names, this host's names, IP addresses",
        help="Host names also accepted in the Host header (DNS rebinding guard); * turns the "
        "check off.",
    )
    tls_cert: Path | None = option(
        None,
        parse=parse_optional_path,
        expected="a path to a PEM certificate (chain)",
        metavar="PATH",
        help="PEM certificate: serve the API over HTTPS.",
    )
    tls_key: Path | None = option(
        None,
        parse=parse_optional_path,
        expected="a path to the certificate's PEM private key",
        metavar="PATH",
        help="PEM private key of --tls-cert.",
    )
    tls_ca: Path | None = option(
        None,
        parse=parse_optional_path,
        expected="a path to the PEM CA bundle that signed the nodes' certs",
        metavar="PATH",
        help="PEM CA bundle that other nodes' certificates are checked against.",
    )
    # durability and resource limits
    fsync: str = option(
        "batch",
        parse=parse_fsync,
        expected="one of " + ", ".join(FSYNC_MODES),
        metavar="MODE",
        help="When writes reach the disk before they are acknowledged: always (each write), "
        "batch (one fsync per group of writes) or never (a power cut may lose acknowledged "
        "writes).",
    )
    sql_memory_limit: int = option(
        1024**3,
        parse=parse_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Memory one /v1/sql query may use, e.g. 1GB.",
    )
    sql_temp_limit: int = option(
        1024**3,
        parse=parse_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Disk a /v1/sql query may spill to.",
    )
    sql_max_bytes: int = option(
        64 * 1024**2,
        parse=parse_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Largest /v1/sql response body.",
    )
    sql_max_queries: int = option(
        2,
        parse=parse_whole(1),
        expected="a whole number >= 1",
        metavar="N",
        help="/v1/sql queries run at once; more wait their turn.",
    )
    max_body_size: int = option(
        8 * 1024**2,
        parse=parse_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Largest request body accepted, e.g. 8MB.",
    )
    output_limit: int = option(
        256_000,
        parse=parse_size,
        expected=_SIZE,
        metavar="SIZE",
        help="Output kept per execution in the history (the tail), e.g. 256KB.",
    )
    history_retention: timedelta | None = option(
        None,
        parse=parse_retention,
        expected=_DURATION + "; 0 or empty keeps every execution",
        metavar="DURATION",
        shown_default="keep all",
        help="Delete executions older than this, e.g. 720h; 0 keeps all.",
    )
    catchup: str = option(
        "once",
        parse=parse_catchup,
        expected="one of skip, once or all (see docs/schedules.md)",
        metavar="POLICY",
        help="What the leader does with fires missed while there was none (after a failover or "
        "a restart), for jobs that set no catchup: skip (as Dkron), once (run the latest) or "
        "all (run each). Skipped fires are recorded.",
    )
    catchup_window: timedelta = option(
        timedelta(hours=1),
        parse=parse_duration,
        expected=_DURATION + "; 0 catches up nothing",
        metavar="DURATION",
        help="Catch up only fires missed this recently, a Go duration; older ones are recorded "
        "as skipped.",
    )
    # monitoring (docs/monitoring.md)
    max_lateness: timedelta = option(
        timedelta(minutes=1),
        parse=parse_duration,
        expected=_DURATION + "; 0 checks nothing",
        metavar="DURATION",
        help="For jobs that set no max_lateness: a fire not started this long after its instant "
        "makes the job late (a heartbeat check's grace), a Go duration.",
    )
    max_duration: timedelta = option(
        timedelta(0),
        parse=parse_duration,
        expected=_DURATION + "; 0 checks nothing",
        metavar="DURATION",
        shown_default="no limit",
        help="For jobs that set no max_duration: a run going on longer makes the job overdue "
        "(and is killed if the job says on_overdue: kill), a Go duration.",
    )
    # concurrency (docs/jobs.md)
    executor_concurrency: int = option(
        0,
        parse=parse_whole(0),
        expected=_NO_LIMIT,
        metavar="N",
        shown_default="0, no limit",
        help="Run at most N executions at once on this node; the rest queue (shown in /v1/busy).",
    )
    executor_limits: dict[str, int] = option(
        factory=dict,
        parse=parse_limits,
        expected="executor=N pairs, e.g. shell=4,http=16",
        metavar="EXECUTOR=N,...",
        help="At most N executions at once per executor on this node, e.g. shell=4,http=16.",
    )
    concurrency_limit: int = option(
        0,
        parse=parse_whole(0),
        expected=_NO_LIMIT,
        metavar="N",
        shown_default="0, no limit",
        help="Cluster-wide: at most N executions running at once; the leader queues the rest "
        "in order.",
    )
    concurrency_groups: dict[str, int] = option(
        factory=dict,
        parse=parse_limits,
        expected="group=N pairs, e.g. etl=2,reports=1",
        metavar="GROUP=N,...",
        help="Cluster-wide limits per job concurrency_group, e.g. etl=2,reports=1.",
    )
    # notifications (docs/notifications.md), Dkron's names
    notify_on: str = option(
        "always",
        parse=parse_notify_on,
        expected="one of " + ", ".join(NOTIFY_ON),
        metavar="WHEN",
        help="When post-run notifications go out: always (as Dkron), failure, recovery (a "
        "failure and the first success after one) or never; a job's metadata notify_on "
        "overrides it.",
    )
    webhook_endpoint: str = option(
        "", parse=parse_text, expected=_URL, metavar="URL", help="POST here after each run."
    )
    webhook_payload: str = option(
        "",
        parse=parse_text,
        expected="a Go-style template, e.g. {{.JobName}} {{.Success}}",
        metavar="TEMPLATE",
        help="Body template of the post-run webhook.",
    )
    webhook_headers: tuple[str, ...] = option(
        (),
        parse=parse_strings,
        expected=_HEADERS,
        metavar="'NAME: VALUE'",
        flag="many",
        help="Headers of the post-run webhook.",
    )
    pre_webhook_endpoint: str = option(
        "", parse=parse_text, expected=_URL, metavar="URL", help="POST here as each run starts."
    )
    pre_webhook_payload: str = option(
        "",
        parse=parse_text,
        expected="a Go-style template, e.g. {{.JobName}}",
        metavar="TEMPLATE",
        help="Body template of the pre-run webhook.",
    )
    pre_webhook_headers: tuple[str, ...] = option(
        (),
        parse=parse_strings,
        expected=_HEADERS,
        metavar="'NAME: VALUE'",
        flag="many",
        help="Headers of the pre-run webhook.",
    )
    mail_host: str = option(
        "",
        parse=parse_text,
        expected="a host name, e.g. smtp.example.com",
        metavar="HOST",
        help="SMTP server for run reports by email.",
    )
    mail_port: int = option(
        25,
        parse=parse_whole(1, 65535),
        expected="a port number, e.g. 25 or 587",
        metavar="PORT",
        help="SMTP port.",
    )
    mail_username: str = option(
        "", parse=parse_text, expected="a string", metavar="USER", help="SMTP user name."
    )
    mail_password: str = option(
        "", parse=parse_text, expected="a string", metavar="PASSWORD", help="SMTP password."
    )
    mail_from: str = option(
        "",
        parse=parse_text,
        expected="an email address, e.g. dkron@example.com",
        metavar="ADDRESS",
        help="Sender of run reports.",
    )
    mail_payload: str = option(
        "",
        parse=parse_text,
        expected="a Go-style template for the mail body",
        metavar="TEMPLATE",
        help="Body template of run reports.",
    )
    mail_subject_prefix: str = option(
        "[Dkron]",
        parse=parse_text,
        expected="a string, e.g. [Dkron]",
        metavar="TEXT",
        help="Subject prefix.",
    )
    # metrics (docs/metrics.md)
    enable_prometheus: bool = option(
        False,
        parse=parse_boolean,
        expected=_BOOL,
        flag="toggle",
        help="Serve Prometheus metrics at /metrics.",
    )
    statsd_addr: str = option(
        "",
        parse=parse_address(8125, optional=True),
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
            **spec.metadata[ABOUT],
        )
    return options


OPTIONS: Mapping[str, Option] = MappingProxyType(_declared())
"""Every option of a node by key, in ``Config``'s order: the one list the config file, the
``DKRON_*`` variables, the agent's flags and the extension's traits are read against."""
