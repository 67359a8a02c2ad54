"""Test helpers that ship with the package: a fake clock, child processes that are always
killed, a whole cluster of ``dkron-lab agent`` subprocesses (``Cluster``), and TCP proxies to
partition a cluster running on loopback."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import heapq
import ipaddress
import itertools
import os
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from dkron_lab.netaddr import free_port

__all__ = [
    "Child",
    "Cluster",
    "ClusterNode",
    "FakeClock",
    "NamespacedCluster",
    "NamespacedNode",
    "Network",
    "Processes",
    "TcpProxy",
    "auth_headers",
    "free_port",
    "install_plugin",
    "new_cluster_key",
    "wait_for",
]


class FakeClock:
    """A clock that moves only when told to; sleepers wake when it passes their instant."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        await future

    def advance(self, delta: timedelta | float) -> None:
        """Move time forward and wake every sleeper whose instant has come."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self._now += delta
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())


def new_cluster_key() -> str:
    """A random cluster key, as ``dkron-lab keygen`` prints one."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def auth_headers(token: str) -> dict[str, str]:
    """The headers that authenticate with ``token`` (none for ``""``)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- child processes ------------------------------------------------------------------------------


class Child:
    """A process started by ``Processes``; signalled by pid, its stdout read line by line.

    A daemon thread moves stdout lines into a queue, so ``readline`` can time out instead of
    blocking a test for ever on a child that hangs.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = list(args)
        log = open(stderr, "ab") if stderr is not None else None  # noqa: SIM115 - closed below
        try:
            self._popen = subprocess.Popen(
                self.args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=cwd,
                env=None if env is None else dict(env),
                text=True,
                bufsize=1,
            )
        finally:
            if log is not None:
                log.close()  # the child has its own descriptor
        self.pid = self._popen.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"child-{self.pid}", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        stdin = self._popen.stdin
        if stdin is None or stdin.closed:
            raise EOFError(f"child {self.pid} has no open stdin")
        stdin.write(line.rstrip("\n") + "\n")
        stdin.flush()

    def readline(self, timeout: float = 10.0) -> str:
        """The next stdout line without its newline; ``TimeoutError``, or ``EOFError`` once the
        child closed stdout."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            message = f"child {self.pid} {self.args[:3]} printed nothing for {timeout:g} s"
            raise TimeoutError(message) from None
        if line is None:
            self._lines.put(None)  # stay at end of file for later readers
            raise EOFError(f"child {self.pid} closed its stdout (exit code {self.returncode})")
        return line

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def pause(self) -> None:
        """SIGSTOP: the process stops dead, its sockets stay open (a hung server)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(signal.SIGCONT)

    def kill(self) -> int:
        """kill -9 by pid (a paused child too), reap it, close the pipes. Idempotent."""
        self.signal(signal.SIGKILL)
        code = self._popen.wait()
        self._close()
        return code

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if the child is still there after ``timeout``."""
        self.signal(signal.SIGCONT)  # a stopped process does not handle SIGTERM
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)
        return self.kill()

    def _read(self) -> None:
        stdout = self._popen.stdout
        assert stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us by kill()
            for line in stdout:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _close(self) -> None:
        for stream in (self._popen.stdin, self._popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(timeout=5)


class Processes:
    """Starts child processes; on exit kills every one it started, by pid, even on failure.

    ::

        with Processes() as procs:
            agent = procs.start(["dkron-lab", "agent", "--server"], stderr=tmp_path / "a.log")
            agent.pause(); agent.resume(); agent.kill()
    """

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
    ) -> Child:
        """Start ``args`` (stdin and stdout piped; stderr appended to a file or inherited)."""
        child = Child(args, env=env, cwd=cwd, stderr=stderr)
        self._children.append(child)
        return child

    @property
    def children(self) -> list[Child]:
        return list(self._children)

    def close(self) -> None:
        """kill -9 every child still running and reap it."""
        for child in self._children:
            child.kill()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- clusters ------------------------------------------------------------------------------------

_T = TypeVar("_T")


class ClusterNode:
    """One node of a ``Cluster``: how it is started, and the process serving it now."""

    def __init__(
        self, *, name: str, server: bool, data_dir: Path, tags: Mapping[str, str], encrypt: str
    ) -> None:
        self.name = name
        self.server = server
        self.data_dir = data_dir
        self.tags = dict(tags)
        self.encrypt = encrypt
        self.http_port = free_port()
        self.raft_port = free_port() if server else 0
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False  # SIGSTOPped
        self.killed = False  # by Cluster.kill, not on its own
        self.awaited = True  # wait_ready expects it alive while it runs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    @property
    def running(self) -> bool:
        """The process exists and is not SIGSTOPped."""
        return not self.exited and not self.stopped


class Cluster:
    """A dkron-lab cluster on loopback: ``dkron-lab agent`` subprocesses named ``s1..sN``
    (servers) and ``a1..aM`` (agents), ports picked free, a data dir each under ``base_dir``.

    Each process has a session of its own; ``close()`` (and ``__exit__``, also on failure) kills
    every one by pid with the jobs it was running. A node's stderr goes to
    ``base_dir/<name>.log``. ::

        with Cluster(tmp_path, servers=3, agents=2, agent_tags=[{"role": "worker"}]) as cluster:
            leader = cluster.leader()
            cluster.http.post(cluster.url(leader) + "/v1/jobs", json=job).raise_for_status()
            cluster.kill(leader)
            assert cluster.leader() != leader
            cluster.start(leader)  # same data dir and ports
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        servers: int = 3,
        agents: int = 0,
        server_tags: Sequence[Mapping[str, str]] = (),
        agent_tags: Sequence[Mapping[str, str]] = (),
        encrypt: str | None = None,
        api_token: str | None = None,
        extra_args: Sequence[str] = (),
        log_level: str = "warn",
        timeout: float = 60.0,
    ) -> None:
        """``encrypt`` and ``api_token`` default to new random ones, given to every node;
        ``self.http`` sends the token."""
        self.base_dir = Path(base_dir)
        self.encrypt = new_cluster_key() if encrypt is None else encrypt
        self.api_token = secrets.token_urlsafe(16) if api_token is None else api_token
        self.extra_args = tuple(extra_args)
        self.log_level = log_level
        self.timeout = timeout
        self.http = httpx.Client(
            timeout=10.0, trust_env=False, headers=auth_headers(self.api_token)
        )
        encrypt = self.encrypt
        self.nodes: dict[str, ClusterNode] = {}
        for i in range(servers):
            tags = server_tags[i] if i < len(server_tags) else {}
            self._add(f"s{i + 1}", server=True, tags=tags, encrypt=encrypt)
        for i in range(agents):
            tags = agent_tags[i] if i < len(agent_tags) else {}
            self._add(f"a{i + 1}", server=False, tags=tags, encrypt=encrypt)

    def _add(self, name: str, *, server: bool, tags: Mapping[str, str], encrypt: str) -> None:
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} is already in the cluster")
        self.nodes[name] = ClusterNode(
            name=name, server=server, data_dir=self.base_dir / name, tags=tags, encrypt=encrypt
        )

    # -- who is who ----------------------------------------------------------------------------

    @property
    def servers(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.server]

    @property
    def agents(self) -> list[str]:
        return [n.name for n in self.nodes.values() if not n.server]

    @property
    def running(self) -> list[str]:
        """Nodes whose process runs (neither killed nor SIGSTOPped)."""
        return [n.name for n in self.nodes.values() if n.running]

    def url(self, name: str) -> str:
        """``http://127.0.0.1:<port>`` of the HTTP API of ``name``."""
        return self.node(name).url

    def pid(self, name: str) -> int:
        process = self.node(name).process
        if process is None:
            raise RuntimeError(f"node {name!r} was never started")
        return process.pid

    def node(self, name: str) -> ClusterNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; the cluster has {sorted(self.nodes)}") from None

    def leader(self, *, timeout: float = 15.0) -> str:
        """The leader's name, once every running server names the same running server."""
        return wait_for(self._agreed_leader, timeout, "no leader agreed by every running server")

    def followers(self) -> list[str]:
        """Running servers other than the leader."""
        leader = self.leader()
        return [n for n in self.servers if n != leader and self.nodes[n].running]

    def _agreed_leader(self) -> str | None:
        named = {
            _field(self.get(server, "/v1/leader"), "Name")
            for server in self.servers
            if self.nodes[server].running
        }
        leader = named.pop() if len(named) == 1 else None
        return leader if leader in self.nodes and self.nodes[leader].running else None

    def members(self, server: str) -> dict[str, dict[str, Any]]:
        """``GET /v1/members`` on ``server``, by node name (empty if it does not answer)."""
        return {m["Name"]: m for m in self.get(server, "/v1/members") or []}

    def history(self, name: str, job: str) -> list[dict[str, Any]]:
        """Every recorded execution of ``job`` as server ``name`` answers (Dkron's JSON)."""
        response = self.http.get(
            f"{self.url(name)}/v1/jobs/{job}/executions", params={"output_size_limit": 1000}
        )
        response.raise_for_status()
        return list(response.json())

    def get(self, name: str, path: str) -> Any:
        """The JSON of ``GET path`` on ``name``; None if it does not answer 200 within 2 s."""
        try:
            response = self.http.get(self.url(name) + path, timeout=2.0)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    # -- life and death ------------------------------------------------------------------------

    def start_all(self) -> Cluster:
        """Start every node that is not running, then ``wait_ready``."""
        for node in self.nodes.values():
            if node.exited:
                self._spawn(node)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until every running server names the same leader and lists every running node
        alive in ``/v1/members``."""
        wait_for(self._ready, timeout or self.timeout, "the cluster did not become ready")

    def _ready(self) -> bool:
        awaited = [n for n in self.nodes.values() if n.awaited and n.process is not None]
        for node in awaited:
            if node.exited and not node.killed:
                log = self.base_dir / f"{node.name}.log"
                raise RuntimeError(f"node {node.name} exited on its own: see {log}")
        if self._agreed_leader() is None:
            return False
        expected = {n.name for n in awaited if n.running}
        for server in self.servers:
            if self.nodes[server].running:
                members = self.members(server)
                alive = {n for n, m in members.items() if m["statusText"] == "alive"}
                if not expected <= alive:
                    return False
        return True

    def add_agent(
        self,
        name: str,
        *,
        tags: Mapping[str, str] | None = None,
        encrypt: str | None = None,
        wait: bool = True,
    ) -> None:
        """Start one more agent (with the cluster's key unless ``encrypt`` is given).

        ``wait=False``: return at once, and let ``wait_ready`` ignore this node.
        """
        key = self.encrypt if encrypt is None else encrypt
        self._add(name, server=False, tags=tags or {}, encrypt=key)
        self._spawn(self.nodes[name], awaited=wait)
        if wait:
            self.wait_ready()

    def add_server(self, name: str, *, wait: bool = True) -> None:
        """Start one more server, its ``--join`` naming every server (itself included, as the
        others were started), with ``--bootstrap-expect`` of the grown cluster."""
        self._add(name, server=True, tags={}, encrypt=self.encrypt)
        self._spawn(self.nodes[name], awaited=wait)
        if wait:
            self.wait_ready()

    def start(self, name: str, *, http_port: int | None = None, wait: bool = True) -> None:
        """Start ``name`` again on its data dir and ports (or on a new ``http_port``);
        ``wait`` as in ``add_agent``."""
        node = self.node(name)
        if not node.exited:
            raise RuntimeError(f"node {name!r} is still running (pid {self.pid(name)})")
        if http_port is not None:
            node.http_port = http_port
        self._spawn(node, awaited=wait)
        if wait:
            self.wait_ready()

    def kill(self, name: str) -> None:
        """``kill -9`` the node's process group, and the jobs it runs, by pid. Idempotent."""
        node = self.node(name)
        if node.process is None or node.exited:
            return
        jobs = _descendants(node.process.pid)  # each in a session of its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        for pid in jobs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.process.wait(10)
        node.stopped, node.killed = False, True

    def stop(self, name: str) -> None:
        """SIGSTOP the node's process group: it hangs, its sockets open."""
        self._signal(name, signal.SIGSTOP)
        self.nodes[name].stopped = True

    def cont(self, name: str) -> None:
        """SIGCONT after ``stop``."""
        self._signal(name, signal.SIGCONT)
        self.nodes[name].stopped = False

    def _signal(self, name: str, signum: int) -> None:
        if self.node(name).exited:
            raise RuntimeError(f"node {name!r} is not running")
        os.killpg(self.pid(name), signum)

    def _spawn(self, node: ClusterNode, *, awaited: bool = True) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        # The nodes' settings come from their flags only, not from this process's DKRON_*.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
        with open(self.base_dir / f"{node.name}.log", "ab") as log:
            node.process = subprocess.Popen(
                self._command(node),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=node.data_dir,
                env=env,
                start_new_session=True,
            )
        node.stopped, node.killed, node.awaited = False, False, awaited

    def _command(self, node: ClusterNode) -> list[str]:
        args = [sys.executable, "-m", "dkron_lab.cli", "agent", "--node-name", node.name]
        args += ["--data-dir", str(node.data_dir), "--log-level", self.log_level]
        args += ["--http-addr", f"127.0.0.1:{node.http_port}"]
        if node.server:
            args += ["--server", "--bootstrap-expect", str(len(self.servers))]
            args += ["--bind-addr", node.raft_addr]
        for server in self.servers:
            args += ["--join", self.nodes[server].raft_addr]
        for key, value in node.tags.items():
            args += ["--tag", f"{key}={value}"]
        if node.encrypt:
            args += ["--encrypt", node.encrypt]
        if self.api_token:
            args += ["--api-token", self.api_token]
        return [*args, *self.extra_args]

    def close(self) -> None:
        """Kill every node (a SIGSTOPped one too) and close the HTTP client. Idempotent."""
        for name in self.nodes:
            self.kill(name)
        self.http.close()

    def __enter__(self) -> Cluster:
        try:
            return self.start_all()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _field(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def _descendants(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def wait_for(probe: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """``probe()`` once it returns something truthy; ``TimeoutError`` naming ``what`` if it
    does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


# -- network partitions --------------------------------------------------------------------------


def install_plugin(
    directory: Path,
    module: str,
    source: str,
    entry_points: Mapping[str, Mapping[str, str]],
    *,
    monkeypatch: Any = None,
) -> None:
    """Install a one-module package the way pip would (the module beside a ``.dist-info``
    holding its ``entry_points.txt``) into ``directory``, and put ``directory`` on
    ``PYTHONPATH`` so that nodes started afterwards load it. ``entry_points`` maps a group
    (``dkron_lab.executors``) to ``{name: "module:Target"}``; ``monkeypatch`` (pytest's)
    undoes the ``PYTHONPATH`` change after the test."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(source)
    dist_info = directory / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in names.items())
            for group, names in entry_points.items()
        )
    )
    path = os.pathsep.join([str(directory), *filter(None, [os.environ.get("PYTHONPATH")])])
    if monkeypatch is not None:
        monkeypatch.setenv("PYTHONPATH", path)
    else:
        os.environ["PYTHONPATH"] = path


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


# -- network namespaces ------------------------------------------------------------------------


def network_namespaces_unavailable() -> str | None:
    """Why ``NamespacedCluster`` cannot run here, or None if it can: it needs Linux, root
    (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's ``ip``."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip` command"
    probe = f"dkron-lab-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot create a network namespace here: {exc}"
    _ip("netns", "del", probe)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _unused_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` random /24 subnets of 10.0.0.0/8 that no route of this machine touches."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True)
    taken = [
        ipaddress.ip_network(line.split()[0], strict=False)
        for line in routes.stdout.splitlines()
        if line and line.split()[0] != "default"
    ]
    picked: list[ipaddress.IPv4Network] = []
    while len(picked) < count:
        subnet = ipaddress.IPv4Network(
            f"10.{random.randrange(64, 255)}.{random.randrange(256)}.0/24"
        )
        if subnet not in picked and not any(subnet.overlaps(net) for net in taken):
            picked.append(subnet)
    return picked


class NamespacedNode(ClusterNode):
    """A ``ClusterNode`` in a network namespace of its own, with a link on each bridge."""

    def __init__(
        self, *, netns: str, host: int, cluster_ip: str, test_ip: str, link: str, **node: Any
    ) -> None:
        super().__init__(**node)
        self.netns = netns
        self.host = host  # its number on both bridges
        self.cluster_ip = cluster_ip  # what the other nodes reach it on
        self.test_ip = test_ip  # what the test reaches its HTTP API on
        self.link = link  # the host end of its cluster link: down = partitioned
        self.plumbed = False

    @property
    def url(self) -> str:
        return f"http://{self.test_ip}:{self.http_port}"

    @property
    def raft_addr(self) -> str:
        return f"{self.cluster_ip}:{self.raft_port}"


class NamespacedCluster(Cluster):
    """A ``Cluster`` whose nodes each run in a network namespace of their own, so that a test
    can partition it for real: ``isolate(name)`` takes the node's cluster link down, which
    silences every packet between it and the other nodes, both ways, Raft and HTTP alike
    (nothing is closed: connections hang, as in a real partition); ``heal()`` brings it back.

    Each namespace is linked to two bridges: the *cluster* network (the node's ``--bind-addr``
    and advertised address, the only way nodes reach each other) and a *test* network, on
    which ``url(name)`` reaches the node's HTTP API even while it is isolated. Needs root and
    iproute2 (``network_namespaces_unavailable()`` says why not); every link, bridge and
    namespace is deleted by ``close()``. The nodes listen off loopback, so the cluster needs
    a key: pass ``encrypt``. ::

        with NamespacedCluster(tmp_path, servers=3, encrypt=key) as cluster:
            old = cluster.leader()
            cluster.isolate(old)
            ...
            cluster.heal()
    """

    def __init__(self, base_dir: str | os.PathLike[str], **options: Any) -> None:
        if not options.get("encrypt"):
            raise ValueError("a NamespacedCluster listens off loopback: give it an encrypt key")
        self._tag = f"dl{secrets.token_hex(3)}"  # interface names: at most 15 characters
        self._cluster_net, self._test_net = _unused_subnets(2)
        self._bridges: list[str] = []
        self._isolated: set[str] = set()
        super().__init__(base_dir, **options)

    def node(self, name: str) -> NamespacedNode:
        found = super().node(name)
        assert isinstance(found, NamespacedNode)
        return found

    def isolate(self, *names: str) -> None:
        """Cut each of ``names`` off from every other node (the test still reaches them)."""
        for name in names:
            _ip("link", "set", "dev", self.node(name).link, "down")
            self._isolated.add(name)

    def heal(self) -> None:
        """Reconnect every isolated node."""
        for name in sorted(self._isolated):
            _ip("link", "set", "dev", self.node(name).link, "up")
        self._isolated.clear()

    def __enter__(self) -> NamespacedCluster:
        super().__enter__()
        return self

    def close(self) -> None:
        """Kill every node, then delete the namespaces and bridges. Idempotent."""
        try:
            super().close()
        finally:
            for node in self.nodes.values():
                if isinstance(node, NamespacedNode) and node.plumbed:
                    # Deleting a veth end deletes both, even if the namespace outlives its
                    # processes for a while (the kernel frees it when its last socket is gone).
                    for kind in ("c", "t"):
                        with contextlib.suppress(RuntimeError):
                            _ip("link", "del", f"{self._tag}{kind}{node.host}")
                    with contextlib.suppress(RuntimeError):
                        _ip("netns", "del", node.netns)
                    node.plumbed = False
            for bridge in self._bridges:
                with contextlib.suppress(RuntimeError):
                    _ip("link", "del", bridge)
            self._bridges.clear()

    def _add(self, name: str, *, server: bool, tags: Mapping[str, str], encrypt: str) -> None:
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} is already in the cluster")
        host = len(self.nodes) + 2  # .1 is the test machine on each bridge
        if host > 254:
            raise ValueError("a NamespacedCluster holds at most 253 nodes")
        self.nodes[name] = NamespacedNode(
            name=name,
            server=server,
            data_dir=self.base_dir / name,
            tags=tags,
            encrypt=encrypt,
            netns=f"{self._tag}-{name}",
            host=host,
            cluster_ip=str(self._cluster_net[host]),
            test_ip=str(self._test_net[host]),
            link=f"{self._tag}c{host}",
        )

    def _spawn(self, node: ClusterNode, *, awaited: bool = True) -> None:
        assert isinstance(node, NamespacedNode)
        self._plumb(node)
        super()._spawn(node, awaited=awaited)

    def _command(self, node: ClusterNode) -> list[str]:
        assert isinstance(node, NamespacedNode)
        args = super()._command(node)
        # Every interface of its namespace: the cluster link for nodes, the test link for us.
        args[args.index("--http-addr") + 1] = f"0.0.0.0:{node.http_port}"
        args += ["--advertise-addr", f"{node.cluster_ip}:{node.raft_port or 8946}"]
        return ["ip", "netns", "exec", node.netns, *args]

    def _plumb(self, node: NamespacedNode) -> None:
        """The node's namespace, with loopback and a veth pair into each bridge."""
        if node.plumbed:
            return
        if not self._bridges:
            for kind, net in (("c", self._cluster_net), ("t", self._test_net)):
                bridge = f"{self._tag}{kind}"
                _ip("link", "add", bridge, "type", "bridge")
                self._bridges.append(bridge)
                _ip("addr", "add", f"{net[1]}/{net.prefixlen}", "dev", bridge)
                _ip("link", "set", "dev", bridge, "up")
        _ip("netns", "add", node.netns)
        node.plumbed = True
        _ip("-n", node.netns, "link", "set", "dev", "lo", "up")
        for kind, ip, net in (
            ("c", node.cluster_ip, self._cluster_net),
            ("t", node.test_ip, self._test_net),
        ):
            outside, inside = f"{self._tag}{kind}{node.host}", f"{kind}link"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", node.netns)
            _ip("link", "set", "dev", outside, "master", f"{self._tag}{kind}")
            _ip("link", "set", "dev", outside, "up")
            _ip("-n", node.netns, "addr", "add", f"{ip}/{net.prefixlen}", "dev", inside)
            _ip("-n", node.netns, "link", "set", "dev", inside, "up")
