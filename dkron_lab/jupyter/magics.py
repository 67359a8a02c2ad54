"""``%dkron`` and ``%%dkron``: drive a dkron-lab (or Dkron) cluster from a notebook.

A thin edge: each command parses its arguments (argparse; a mistake is a ``UsageError`` that shows
what to type), makes one or two calls on ``dkron_lab.Client`` and returns a value with a rich
display (``dkron_lab.jupyter.results``), so ``x = %dkron jobs`` keeps the data. Server errors
are the client's ``DkronError`` classes, shown as one line instead of a traceback.

::

    %load_ext dkron_lab
    %dkron                              # status of the node and its cluster
    %dkron jobs | members
    %dkron show|enable|disable|delete NAME
    %dkron run NAME [--wait]
    %dkron backfill NAME --from TIME --to TIME [--mode all|latest] [--max-parallel N] [--wait]
    %dkron executions NAME [--last 20] [--failed]
    %dkron logs NAME [--execution ID] [--follow]
    %dkron dashboard [--refresh 2]
    %dkron connect [URL [TOKEN]]        # no URL: back to finding the server by itself

    %%dkron job NAME --schedule SPEC [--tags k=v] [--timezone TZ] [--retries N]
    <shell command>                     # or a YAML/JSON job; or --notebook PATH, empty body

    %%dkron sql [var <<] [--out df|arrow|relation] [--max-rows N] [--timeout S]
    SELECT ...

Defaults are set with ``%config DkronMagics.<trait> = ...`` (``url``, ``token``, ``timeout``,
``default_timezone``, ``sql_output``, ``max_rows``, ``follow_interval``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
)
from traitlets import Bool, Enum, Float, Integer, Unicode, observe
from traitlets.config import Configurable

from dkron_lab.client import Client
from dkron_lab.errors import DkronError, ExecutionNotFound
from dkron_lab.jobfiles import looks_like_job
from dkron_lab.jupyter.results import Record, Table, Text

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = [
    "DkronMagics",
    "job_from_cell",
    "load_ipython_extension",
    "unload_ipython_extension",
]

JOB_COLUMNS = ("name", "schedule", "timezone", "status", "disabled", "next", "last_success",
               "last_error", "executor")  # fmt: skip
EXECUTION_COLUMNS = ("id", "started_at", "finished_at", "success", "node_name", "attempt",
                     "output")  # fmt: skip
MEMBER_COLUMNS = ("Name", "Addr", "Port", "statusText", "Tags")
SQL_OUTPUTS = ("df", "dataframe", "arrow", "relation")


class _Done(Exception):
    """argparse printed its help: nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises IPython's ``UsageError`` (with the usage line) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\nusage: {self.format_usage().removeprefix('usage: ').strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr)
        raise _Done


def _name_command(sub: Any, command: str, help: str) -> _Parser:
    parser: _Parser = sub.add_parser(command, help=help)
    parser.add_argument("name", help="the job's name")
    return parser


