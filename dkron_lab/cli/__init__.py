"""The ``dkron-lab`` command: ``agent`` runs a node; ``jobs``/``executions``/``sql`` talk to one
over its REST API; ``keygen`` and ``version`` as in Dkron.

Only parsing and printing live here: the config is built by ``dkron_lab.config``, a node by
``dkron_lab.agent.run_agent`` (imported when ``agent`` runs, so client commands stay light),
and every request goes through ``dkron_lab.client.Client``.

The commands live by what they do: ``node`` (agent, keygen, version), ``jobs`` (jobs and
executions), ``sql``, ``cluster`` (leave, raft); ``remote`` holds what the client commands share.
"""

from __future__ import annotations

import click

from dkron_lab.cli.cluster import leave, raft
from dkron_lab.cli.jobs import executions, jobs
from dkron_lab.cli.node import agent, keygen, version
from dkron_lab.cli.sql import sql

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """dkron-lab: a distributed cron, wire-compatible with Dkron's v1 REST API.

    Start a single-node server with `dkron-lab agent --server --bootstrap-expect 1`,
    then manage jobs with `dkron-lab jobs ...`.
    """


for _command in (agent, keygen, version, jobs, executions, sql, leave, raft):
    cli.add_command(_command)


def main() -> None:
    """The ``dkron-lab`` console script."""
    cli()
