"""A dkron-lab cluster of real ``dkron-lab agent`` processes on loopback (``Cluster``), each
node killed by pid with the jobs it runs when the test ends."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from dkron_lab.testing import auth_headers, free_port, wait_for

__all__ = ["Cluster", "ClusterNode", "new_cluster_key"]


def new_cluster_key() -> str:
    """A random cluster key, as ``dkron-lab keygen`` prints one."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


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
