"""The ``dkron-lab`` command: ``agent`` runs a node; ``jobs``/``executions``/``sql`` talk to one
over its REST API; ``keygen`` and ``version`` as in Dkron.

Only parsing and printing live here: the config is built by ``dkron_lab.config``, a node by
``dkron_lab.agent.run_agent`` (imported when ``agent`` runs, so client commands stay light),
and every request goes through ``dkron_lab.client.Client``.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import functools
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import click
from click.core import ParameterSource

from dkron_lab._version import __version__
from dkron_lab.client import DEFAULT_URL, Client, local_token, token_file
from dkron_lab.config import OPTIONS, Config, Option, resolve_config
from dkron_lab.errors import BadRequest, DkronError, NotFoundError, Unauthorized, ValidationError
from dkron_lab.jobfiles import read_jobs

__all__ = ["cli", "main"]

_F = TypeVar("_F", bound=Callable[..., Any])

_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


class ConfigError(click.ClickException):
    """A flag, variable or config file value of the wrong form: exit status 2, like a usage
    error."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """dkron-lab: a distributed cron, wire-compatible with Dkron's v1 REST API.

    Start a single-node server with `dkron-lab agent --server --bootstrap-expect 1`,
    then manage jobs with `dkron-lab jobs ...`.
    """


# agent

_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _flag(option: Option) -> _Decorator:
    """The ``dkron-lab agent`` flag of a config option, with its help and default from the
    option's declaration (``dkron_lab.config.OPTIONS``)."""
    name = option.flag_name or option.key
    text = option.help + (" Repeat for several." if option.flag == "many" else "")
    shown = option.shown
    if option.flag == "toggle":
        shown = "on" if option.default else "off"
    if shown:
        text += f" [default: {shown}]"
    if option.flag == "toggle":
        return click.option(f"--{name}/--no-{name}", default=None, help=text)
    if option.flag == "switch":
        return click.option(f"--{name}", is_flag=True, default=None, help=text)
    return click.option(
        f"--{name}", metavar=option.metavar, multiple=option.flag == "many", help=text
    )


_CONFIG_FILE = click.option(
    "--config",
    "config_file",
    metavar="PATH",
    type=click.Path(path_type=Path),
    help="Config file (YAML or JSON). [default: dkron.yml|yaml|json in "
    "/etc/dkron, ~/.dkron, ./config]",
)


def _agent_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every config option as a flag, in ``Config``'s order, then ``--config``."""
    flags: list[_Decorator] = [*map(_flag, OPTIONS.values()), _CONFIG_FILE]
    for flag in reversed(flags):
        command = flag(command)
    return command


@cli.command()
@_agent_options
@click.pass_context
def agent(ctx: click.Context, /, config_file: Path | None, **flags: Any) -> None:
    """Run a node (server or agent) until SIGTERM or SIGINT.

    Each flag may also come from the environment (DKRON_NODE_NAME, DKRON_BOOTSTRAP_EXPECT,
    DKRON_TAG=k=v,k2=v2, ...) or from the config file, whose keys are the flag names.
    A flag beats the environment, which beats the file. On SIGTERM the node stops
    scheduling, lets running jobs finish and exits 0; a second signal exits at once.
    """
    given = {
        name: value
        for name, value in flags.items()
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    try:
        loaded = resolve_config(given, env=os.environ, config_file=config_file)
    except ValidationError as exc:
        raise ConfigError(exc.message) from None
    _setup_logging(loaded.config.log_level)
    log = logging.getLogger("dkron_lab.cli")
    for warning in loaded.warnings:
        log.warning("%s", warning)
    log.info("config file: %s", loaded.file or "none")
    sys.exit(_run_agent(loaded.config))


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=_LOG_LEVELS[level],
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Nodes call each other every second; one line per call would drown the log.
    for chatty in ("httpx", "httpcore", "tornado.access"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, _LOG_LEVELS[level]))


def _run_agent(config: Config) -> int:
    from dkron_lab.agent import run_agent

    try:
        return asyncio.run(run_agent(config))
    except KeyboardInterrupt:
        return 130
    except (DkronError, OSError) as exc:
        logging.getLogger("dkron_lab.cli").error("cannot run the agent: %s", exc)
        return 1


# small commands


