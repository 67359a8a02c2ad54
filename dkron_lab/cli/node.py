"""``dkron-lab agent`` (every config option as a flag, declared once in ``config.OPTIONS``),
``keygen`` and ``version``: the commands that run or prepare a node, not talk to one.

``agent`` builds the config with ``dkron_lab.config.resolve_config`` and runs
``dkron_lab.agent.run_agent``, imported only when it runs so the client commands stay light.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from dkron_lab._version import __version__
from dkron_lab.config import OPTIONS, Config, Option, resolve_config
from dkron_lab.errors import DkronError, ValidationError

__all__ = ["ConfigError", "agent", "keygen", "version"]

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


@click.command()
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


@click.command()
def keygen() -> None:
    """Print a new random cluster key (16 bytes, base64) for --encrypt."""
    click.echo(base64.b64encode(secrets.token_bytes(16)).decode("ascii"))


@click.command()
def version() -> None:
    """Print the version."""
    click.echo(f"dkron-lab {__version__}")
    click.echo("Dkron API v1 compatible")
