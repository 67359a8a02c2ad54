"""The lifecycle every service of a node shares: ``start(stack)`` starts its work and pushes onto
the node's one ``AsyncExitStack`` what stops it. The node enters its services in the order of
their dependencies and unwinds the stack in reverse when it stops, so what started last stops
first, and a start that fails half-way undoes exactly what had started.

A graceful stop unwinds the stack cleanly: running executions finish, the node says goodbye.
A stop that must not wait (``Node.stop(graceful=False)``, or a start that failed) unwinds it
with ``Hurry`` passing through: exit callbacks pushed with ``push_async_exit`` see it and cancel
instead of waiting.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Protocol

__all__ = ["Hurry", "Service", "hurried", "unwind"]


class Hurry(Exception):
    """Passes through the node's stack when it stops at once: cancel, do not wait."""


class Service(Protocol):
    async def start(self, stack: AsyncExitStack) -> None:
        """Start this service's work; push onto ``stack`` what stops it."""
        ...


def hurried(exc_type: type[BaseException] | None) -> bool:
    """True when the stack unwinds in a hurry (``Hurry``, or any error passing through)."""
    return exc_type is not None


async def unwind(stack: AsyncExitStack, *, hurry: bool) -> None:
    """Run every callback on ``stack`` in reverse, in a hurry or not."""
    if hurry:
        await stack.__aexit__(Hurry, Hurry(), None)
    else:
        await stack.aclose()