def line_parser() -> _Parser:
    """The arguments of ``%dkron`` (``%dkron --help`` prints them)."""
    parser = _Parser(prog="%dkron", description="Drive a dkron-lab cluster from a notebook.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("status", help="the node and its cluster (the default)")
    jobs = sub.add_parser("jobs", help="every job, with status and next run")
    jobs.add_argument("--search", metavar="TEXT", help="only names containing TEXT")
    jobs.add_argument("--status", choices=("success", "failed", "partially_failed", "untriggered"))
    state = jobs.add_mutually_exclusive_group()
    state.add_argument("--disabled", action="store_true", help="only disabled jobs")
    state.add_argument("--enabled", action="store_true", help="only enabled jobs")
    _name_command(sub, "show", "one job")
    run = _name_command(sub, "run", "run a job now")
    run.add_argument("--wait", action="store_true", help="wait and return its executions")
    backfill = _name_command(sub, "backfill", "run a job's past instants that did not run")
    backfill.add_argument("--from", dest="first", required=True, metavar="TIME", help="RFC 3339")
    backfill.add_argument("--to", dest="last", required=True, metavar="TIME", help="RFC 3339")
    backfill.add_argument("--mode", choices=("all", "latest"), default="all")
    backfill.add_argument("--max-parallel", type=int, default=4, metavar="N")
    backfill.add_argument("--wait", action="store_true", help="wait until it ends")
    _name_command(sub, "enable", "enable a job")
    _name_command(sub, "disable", "disable a job")
    _name_command(sub, "delete", "delete a job")
    executions = _name_command(sub, "executions", "a job's executions, newest first")
    executions.add_argument("--last", type=int, default=20, metavar="N", help="how many")
    executions.add_argument("--failed", action="store_true", help="only failed ones")
    logs = _name_command(sub, "logs", "the output of a job's newest (or given) execution")
    logs.add_argument("--execution", metavar="ID", help="this execution instead")
    logs.add_argument("--follow", action="store_true", help="print output until the run ends")
    sub.add_parser("members", help="the cluster's nodes")
    dashboard = sub.add_parser("dashboard", help="the web UI in the cell, through the kernel")
    dashboard.add_argument(
        "--refresh",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="the shortest time between two refreshes of the page shown",
    )
    connect = sub.add_parser("connect", help="talk to another server (no URL: find it again)")
    connect.add_argument("url", nargs="?", help="e.g. http://host:8080 or http://host:8888/dkron")
    connect.add_argument("token", nargs="?", help="API token (Jupyter token for Jupyter)")
    job = sub.add_parser(
        "job", help="%%%%dkron job (or a notebook job on one line)", add_help=False
    )
    job.add_argument("rest", nargs=argparse.REMAINDER)
    sql = sub.add_parser("sql", help="%%%%dkron sql: a cell magic", add_help=False)
    sql.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def cell_parser() -> _Parser:
    """The arguments of ``%%dkron``."""
    parser = _Parser(prog="%%dkron", description="Define a job, or query the history with SQL.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    job = sub.add_parser(
        "job",
        help="create or replace a job; the body is its command or spec",
        description="The cell body is the shell command (run by /bin/sh), or a whole job in "
        "YAML/JSON whose fields the options override; with --notebook it stays empty "
        "(or use the one-line %dkron job ... --notebook PATH).",
    )
    job.add_argument("name", help="the job's name")
    job.add_argument("--schedule", metavar="SPEC", help="'@every 1h', '0 30 2 * * *', ...")
    job.add_argument("--timezone", metavar="TZ", help="e.g. Europe/Paris")
    job.add_argument("--tags", action="append", default=[], metavar="K=V", help="target nodes")
    job.add_argument("--retries", type=int, metavar="N", help="retries after a failure")
    job.add_argument("--concurrency", choices=("allow", "forbid"))
    job.add_argument("--disabled", action="store_true", help="create it disabled")
    job.add_argument("--notebook", metavar="PATH", help="run this notebook (notebook executor)")
    job.add_argument("--parameters", metavar="JSON", help='notebook parameters: {"n": 3}')
    job.add_argument("--kernel", metavar="NAME", help="the notebook's kernel")
    sql = sub.add_parser("sql", help="read-only SQL over executions, jobs and members")
    sql.add_argument("--out", choices=SQL_OUTPUTS, help="DataFrame (default), Arrow or DuckDB")
    sql.add_argument("--max-rows", type=int, metavar="N")
    sql.add_argument("--timeout", type=float, metavar="SECONDS")
    return parser


# -- pure helpers -------------------------------------------------------------------------------


def _tags(pairs: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in (part.strip() for item in pairs for part in item.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tags takes key=value, e.g. --tags role=etl:1, not {pair!r}")
        tags[key.strip()] = value.strip()
    return tags


def _notebook_config(options: argparse.Namespace) -> dict[str, str]:
    # The node wants an absolute path; a relative one means the notebook's, beside this kernel.
    config = {"path": os.path.abspath(options.notebook)}
    if options.parameters:
        try:
            parameters = json.loads(options.parameters)
        except ValueError as exc:
            raise UsageError(f"--parameters is a JSON object, e.g. '{{\"n\": 3}}': {exc}") from None
        if not isinstance(parameters, dict):
            raise UsageError("--parameters is a JSON object, e.g. '{\"n\": 3}'")
        config["parameters"] = json.dumps(parameters)
    if options.kernel:
        config["kernel"] = options.kernel
    return config


def job_from_cell(
    options: argparse.Namespace, body: str, *, default_timezone: str = ""
) -> dict[str, Any]:
    """The job a ``%%dkron job`` cell defines: the body is a YAML/JSON job, or the shell command
    (run by ``/bin/sh``), or empty with ``--notebook``; options override the spec's fields."""
    spec = looks_like_job(body)
    if spec is not None and spec.get("name", options.name) != options.name:
        raise UsageError(f"the cell names job {options.name!r} but its body names {spec['name']!r}")
    job: dict[str, Any] = {**(spec or {}), "name": options.name}
    if options.notebook:
        if spec is None and body.strip():
            raise UsageError("with --notebook the cell body stays empty (or is a YAML job spec)")
        job |= {"executor": "notebook", "executor_config": _notebook_config(options)}
    elif spec is None:
        if not body.strip():
            raise UsageError(
                "the cell body is the shell command to run, e.g.\n"
                "%%dkron job hello --schedule '@every 1h'\necho hello"
            )
        job |= {"executor": "shell", "executor_config": {"command": body.strip(), "shell": "true"}}
    overrides = {
        "schedule": options.schedule,
        "timezone": options.timezone,
        "retries": options.retries,
        "concurrency": options.concurrency,
        "tags": _tags(options.tags) or None,
        "disabled": True if options.disabled else None,
    }
    job |= {key: value for key, value in overrides.items() if value is not None}
    if default_timezone and not job.get("timezone"):
        job["timezone"] = default_timezone
    if not job.get("schedule"):
        raise UsageError(
            "a job needs a schedule: add --schedule, e.g. --schedule '@every 1h' or "
            "--schedule '0 30 2 * * *' (seconds first, as in Dkron)"
        )
    return job


def _split_target(words: list[str]) -> tuple[str | None, list[str]]:
    """``sql x << --out arrow`` -> ``("x", ["sql", "--out", "arrow"])``."""
    if len(words) >= 2 and words[1].endswith("<<"):
        name, rest = words[1].removesuffix("<<"), words[2:]
    elif len(words) >= 3 and words[2] == "<<":
        name, rest = words[1], words[3:]
    else:
        return None, words
    if not name.isidentifier():
        raise UsageError(f"{name!r} is not a variable name: %%dkron sql result << ...")
    return name, [words[0], *rest]


def _short_error(error: DkronError) -> DkronError:
    """Show a server's error as one line in the notebook (IPython asks the exception)."""
    line = f"{type(error).__name__}: {error.message}"
    error._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    return error


# -- the magics --------------------------------------------------------------------------------


@magics_class
class DkronMagics(Magics, Configurable):
    """``%dkron`` / ``%%dkron``; ``%config DkronMagics`` lists the settings."""

    url = Unicode(
        "", config=True, help="Server URL; empty: found by itself (DKRON_LAB_URL, Jupyter, ...)."
    )
    token = Unicode("", config=True, help="API token for url (a Jupyter token for Jupyter).")
    timeout = Float(10.0, config=True, help="Seconds to wait for an answer.")
    default_timezone = Unicode("", config=True, help="Timezone of %%dkron job without one.")
    sql_output = Enum(
        ["df", "arrow", "relation"], "df", config=True, help="What %%dkron sql returns."
    )
    max_rows = Integer(None, allow_none=True, config=True, help="Row limit of %%dkron sql.")
    follow_interval = Float(1.0, config=True, help="Seconds between polls of logs --follow.")
    short_errors = Bool(True, config=True, help="Server errors as one line, not a traceback.")

    def __init__(self, shell: InteractiveShell) -> None:
        Configurable.__init__(self, config=shell.config)
        Magics.__init__(self, shell=shell)
        configurables: list[Any] = shell.configurables
        configurables.append(self)  # what makes %config DkronMagics.x = ... work
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The client the magics use (made on first use, again after %dkron connect)."""
        if self._client is None:
            self._client = Client(self.url or None, self.token or None, timeout=self.timeout)
        return self._client

    @observe("url", "token", "timeout")
    def _reconnect(self, change: Any) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def dkron(self, line: str = "", cell: str | None = None, local_ns: Any = None) -> Any:
        """Drive a dkron-lab cluster: ``%dkron --help``, ``%%dkron job --help``."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"cannot split {line!r}: {exc} (check the quotes)") from None
        try:
            if cell is None:
                return self._line(words)
            return self._cell(words, cell, local_ns)
        except _Done:
            return None
        except DkronError as exc:
            raise (_short_error(exc) if self.short_errors else exc) from None

    # -- line commands ---------------------------------------------------------------------

    def _line(self, words: list[str]) -> Any:
        if words[:1] == ["job"] and {"--notebook", "-h", "--help"} & set(words):
            return self._cell(words, "", None)  # a notebook job needs no body
        if words[:1] in (["job"], ["sql"]):
            raise UsageError(
                f"{words[0]} is a cell magic: write %%dkron {words[0]} ... on the first line of a "
                "cell, the body below (%%dkron --help); a notebook job fits on one line: "
                "%dkron job NAME --schedule SPEC --notebook PATH"
            )
        options = line_parser().parse_args(words or ["status"])
        command: Callable[[argparse.Namespace], Any] = getattr(self, f"_{options.command}")
        return command(options)

    def _status(self, options: argparse.Namespace) -> Record:
        info = self.client.info()
        try:
            leader = self.client.leader().get("Name", "")
        except DkronError:
            leader = ""
        raft = info.get("raft", {})
        return Record(
            {
                "url": self.client.url,
                "found by": self.client.connection.source,
                "node": info.get("agent", {}).get("name", ""),
                "version": info.get("agent", {}).get("version", ""),
                "leader": leader,
                "members": info.get("serf", {}).get("members", ""),
                "raft state": raft.get("state", ""),
                "raft term": raft.get("term", ""),
                "tags": info.get("tags", {}),
            },
            title="dkron-lab",
        )

    def _jobs(self, options: argparse.Namespace) -> Table:
        disabled = True if options.disabled else False if options.enabled else None
        found = self.client.jobs(q=options.search, status=options.status, disabled=disabled)
        return Table(found, JOB_COLUMNS, title="jobs")

    def _show(self, options: argparse.Namespace) -> Record:
        return Record(self.client.job(options.name), title=f"job {options.name}")

    def _run(self, options: argparse.Namespace) -> Record | Table:
        job = self.client.run_job(options.name, wait=options.wait)
        if not options.wait:
            return Record(job, title=f"job {options.name} (started)")
        newest = self.client.executions(options.name, start=0, end=50)
        group = newest[0]["group"] if newest else None
        run = [e for e in newest if e.get("group") == group]
        return Table(run, EXECUTION_COLUMNS, title=f"run of {options.name}")

    def _backfill(self, options: argparse.Namespace) -> Record:
        started = self.client.backfill(
            options.name, options.first, options.last, options.mode, options.max_parallel
        )
        progress = started
        while options.wait and (progress["state"] == "running" or progress["running"]):
            time.sleep(0.5)
            progress = self.client.get_backfill(started["id"])
        return Record(progress, title=f"backfill {started['id']} of {options.name}")

    def _enable(self, options: argparse.Namespace) -> Record:
        return Record(self.client.set_enabled(options.name, True), title=f"job {options.name}")

    def _disable(self, options: argparse.Namespace) -> Record:
        return Record(self.client.set_enabled(options.name, False), title=f"job {options.name}")

    def _delete(self, options: argparse.Namespace) -> Record:
        return Record(self.client.delete_job(options.name), title=f"deleted job {options.name}")

    def _executions(self, options: argparse.Namespace) -> Table:
        if options.last < 1:
            raise UsageError("--last takes a number of executions, 1 or more")
        found = self.client.executions(options.name, start=0, end=options.last)
        if options.failed:
            found = [e for e in found if not e.get("success") and not e.get("status")]
        return Table(found, EXECUTION_COLUMNS, title=f"executions of {options.name}")

    def _logs(self, options: argparse.Namespace) -> Text | None:
        if options.follow:
            self._follow(options.name)
            return None
        return Text(self._output(options.name, options.execution))

    def _output(self, job: str, execution: str | None) -> str:
        if execution is None:
            newest = self.client.executions(job, start=0, end=1)
            if not newest:
                return ""
            execution = str(newest[0]["id"])
        return str(self.client.execution(job, execution).get("output", ""))

    def _follow(self, job: str) -> None:
        """Print the output of the job's running execution as it grows, until it ends."""
        shown, execution = "", None
        try:
            running = self._running(job)
            while running is not None:
                execution = str(running["id"])
                shown = _print_new(running.get("output") or "", shown)
                time.sleep(self.follow_interval)
                running = self._running(job)
            _print_new(self._recorded_output(job, execution), shown)
        except KeyboardInterrupt:
            return

    def _recorded_output(self, job: str, execution: str | None, patience: float = 10.0) -> str:
        """The output once the history has the execution (it lands there just after the run)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self._output(job, execution)
            except ExecutionNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(min(self.follow_interval, 0.2))

    def _running(self, job: str) -> dict[str, Any] | None:
        return next((e for e in self.client.busy() if e.get("job_name") == job), None)

    def _members(self, options: argparse.Namespace) -> Table:
        return Table(self.client.members(), MEMBER_COLUMNS, title="members")

    def _dashboard(self, options: argparse.Namespace) -> Any:
        try:
            from dkron_lab.jupyter.widget import Dashboard
        except ImportError as exc:
            raise UsageError(
                f"the dashboard is not available here ({exc}); it needs anywidget and ipywidgets "
                "in the kernel's environment: pip install dkron-lab"
            ) from None
        return Dashboard(self.client, refresh=options.refresh)

    def _connect(self, options: argparse.Namespace) -> Record:
        self.url, self.token = options.url or "", options.token or ""
        return self._status(options)

    # -- cell commands ---------------------------------------------------------------------

    def _cell(self, words: list[str], body: str, local_ns: Mapping[str, Any] | None) -> Any:
        target, words = _split_target(words) if words[:1] == ["sql"] else (None, words)
        options = cell_parser().parse_args(words)
        if options.command == "job":
            job = job_from_cell(options, body, default_timezone=self.default_timezone)
            return Record(self.client.put_job(job), title=f"job {options.name}")
        result = self._sql(options, body)
        if target is None:
            return result
        assert self.shell is not None  # magics are always registered on a shell
        self.shell.user_ns[target] = result
        return None

    def _sql(self, options: argparse.Namespace, body: str) -> Any:
        if not body.strip():
            raise UsageError("the cell body is the query, e.g. SELECT * FROM executions LIMIT 10")
        max_rows = options.max_rows if options.max_rows is not None else self.max_rows
        table = self.client.sql(body, max_rows=max_rows, timeout=options.timeout)
        metadata = table.schema.metadata or {}
        if metadata.get(b"dkron.truncated") == b"true":
            print(
                f"only the first {table.num_rows} rows: raise --max-rows (or "
                "%config DkronMagics.max_rows) or aggregate in SQL",
                file=sys.stderr,
            )
        output = options.out or self.sql_output
        if output == "arrow":
            return table
        if output == "relation":
            # The kernel side: a DuckDB relation over the Arrow result the server sent (the
            # kernel never opens the server's DuckDB file).
            from dkron_lab.history.results import relation_from_arrow

            return relation_from_arrow(table)
        return table.to_pandas()


def _print_new(output: str, shown: str) -> str:
    """Print what ``output`` adds to ``shown`` (all of it when the tail was cut off)."""
    fresh = output[len(shown) :] if output.startswith(shown) else output
    if fresh:
        print(fresh, end="" if fresh.endswith("\n") else "\n", flush=True)
    return output


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the magics (``%load_ext dkron_lab``)."""
    ipython.register_magics(DkronMagics(ipython))


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Remove the magics and close their client (``%unload_ext dkron_lab``)."""
    manager = ipython.magics_manager
    magics = manager.registry.pop(DkronMagics.__name__, None)
    for kind in ("line", "cell"):
        manager.magics[kind].pop("dkron", None)
    if isinstance(magics, DkronMagics):
        magics.close()
        configurables: list[Any] = ipython.configurables
        if magics in configurables:
            configurables.remove(magics)