@cli.command()
def keygen() -> None:
    """Print a new random cluster key (16 bytes, base64) for --encrypt."""
    click.echo(base64.b64encode(secrets.token_bytes(16)).decode("ascii"))


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"dkron-lab {__version__}")
    click.echo("Dkron API v1 compatible")


# client commands


@dataclass(frozen=True, slots=True, kw_only=True)
class _Target:
    """The server a client command talks to, as its options name it."""

    address: str
    token: str | None
    data_dir: str | None
    tls_ca: str | None


_CLIENT_OPTIONS: list[_Decorator] = [
    click.option(
        "--address",
        envvar="DKRON_ADDRESS",
        default=DEFAULT_URL,
        show_default=True,
        metavar="URL",
        help="URL of a dkron-lab (or Dkron) server, http:// or https://. [env DKRON_ADDRESS]",
    ),
    click.option(
        "--token",
        envvar="DKRON_API_TOKEN",
        metavar="TOKEN",
        help="API token sent as a bearer token. [env DKRON_API_TOKEN; default: the one the "
        "server generated into <data-dir>/api-token, for a server on this host]",
    ),
    click.option(
        "--data-dir",
        envvar="DKRON_DATA_DIR",
        metavar="DIR",
        help="Data dir of the server, where its generated token is read from. "
        "[env DKRON_DATA_DIR; default: dkron.data]",
    ),
    click.option(
        "--tls-ca",
        envvar="DKRON_TLS_CA",
        metavar="PATH",
        help="PEM bundle of the CA that signed an https:// server's certificate. "
        "[env DKRON_TLS_CA; default: the system's CAs]",
    ),
]


def _client_options(command: _F) -> _F:
    """The options that name the server; the command gets them as one ``target``."""

    @functools.wraps(command)
    def run(
        *args: Any,
        address: str,
        token: str | None,
        data_dir: str | None,
        tls_ca: str | None,
        **kwargs: Any,
    ) -> Any:
        target = _Target(address=address, token=token, data_dir=data_dir, tls_ca=tls_ca)
        return command(*args, target=target, **kwargs)

    wrapped: Callable[..., Any] = run
    for option in reversed(_CLIENT_OPTIONS):
        wrapped = option(wrapped)
    return cast(_F, wrapped)


@contextmanager
def _client(target: _Target, timeout: float | None = 10.0) -> Iterator[Client]:
    """A client whose errors end the command with the server's message and exit status 1.

    Without ``--token`` it sends the token a server on this host generated into its data dir.
    """
    token = target.token or local_token(target.address, target.data_dir)
    try:
        with Client(target.address, token=token, timeout=timeout, tls_ca=target.tls_ca) as client:
            yield client
    except Unauthorized as exc:
        raise click.ClickException(f"{exc.message}\n{_token_hint(target)}") from None
    except DkronError as exc:
        raise click.ClickException(exc.message) from None


def _token_hint(target: _Target) -> str:
    where = token_file(target.data_dir).absolute()
    return (
        f"{target.address} wants an API token. A server started without --api-token keeps the "
        f"one it generated in <data-dir>/api-token on its host (looked for: {where}). Run this "
        "command from the directory the server was started in, or pass the server's "
        '--data-dir DIR, or give the token: --token "$(cat DIR/api-token)" or DKRON_API_TOKEN.'
    )


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@cli.group()
def jobs() -> None:
    """List, show, create, run, toggle and delete jobs."""


@jobs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@_client_options
def jobs_list(target: _Target, as_json: bool) -> None:
    """List every job: name, schedule, status, next run, last success and error."""
    with _client(target) as client:
        found = client.jobs()
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no jobs yet: create one with `dkron-lab jobs apply -f job.yaml`")
        return
    headers = ("NAME", "SCHEDULE", "STATUS", "NEXT", "LAST SUCCESS", "LAST ERROR", "DISABLED")
    rows = [
        (
            job["name"],
            job.get("schedule") or "-",
            job.get("status") or "untriggered",
            _short_time(job.get("next")),
            _short_time(job.get("last_success")),
            _short_time(job.get("last_error")),
            "yes" if job.get("disabled") else "no",
        )
        for job in found
    ]
    click.echo(_table(headers, rows))


@jobs.command("get")
@click.argument("name")
@_client_options
def jobs_get(target: _Target, name: str) -> None:
    """Print one job as JSON."""
    with _client(target) as client:
        _echo_json(client.job(name))


