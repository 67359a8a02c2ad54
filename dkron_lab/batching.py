"""Group writes that arrive together into one replicated command.

One batch is in flight at a time; whatever arrives meanwhile rides the next one. An idle system
pays no delay, a busy one writes far fewer Raft entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Batcher(Generic[T]):
    """Submit items in batches through ``submit``, retrying a failed batch until it lands.

    ``submit`` must be idempotent: a batch whose outcome was unknown is sent again.
    """

    def __init__(
        self,
        submit: Callable[[list[T]], Awaitable[None]],
        *,
        max_items: int = 2000,
        retry_delay: float = 0.5,
    ) -> None:
        self._submit = submit
        self._max_items = max_items
        self._retry_delay = retry_delay
        self._queue: list[T] = []
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, item: T) -> None:
        self._queue.append(item)
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_items], self._queue[self._max_items :]
            while True:
                try:
                    await self._submit(batch)
                    break
                except Exception as exc:
                    log.warning("batch of %d failed (%s); retrying", len(batch), exc)
                    await asyncio.sleep(self._retry_delay)
        self._idle.set()

    async def drain(self) -> None:
        """Wait until everything added so far has been submitted."""
        await self._idle.wait()
