"""Network partitions on loopback: a ``TcpProxy`` in front of each node, and ``Network``, which
cuts the connections between the processes on different sides."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["Network", "TcpProxy"]


class TcpProxy:
    """Forwards TCP connections from ``address`` to ``target``, on its own thread.

    ``cut()`` is a network partition: traffic stops in both directions, nothing is closed, and
    what was sent waits; ``heal()`` lets it flow again (as TCP would after a partition heals,
    unless an endpoint gave up meanwhile). ``cut(clients=pids)`` silences only connections
    opened by those processes (found with psutil by the connecting socket's local address),
    which is how ``Network`` cuts a node off in both directions. A refused target closes the
    accepted connection (the client sees it reset).
    """

    def __init__(self, target: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        target_host, _, target_port = target.rpartition(":")
        self.target = (target_host.strip("[]"), int(target_port))
        self._listen = (host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self._blocked: frozenset[int] | None = frozenset()  # None: every connection
        self._port = 0

    @property
    def address(self) -> str:
        """host:port that clients connect to (valid after ``start``)."""
        return f"{self._listen[0]}:{self._port}"

    @property
    def connections(self) -> int:
        return len(self._links)

    def start(self) -> TcpProxy:
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        self._port = ready.result(timeout=10)
        return self

    def cut(self, *, clients: Collection[int] | None = None) -> None:
        """Stop traffic on every connection, or only on those opened by the ``clients`` pids.
        Connections opened while cut are held the same way. Returns once it took effect."""
        self._call(self._set_blocked, None if clients is None else frozenset(clients))

    def heal(self) -> None:
        """Let every connection flow again."""
        self._call(self._set_blocked, frozenset())

    def close(self) -> None:
        """Close the listener and every connection; join the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(self._request_stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the proxy thread ------------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, *self._listen)
        ready.set_result(int(server.sockets[0].getsockname()[1]))
        await self._stop.wait()
        server.close()
        await server.wait_closed()
        # A connection accepted just before the close may have a handler that has not started
        # yet: ending the loop then would leak its socket. Shut every link as it appears, until
        # no handler is left; the pumps see their sockets close and end (nothing is cancelled).
        me = asyncio.current_task()
        while handlers := [task for task in asyncio.all_tasks() if task is not me]:
            for link in list(self._links):
                link.shut()
            await asyncio.wait(handlers, timeout=0.05)

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        if self._loop is None:
            raise RuntimeError("the proxy is not running; call start() first")

        async def run() -> None:
            function(*args)

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def _set_blocked(self, blocked: frozenset[int] | None) -> None:
        self._blocked = blocked
        for link in self._links:
            self._gate(link)

    def _gate(self, link: _Link) -> None:
        blocked = self._blocked
        if blocked is None or (blocked and _owner(link.peer, blocked, self._port) is not None):
            link.open.clear()
        else:
            link.open.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(peer=writer.get_extra_info("peername")[:2], streams=[writer])
        link.closing = self._stop is not None and self._stop.is_set()  # accepted while closing
        self._links.add(link)
        try:
            self._gate(link)
            up_reader, upstream = await asyncio.open_connection(*self.target)
            link.streams.append(upstream)
            if not link.closing:
                await asyncio.gather(_pump(link, reader, upstream), _pump(link, up_reader, writer))
        except OSError:
            pass  # target refused: closing the client is what it sees
        finally:
            for stream in link.streams:
                await _close_stream(stream)
            self._links.discard(link)
            link.done.set()


@dataclass(eq=False)
class _Link:
    """One proxied connection: ``open`` is its gate, ``streams`` its two sockets."""

    peer: tuple[str, int]
    streams: list[asyncio.StreamWriter]
    open: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    def shut(self) -> None:
        self.closing = True
        for stream in self.streams:
            stream.close()
        self.open.set()  # a held pump must run to notice


async def _pump(link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while not link.closing:
            await link.open.wait()
            data = await reader.read(65536)
            if not data:
                break
            await link.open.wait()  # read just before a cut: hold it too
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()  # ends the other direction too


async def _close_stream(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _owner(peer: tuple[str, int], pids: Collection[int], port: int) -> int | None:
    """Which of ``pids`` has the TCP socket ``peer`` connected to our ``port``."""
    for pid in pids:
        try:
            sockets = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for sock in sockets:
            if sock.raddr and sock.raddr.port == port and tuple(sock.laddr)[:2] == peer:
                return pid
    return None


class Network:
    """A ``TcpProxy`` in front of each node of a cluster, so a test can partition it.

    Each node binds its real port and is known to the others by its proxy's address (for a
    Raft node: ``bind_address`` = the real one, ``self_address`` and the partners' addresses =
    the proxies'). ``attach`` tells which process serves a node; ``partition`` then silences
    every connection between processes on different sides, whichever side dialled.
    """

    def __init__(self) -> None:
        self._proxies: dict[str, TcpProxy] = {}
        self._pids: dict[str, int] = {}

    def add(self, name: str, target: str) -> str:
        """Put a proxy in front of ``target`` (host:port) and return its address."""
        proxy = TcpProxy(target).start()
        self._proxies[name] = proxy
        return proxy.address

    def address(self, name: str) -> str:
        return self._proxies[name].address

    def attach(self, name: str, pid: int) -> None:
        """The process now serving ``name`` (again after a restart)."""
        if name not in self._proxies:
            raise KeyError(f"unknown node {name!r}; add() it first")
        self._pids[name] = pid

    def partition(self, *groups: Collection[str]) -> None:
        """Nodes in different groups cannot talk; nodes in no group form one more group."""
        side = {name: i for i, group in enumerate(groups) for name in group}
        unknown = set(side) - set(self._proxies)
        if unknown:
            raise KeyError(f"unknown nodes {sorted(unknown)}")
        for name, proxy in self._proxies.items():
            others = {pid for node, pid in self._pids.items() if side.get(node) != side.get(name)}
            if others:
                proxy.cut(clients=others)
            else:
                proxy.heal()

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other node."""
        self.partition([name])

    def heal(self) -> None:
        for proxy in self._proxies.values():
            proxy.heal()

    def close(self) -> None:
        for proxy in self._proxies.values():
            proxy.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
