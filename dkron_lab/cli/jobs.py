"""``dkron-lab jobs ...`` and ``dkron-lab executions``: jobs and their runs over the REST API."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import click

from dkron_lab.cli.remote import (
    Target,
    client_options,
    connect,
    echo_json,
    last_line,
    short_time,
    table,
)
from dkron_lab.client import Client
from dkron_lab.errors import BadRequest, NotFoundError
from dkron_lab.jobfiles import read_jobs

__all__ = ["executions", "jobs"]


@click.group()
def jobs() -> None:
    """List, show, create, run, toggle and delete jobs."""


@jobs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@client_options
def jobs_list(target: Target, as_json: bool) -> None:
    """List every job: name, schedule, status, health, next run, last success and error."""
    with connect(target) as client:
        found = client.jobs()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no jobs yet: create one with `dkron-lab jobs apply -f job.yaml`")
        return
    headers = (
        "NAME", "SCHEDULE", "STATUS", "HEALTH", "NEXT", "LAST SUCCESS", "LAST ERROR", "DISABLED"
    )  # fmt: skip
    rows = [
        (
            job["name"],
            job.get("schedule") or "-",
            job.get("status") or "untriggered",
            job.get("health") or "-",  # a Dkron server has none
            short_time(job.get("next")),
            short_time(job.get("last_success")),
            short_time(job.get("last_error")),
            "yes" if job.get("disabled") else "no",
        )
        for job in found
    ]
    click.echo(table(headers, rows))


@jobs.command("get")
@click.argument("name")
@client_options
def jobs_get(target: Target, name: str) -> None:
    """Print one job as JSON."""
    with connect(target) as client:
        echo_json(client.job(name))


@jobs.command("apply")
@click.option(
    "-f",
    "--file",
    "source",
    type=click.File("r"),
    required=True,
    help="YAML or JSON file with one job or a list of jobs; - reads stdin.",
)
@client_options
def jobs_apply(target: Target, source: IO[str]) -> None:
    """Create or update the jobs in a file, in order (put parents first)."""
    definitions = _read_jobs(source)
    with connect(target) as client:
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
@client_options
def jobs_run(target: Target, name: str, wait: bool) -> None:
    """Run a job now, outside its schedule."""
    with connect(target, timeout=None if wait else 10.0) as client:
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


@jobs.command("ping")
@click.argument("name")
@click.option("--start", "kind", flag_value="start", help="The work began (not that it ended).")
@click.option("--fail", "kind", flag_value="fail", help="The work failed.")
@click.option(
    "-m", "--message", default="", help="The run's output, e.g. the tail of a log ('-': stdin)."
)
@client_options
def jobs_ping(target: Target, name: str, kind: str | None, message: str) -> None:
    """Ping the heartbeat check NAME (executor: heartbeat), e.g. at the end of a crontab line:
    `backup.sh && dkron-lab jobs ping backup || dkron-lab jobs ping backup --fail`."""
    body = sys.stdin.read() if message == "-" else message
    with connect(target) as client:
        answer = client.ping(name, kind or "", body)
    if kind == "start":
        click.echo(f"job {name}: start noted")
    else:
        click.echo(f"job {name}: ping recorded for {answer.get('scheduled_at') or 'no instant'}")


@jobs.command("backfill")
@click.argument("name")
@click.option("--from", "first", required=True, help="The first instant, RFC 3339.")
@click.option("--to", "last", required=True, help="The last instant, RFC 3339 (not future).")
@click.option("--mode", type=click.Choice(["all", "latest"]), default="all", show_default=True)
@click.option("--max-parallel", type=click.IntRange(1, 100), default=4, show_default=True)
@click.option(
    "--wait", is_flag=True, help="Show its progress until it ends; exit 1 if a run failed."
)
@client_options
def jobs_backfill(
    target: Target, name: str, first: str, last: str, mode: str, max_parallel: int, wait: bool
) -> None:
    """Run the past instants of NAME's schedule that did not run, from --from to --to."""
    with connect(target) as client:
        started = client.backfill(name, first, last, mode=mode, max_parallel=max_parallel)
        click.echo(f"backfill {started['id']} of job {name}: {started['total']} instant(s)")
        progress = started
        while wait and (progress["state"] == "running" or progress["running"]):
            time.sleep(1.0)
            progress = client.get_backfill(started["id"])
            click.echo(_progress(progress), err=True)
    if wait:
        click.echo(_progress(progress))
        if progress["failed"]:
            sys.exit(1)


def _progress(backfill: dict[str, Any]) -> str:
    return (
        f"{backfill['state']}: {backfill['done']} done, {backfill['failed']} failed, "
        f"{backfill['running']} running, {backfill['lost']} lost, of {backfill['total']}"
    )


@jobs.command("toggle")
@click.argument("name")
@client_options
def jobs_toggle(target: Target, name: str) -> None:
    """Disable an enabled job, or enable a disabled one."""
    with connect(target) as client:
        job = client.toggle_job(name)
    click.echo(f"job {name} {'disabled' if job.get('disabled') else 'enabled'}")


@jobs.command("delete")
@click.argument("name")
@client_options
def jobs_delete(target: Target, name: str) -> None:
    """Delete a job (its children first: a job with dependents cannot go)."""
    with connect(target) as client:
        client.delete_job(name)
    click.echo(f"deleted job {name}")


@click.command()
@click.argument("job")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many executions, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the executions as JSON.")
@client_options
def executions(target: Target, job: str, limit: int, as_json: bool) -> None:
    """List a job's executions, newest first."""
    with connect(target) as client:
        found = client.executions(job, output_size_limit=None if as_json else 200)[:limit]
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo(f"job {job} has not run yet")
        return
    headers = ("ID", "STARTED", "FINISHED", "NODE", "SUCCESS", "OUTPUT")
    rows = [
        (
            execution.get("id", ""),
            short_time(execution.get("started_at")),
            short_time(execution.get("finished_at")),
            execution.get("node_name", ""),
            "yes" if execution.get("success") else "no",
            last_line(execution.get("output", "")),
        )
        for execution in found
    ]
    click.echo(table(headers, rows))
