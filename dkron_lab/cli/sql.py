"""``dkron-lab sql``: one read-only query over the history, printed as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from typing import IO, Any

import click

from dkron_lab.cli.remote import Target, client_options, connect, echo_json, table

__all__ = ["sql"]


@click.command("sql")
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
@client_options
def sql(
    target: Target,
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
    with connect(target, timeout=(query_timeout or 30.0) + 30.0) as client:
        answer = client.sql(text, max_rows=max_rows, timeout=query_timeout, format="json")
    if as_json:
        echo_json(answer)
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
        click.echo(table(headers, rows))
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
