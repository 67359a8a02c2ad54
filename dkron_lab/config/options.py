"""``Option``: how one option of a node is declared on its ``Config`` field (``option(...)``)
and what the config file, the ``DKRON_*`` variables, the agent's flags and the extension's
traits are all made from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from datetime import timedelta
from typing import Any, Literal

from dkron_lab.config.values import parse_size, show_size
from dkron_lab.model.units import format_duration

__all__ = ["ABOUT", "FlagStyle", "Option", "option"]

ABOUT = "dkron_lab.option"
"""The key of a ``Config`` field's metadata that holds its ``Option`` parts."""


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
        if self.parse is parse_size:
            return show_size(value)
        return "" if value is None or value in ("", (), {}) else str(value)


def option(
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
        return field(default_factory=factory, metadata={ABOUT: about})
    return field(default=default, metadata={ABOUT: about})
