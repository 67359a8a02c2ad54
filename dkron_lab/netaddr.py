"""Two small facts about addresses that several layers need: whether a host is this machine
only, and a port free to listen on. Imports nothing heavy (the client uses it in kernels)."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["free_port", "is_loopback"]

_HANDED_OUT: set[int] = set()


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an IP, IPv6 with or without brackets) is reachable from
    this machine only; ``""`` (every interface) and other names are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``, and that this process was not given
    before: the kernel may hand the same free port to two binds in a row, and a caller that
    asks for two ports (HTTP and Raft) before binding either would then get one port twice."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
