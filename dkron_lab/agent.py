"""The process of ``dkron-lab agent``: tune the interpreter, build the node and its HTTP API,
and run until SIGTERM or SIGINT (a second signal exits at once).

May call: ``Node`` (start, stop) and ``api.app.serve``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from dkron_lab.config import Config
from dkron_lab.node import Node

__all__ = ["run_agent", "settle_heap", "tune_interpreter"]

log = logging.getLogger(__name__)


def tune_interpreter() -> None:
    """Settings for a process that is a dkron-lab server and nothing else.

    The Raft and DuckDB threads hold the GIL in stretches; with CPython's default 5 ms switch
    interval a fire due meanwhile would start up to 5 ms late. Full garbage collections of a
    server holding 10,000 jobs took 120-220 ms (freeing nothing) and made the p99 lateness:
    what exists once the node has started is frozen out of collection, and the oldest
    generation is collected ten times less often.
    """
    sys.setswitchinterval(0.0005)
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 100)


def settle_heap() -> None:
    """Freeze what a started node holds (its jobs, modules, caches) out of the collector."""
    gc.collect()
    gc.freeze()


async def run_agent(config: Config) -> int:
    """Run a node with its HTTP API until SIGTERM/SIGINT; running jobs finish first."""
    from dkron_lab.api import auth
    from dkron_lab.api.app import serve

    auth.check_listen(config)  # before anything is started or written
    if config.api_tokens_file is not None:
        auth.read_tokens_file(config.api_tokens_file)
    tune_interpreter()
    node = Node(config)
    await node.start()
    try:
        server = await serve(node)
    except BaseException:
        await node.stop(graceful=False)
        raise
    settle_heap()
    stopping = asyncio.Event()
    node.on_leave = stopping.set
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now")
            raise SystemExit(1)
        log.info("stopping: waiting for %d running execution(s)", node.runner.running)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stopping.wait()
    server.stop()
    await node.stop(graceful=True)
    return 0
