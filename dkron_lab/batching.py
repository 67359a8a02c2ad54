"""Group writes that arrive together into one replicated command.

One batch is in flight at a time; whatever arrives meanwhile rides the next one. An idle system
pays no delay, a busy one writes far fewer Raft entries (each costs pysyncobj a tick, a journal
record and a message per follower, whatever its size).

One bad item never fails its neighbours: ``check`` runs on each item before it joins a batch
(its error goes to that caller alone), and a batch refused as a whole with a
``ValidationError`` (nothing of it was written) is sent again item by item.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from dkron_lab.errors import ValidationError

__all__ = ["Batcher"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Submit items in batches through ``submit``, which returns one result per item.

    With ``retry=True`` a failed batch is sent again until it lands (``submit`` must then be
    idempotent); otherwise the failure is handed to every item's future. ``check`` raises for
    an item that must not join a batch (``add`` raises it).
    """

    def __init__(
        self,
        submit: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_items: int = 500,
        retry: bool = False,
        retry_delay: float = 0.5,
        check: Callable[[T], object] | None = None,
    ) -> None:
        self._submit = submit
        self._check = check
        self._max_items = max_items
        self._retry = retry
        self._retry_delay = retry_delay
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future resolves with its result once its batch committed."""
        if self._check is not None:
            self._check(item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._flush())
        return future

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_items]
            del self._queue[: self._max_items]
            await self._send(batch)
        self._idle.set()

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        while True:
            try:
                results = await self._submit(items)
                break
            except ValidationError as exc:
                if len(batch) > 1 and not self._retry:  # nothing was written: one at a time
                    for one in batch:
                        await self._send([one])
                    return
                _fail(batch, exc)
                return
            except Exception as exc:
                if not self._retry:
                    _fail(batch, exc)
                    return
                log.warning("batch of %d failed (%s); retrying", len(items), exc)
                await asyncio.sleep(self._retry_delay)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def drain(self) -> None:
        """Wait until everything added so far has been submitted."""
        await self._idle.wait()


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
