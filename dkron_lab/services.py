"""What every service of a node shares, built once by the composition root (``node.py``).

A service is a class in its own module (``leader``, ``runs``, ``followups``, ``outcomes``,
``roster``, ``peering``, ``recorder``) that takes ``Shared`` and the other services it calls,
and subscribes to the state events it needs; each module's docstring says what it owns and
what it may call. Nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from dkron_lab.clock import Clock
from dkron_lab.config import Config
from dkron_lab.state.commands import Command
from dkron_lab.state.machine import JobState

__all__ = ["Shared", "Submit"]


class Submit(Protocol):
    def __call__(self, cmd: Command, *, fenced: bool = False) -> Awaitable[dict[str, Any]]:
        """Replicate ``cmd`` (encoded here, once); its result, or the ``DkronError`` the state
        machine raised.
        ``fenced``: answered only by the leader of the term it was made in (claims)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Shared:
    """The node's name and config, its clock, the replicated state and how to write to it,
    and how to run work on the node's event loop."""

    name: str
    config: Config
    clock: Clock
    state: JobState
    submit: Submit
    spawn: Callable[[Coroutine[Any, Any, None]], None]
    call_soon: Callable[..., None]  # from any thread, onto the node's loop
    is_leader: Callable[[], bool]
    term: Callable[[], int]
