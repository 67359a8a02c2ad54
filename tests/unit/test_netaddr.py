import socket

import pytest

from dkron_lab.netaddr import free_port, is_loopback


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "10.0.0.1", "example.org", "localhost.evil"])
def test_hosts_reachable_from_elsewhere_or_unknown_are_not_loopback(host):
    assert not is_loopback(host)


def test_free_ports_bind_and_are_never_handed_out_twice():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))
