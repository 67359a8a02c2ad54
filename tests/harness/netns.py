"""A ``Cluster`` whose nodes each run in a network namespace of their own, to partition it for
real (needs Linux, root and iproute2)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from tests.harness.cluster import Cluster, ClusterNode

__all__ = ["NamespacedCluster", "NamespacedNode", "network_namespaces_unavailable"]


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
