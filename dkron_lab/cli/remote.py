"""What every client command shares: the options that name a server (``--address``,
``--token``, ``--data-dir``, ``--tls-ca``), a ``Client`` whose errors end the command with the
server's message, and plain-text tables.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from dkron_lab.client import DEFAULT_URL, Client, local_token, token_file
from dkron_lab.errors import DkronError, Unauthorized

__all__ = ["Target", "client_options", "connect", "echo_json", "last_line", "short_time", "table"]

_F = TypeVar("_F", bound=Callable[..., Any])

_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
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


def client_options(command: _F) -> _F:
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
        target = Target(address=address, token=token, data_dir=data_dir, tls_ca=tls_ca)
        return command(*args, target=target, **kwargs)

    wrapped: Callable[..., Any] = run
    for option in reversed(_CLIENT_OPTIONS):
        wrapped = option(wrapped)
    return cast(_F, wrapped)


@contextmanager
def connect(target: Target, timeout: float | None = 10.0) -> Iterator[Client]:
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


def _token_hint(target: Target) -> str:
    where = token_file(target.data_dir).absolute()
    return (
        f"{target.address} wants an API token. A server started without --api-token keeps the "
        f"one it generated in <data-dir>/api-token on its host (looked for: {where}). Run this "
        "command from the directory the server was started in, or pass the server's "
        '--data-dir DIR, or give the token: --token "$(cat DIR/api-token)" or DKRON_API_TOKEN.'
    )


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


_FRACTION = re.compile(r"\.\d+")


def short_time(value: Any) -> str:
    if not value or str(value).startswith("0001-01-01"):
        return "-"
    return _FRACTION.sub("", str(value)).replace("T", " ")


def last_line(text: str, width: int = 40) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    line = lines[-1].strip() if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def table(headers: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> str:
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in (headers, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)