@jobs.command("apply")
@click.option(
    "-f",
    "--file",
    "source",
    type=click.File("r"),
    required=True,
    help="YAML or JSON file with one job or a list of jobs; - reads stdin.",
)
@_client_options
def jobs_apply(target: _Target, source: IO[str]) -> None:
    """Create or update the jobs in a file, in order (put parents first)."""
    definitions = _read_jobs(source)
    with _client(target) as client:
        for job in definitions:
            verb = "updated" if _exists(client, job["name"]) else "created"
            client.put_job(job)
            click.echo(f"{verb} job {job['name']}")


def _read_jobs(source: IO[str]) -> list[dict[str, Any]]:
    try:
        return read_jobs(source.read(), getattr(source, "name", "-"))
    except BadRequest as exc:
        raise click.ClickException(exc.message) from None


def _exists(client: Client, name: str) -> bool:
    try:
        client.job(name)
    except NotFoundError:
        return False
    return True


@jobs.command("run")
@click.argument("name")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the run to finish, print its executions and exit 1 if it failed.",
)
@_client_options
def jobs_run(target: _Target, name: str, wait: bool) -> None:
    """Run a job now, outside its schedule."""
    with _client(target, timeout=None if wait else 10.0) as client:
        if not wait:
            client.run_job(name)
            click.echo(f"started job {name}")
            return
        before = {execution.get("id") for execution in client.executions(name)}
        job = client.run_job(name, wait=True)
        fresh = _new_executions(client, name, before)
    for execution in fresh:
        outcome = "succeeded" if execution.get("success") else "failed"
        click.echo(f"job {name} {outcome} on {execution.get('node_name', '?')}")
        if execution.get("output"):
            click.echo(execution["output"].rstrip("\n"))
    if not fresh:
        click.echo(f"job {name} finished with status {job.get('status') or 'unknown'}")
    if job.get("status") != "success":
        sys.exit(1)


def _new_executions(
    client: Client, name: str, before: set[Any], patience: float = 5.0
) -> list[dict[str, Any]]:
    """The run's executions, oldest first. The history is written from the replicated log,
    so it may trail the job's counters by a moment: poll until the run shows up."""
    deadline = time.monotonic() + patience
    while True:
        fresh = [e for e in client.executions(name) if e.get("id") not in before]
        if fresh or time.monotonic() > deadline:
            newest = fresh[0].get("group") if fresh else None
            return [e for e in reversed(fresh) if e.get("group") == newest]
        time.sleep(0.1)


@jobs.command("toggle")
@click.argument("name")
@_client_options
def jobs_toggle(target: _Target, name: str) -> None:
    """Disable an enabled job, or enable a disabled one."""
    with _client(target) as client:
        job = client.toggle_job(name)
    click.echo(f"job {name} {'disabled' if job.get('disabled') else 'enabled'}")


@jobs.command("delete")
@click.argument("name")
@_client_options
def jobs_delete(target: _Target, name: str) -> None:
    """Delete a job (its children first: a job with dependents cannot go)."""
    with _client(target) as client:
        client.delete_job(name)
    click.echo(f"deleted job {name}")


@cli.command()
@click.argument("job")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many executions, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the executions as JSON.")
@_client_options
def executions(target: _Target, job: str, limit: int, as_json: bool) -> None:
    """List a job's executions, newest first."""
    with _client(target) as client:
        found = client.executions(job, output_size_limit=None if as_json else 200)[:limit]
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo(f"job {job} has not run yet")
        return
    headers = ("ID", "STARTED", "FINISHED", "NODE", "SUCCESS", "OUTPUT")
    rows = [
        (
            execution.get("id", ""),
            _short_time(execution.get("started_at")),
            _short_time(execution.get("finished_at")),
            execution.get("node_name", ""),
            "yes" if execution.get("success") else "no",
            _last_line(execution.get("output", "")),
        )
        for execution in found
    ]
    click.echo(_table(headers, rows))


