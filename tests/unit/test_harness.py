"""The test harness (``tests/harness/``): its process and partition helpers, with real processes
and sockets."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.harness import Child, Network, Processes, TcpProxy

ECHO_SERVER = textwrap.dedent(
    """
    import socket, threading
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    def echo(conn):
        with conn, conn.makefile("rwb", buffering=0) as stream:
            for line in stream:
                stream.write(line)
    while True:
        threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
    """
)
ECHO_CLIENT = textwrap.dedent(
    """
    import socket, sys
    host, port = sys.argv[1].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as conn, conn.makefile("rwb", 0) as stream:
        print("connected", flush=True)
        for line in sys.stdin:
            stream.write(line.encode())
            print(stream.readline().decode().strip(), flush=True)
    """
)
SILENCE = 0.3  # seconds without an answer that count as "cut"


@pytest.fixture
def procs() -> Iterator[Processes]:
    with Processes() as started:
        yield started


@pytest.fixture
def echo(procs: Processes) -> str:
    server = procs.start([sys.executable, "-c", ECHO_SERVER])
    return f"127.0.0.1:{server.readline()}"


def _client(procs: Processes, address: str) -> Child:
    client = procs.start([sys.executable, "-c", ECHO_CLIENT, address])
    assert client.readline() == "connected"
    return client


def _echoes(client: Child, word: str) -> bool:
    client.send(word)
    try:
        return client.readline(timeout=SILENCE) == word
    except TimeoutError:
        return False


def test_processes_kills_every_child_by_pid_even_on_error() -> None:
    with pytest.raises(RuntimeError), Processes() as procs:
        sleeper = procs.start([sys.executable, "-c", "import time; time.sleep(60)"])
        stopped = procs.start([sys.executable, "-c", "print('up', flush=True); input()"])
        assert stopped.readline() == "up"
        stopped.pause()
        raise RuntimeError("the test failed")
    for child in (sleeper, stopped):
        assert not child.alive and not psutil.pid_exists(child.pid)
        assert child.returncode == -9


def test_child_lines_timeouts_signals_and_end_of_output(procs: Processes) -> None:
    child = procs.start([sys.executable, "-c", "print('a', flush=True); print(input())"])
    assert child.readline() == "a"
    with pytest.raises(TimeoutError, match="printed nothing"):
        child.readline(timeout=0.05)
    child.pause()
    deadline = time.monotonic() + 5
    while psutil.Process(child.pid).status() != psutil.STATUS_STOPPED:
        assert time.monotonic() < deadline, "SIGSTOP did not stop the child"
    child.resume()
    child.send("b")
    assert child.readline() == "b"
    with pytest.raises(EOFError):
        child.readline()
    assert child.terminate() == 0


def test_proxy_cut_holds_traffic_and_heal_delivers_it(procs: Processes, echo: str) -> None:
    with TcpProxy(echo) as proxy:
        client = _client(procs, proxy.address)
        assert _echoes(client, "one") and proxy.connections == 1
        proxy.cut()
        assert not _echoes(client, "two")  # silence, not a reset
        proxy.heal()
        assert client.readline() == "two"  # what was sent during the cut arrives after it
        late = _client(procs, proxy.address)
        assert _echoes(late, "three")
    assert proxy.connections == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(proxy.address.rsplit(":")[1])), timeout=1)


def test_proxy_cuts_only_the_named_clients(procs: Processes, echo: str) -> None:
    with TcpProxy(echo) as proxy:
        blocked, free = _client(procs, proxy.address), _client(procs, proxy.address)
        proxy.cut(clients={blocked.pid})
        assert _echoes(free, "a") and not _echoes(blocked, "b")
        proxy.heal()
        assert blocked.readline() == "b" and _echoes(blocked, "c")


def test_network_partitions_by_process(procs: Processes, echo: str) -> None:
    with Network() as net:
        address = net.add("server", echo)
        near, far = _client(procs, address), _client(procs, address)
        net.attach("server", procs.children[0].pid)  # the echo server
        with pytest.raises(KeyError, match="add"):
            net.attach("near", near.pid)
        net.add("far", echo)
        net.attach("far", far.pid)
        net.isolate("far")  # far's connections to the server are silenced; near is no node
        assert _echoes(near, "x") and not _echoes(far, "y")
        net.heal()
        assert far.readline() == "y"
        with pytest.raises(KeyError, match="unknown nodes"):
            net.partition(["nobody"])
