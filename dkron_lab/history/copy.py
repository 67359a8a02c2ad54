"""Copying the history a server lacks from another server.

Execution records reach every server through the Raft log, but a server that joined late, or
restored a snapshot (the log entries it replaced never reached its DuckDB), or lost its disk,
lacks the older ones. It notices by comparing the rows it holds with the replicated counters,
and pulls the missing pages from another server's internal API (``/internal/v1/history``),
the leader first. Imports are idempotent by execution id, so a row that the log also delivers,
or a page pulled twice, is stored once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from dkron_lab.dispatch import Peers
from dkron_lab.errors import DkronError
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.membership import NodeInfo

__all__ = ["HistoryCopy"]

log = logging.getLogger(__name__)

PAGE = 500  # rows per page; outputs make rows up to a few KB
_TABLES = {"executions": "executions", "skipped": "skipped-fire spans"}


class HistoryCopy:
    """Runs at most one copy at a time, in the background; ``soon()`` while one runs makes it
    check again when it ends."""

    def __init__(
        self,
        history: DuckDBHistory,
        peers: Peers,
        *,
        finished: Callable[[], int],
        sources: Callable[[], Sequence[NodeInfo]],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        """``finished()``: executions the replicated counters say have finished; ``sources()``:
        the servers to copy from, best first; ``tasks``: where the running copy is kept, so
        that the node cancels it when it stops."""
        self._history = history
        self._peers = peers
        self._finished = finished
        self._sources = sources
        self._tasks = tasks
        self._running: asyncio.Task[None] | None = None
        self._again = False

    def soon(self) -> None:
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.ensure_future(self._copy())
        self._tasks.add(self._running)
        self._running.add_done_callback(self._tasks.discard)

    async def _copy(self) -> None:
        """Pull pages until exhausted; retry with backoff (another server each time) while
        the servers cannot be reached."""
        attempt = 0
        while True:
            self._again = False
            if await self._lacking():
                try:
                    await self._copy_from(attempt)
                except DkronError as exc:
                    attempt += 1
                    delay = min(0.5 * 2**attempt, 30.0)
                    log.warning("history copy failed (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
            if not self._again:
                return

    async def _lacking(self) -> bool:
        """Fewer executions stored here than the replicated counters say have finished."""
        finished = self._finished()
        if finished == 0:
            return False
        await asyncio.to_thread(self._history.flush)
        return await asyncio.to_thread(self._history.count) < finished

    async def _copy_from(self, attempt: int) -> None:
        sources = self._sources()
        if not sources:
            log.info("history: no other server to copy the missing executions from")
            return
        source = sources[attempt % len(sources)]
        for table, what in _TABLES.items():
            copied = await self._copy_table(source, table)
            log.info("copied %d %s from %s", copied, what, source.name)

    async def _copy_table(self, source: NodeInfo, table: str) -> int:
        history = self._history
        save = history.import_executions if table == "executions" else history.import_skipped
        after, copied = None, 0
        while True:
            payload = {"table": table, "after": after, "limit": PAGE}
            page = await self._peers.post(
                source.http, "/internal/v1/history", payload, target=source.name, timeout=30
            )
            copied += save(page["rows"])
            # Wait for the writer: a large history must not pile up in its queue.
            await asyncio.to_thread(history.flush)
            after = page["next"]
            if after is None:
                return copied
            if copied % (20 * PAGE) == 0:
                log.info("copying history from %s: %d %s so far", source.name, copied, table)