@cli.command("sql")
@click.argument("query", required=False)
@click.option(
    "-f",
    "--file",
    "source",
    type=click.File("r"),
    help="Read the query from a file instead; - reads stdin.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(0, 1_000_000),
    help="Return at most this many rows. [default: the server's, 100000]",
)
@click.option(
    "--timeout",
    "query_timeout",
    type=click.FloatRange(0, 300, min_open=True),
    help="Stop the query after this many seconds. [default: the server's, 30]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON answer.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@_client_options
def sql(
    target: _Target,
    query: str | None,
    source: IO[str] | None,
    max_rows: int | None,
    query_timeout: float | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Run one read-only SELECT over the history (views executions, jobs, members).

    \b
    dkron-lab sql "SELECT job_name, avg(success::int) AS success_rate
                   FROM executions GROUP BY job_name ORDER BY 2"

    docs/sql.md lists every column and ten useful queries.
    """
    if (query is None) == (source is None):
        raise click.UsageError('give the query as an argument or with -f FILE, e.g. "SELECT 1"')
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    text = source.read() if source is not None else query or ""
    with _client(target, timeout=(query_timeout or 30.0) + 30.0) as client:
        answer = client.sql(text, max_rows=max_rows, timeout=query_timeout, format="json")
    if as_json:
        _echo_json(answer)
    elif as_csv:
        _echo_csv(answer)
    else:
        _echo_result(answer)
    if answer.get("truncated"):
        click.echo(
            f"(truncated at {answer.get('row_count')} rows: aggregate in SQL, or raise --max-rows)",
            err=True,
        )


def _cell(value: Any, width: int = 60) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def _echo_result(answer: Any) -> None:
    headers = tuple(column["name"] for column in answer["columns"])
    rows = [tuple(_cell(value) for value in row) for row in answer["rows"]]
    if headers:
        click.echo(_table(headers, rows))
    count = answer.get("row_count", len(rows))
    click.echo(f"({count} row{'' if count == 1 else 's'})")


def _echo_csv(answer: Any) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([column["name"] for column in answer["columns"]])
    for row in answer["rows"]:
        writer.writerow(
            ["" if v is None else v if isinstance(v, str | int | float) else json.dumps(v)
             for v in row]
        )  # fmt: skip


@cli.command()
@_client_options
def leave(target: _Target) -> None:
    """Make the node at --address leave the cluster: it stops gracefully (running jobs finish)."""
    with _client(target) as client:
        client.leave()
    click.echo(f"{target.address} is leaving")


@cli.group()
def raft() -> None:
    """Inspect and change the Raft group of servers."""


@raft.command("list-peers")
@click.option("--json", "as_json", is_flag=True, help="Print the peers as JSON.")
@_client_options
def raft_list_peers(target: _Target, as_json: bool) -> None:
    """List the Raft voters as the server at --address sees them."""
    with _client(target) as client:
        peers = client.raft_peers()
    if as_json:
        _echo_json(peers)
        return
    headers = ("NODE", "ADDRESS", "STATE", "REACHABLE")
    rows = [
        (
            peer["name"] or "-",
            peer["address"],
            "leader" if peer["leader"] else "follower",
            "self" if peer["role"] == "self" else "yes" if peer["reachable"] else "no",
        )
        for peer in peers
    ]
    click.echo(_table(headers, rows))


@raft.command("add-peer")
@click.option("--peer-addr", required=True, help="The new server's --bind-addr, host:port.")
@_client_options
def raft_add_peer(target: _Target, peer_addr: str) -> None:
    """Add a started server (its --join naming the current servers) to the Raft group."""
    with _client(target) as client:
        client.add_raft_peer(peer_addr)
    click.echo(f"added {peer_addr} to the Raft group")


@raft.command("remove-peer")
@click.option("--peer-id", required=True, help="The server to remove: node name or host:port.")
@_client_options
def raft_remove_peer(target: _Target, peer_id: str) -> None:
    """Remove a server from the Raft group (stop that server afterwards)."""
    with _client(target) as client:
        client.remove_raft_peer(peer_id)
    click.echo(f"removed {peer_id} from the Raft group; stop it now")


# formatting

_FRACTION = re.compile(r"\.\d+")


def _short_time(value: Any) -> str:
    if not value or str(value).startswith("0001-01-01"):
        return "-"
    return _FRACTION.sub("", str(value)).replace("T", " ")


def _last_line(text: str, width: int = 40) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    line = lines[-1].strip() if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(headers: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> str:
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in (headers, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)


def main() -> None:
    """The ``dkron-lab`` console script."""
    cli()


if __name__ == "__main__":
    main()
