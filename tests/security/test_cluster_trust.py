"""Issue 10, points 1, 2, 7 and 10: what a local attacker can do to a node's internal API and
raft port. Every test drives a real ``dkron-lab agent`` process (or a real raft port) the way
the issue's reproductions did, and fails on the code before the fix: there the internal API
trusted loopback, the raft port unpickled what it was sent, signed calls could be replayed,
a non-ASCII signature answered 500 and removing the only voter hung 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from dkron_lab import dispatch
from dkron_lab.testing import auth_headers, free_port, wait_for
from tests.harness import Child, Processes, new_cluster_key
from tests.security.certs import make_pki

pytestmark = pytest.mark.slow

ATTACKER = "dkron-attacker"


class _System:
    """Unpickles into ``os.system(command)``: the issue's payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


@dataclass
class Server:
    """One ``dkron-lab agent --server`` started as on a default install (no --encrypt, no
    --api-token: both generated into the data dir)."""

    data_dir: Path
    log: Path
    http_port: int
    raft_port: int
    name: str = "s1"
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def token(self) -> str:
        path = self.data_dir / "api-token"
        return path.read_text().strip() if path.exists() else ""

    @property
    def key(self) -> bytes:
        return dispatch.cluster_key((self.data_dir / "cluster-key").read_text().strip())

    def args(self) -> list[str]:
        return [
            sys.executable, "-m", "dkron_lab.cli", "agent", "--server",
            "--bootstrap-expect", "1", "--node-name", self.name,
            "--data-dir", str(self.data_dir), "--log-level", "info",
            "--http-addr", f"127.0.0.1:{self.http_port}",
            "--bind-addr", f"127.0.0.1:{self.raft_port}",
        ]  # fmt: skip

    def start(self, procs: Processes) -> Server:
        self.child = procs.start(self.args(), env=_clean_env(), stderr=self.log)
        wait_for(self._ready, 60, f"{self.name} did not become ready (see {self.log})")
        return self

    def restart(self, procs: Processes) -> None:
        assert self.child is not None
        self.child.kill()
        self.start(procs)

    def _ready(self) -> bool:
        assert self.child is not None
        if not self.child.alive:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{self.url}/v1/leader", headers=self.auth(), timeout=2)
            return answer.status_code == 200
        return False

    def auth(self) -> dict[str, str]:
        return auth_headers(self.token)

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}


def _run_body(command: str, *, group: int = 1) -> bytes:
    job = {
        "name": "e",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
    }
    return json.dumps({"term": 99, "runs": [{"group": group, "job": job}]}).encode()


@pytest.fixture
def procs() -> Iterator[Processes]:
    with Processes() as started:
        yield started


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every local user may enter (``/tmp`` itself is, pytest's tmp dirs are not):
    the data dir's own mode must be what keeps other users out."""
    path = Path(tempfile.mkdtemp(prefix="dkron-trust-", dir="/tmp"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(procs: Processes, shared_dir: Path) -> Server:
    node = Server(
        data_dir=shared_dir / "s1",
        log=shared_dir / "s1.log",
        http_port=free_port(),
        raft_port=free_port(),
    )
    return node.start(procs)


# -- (a) the curl, from loopback, without a signature --------------------------------------


def test_unsigned_internal_calls_from_loopback_are_refused_and_logged(
    server: Server, shared_dir: Path
) -> None:
    marker = shared_dir / "p.txt"
    body = _run_body(f"id>{marker}").decode()
    url = f"127.0.0.1:{server.http_port}/internal/v1/run"
    # The exact reproduction (curl -d sends a form content type), then as JSON.
    for extra in ([], ["-H", "Content-Type: application/json"]):
        status = _curl(["-XPOST", url, "-d", body, *extra])
        assert status in (401, 415), status
    assert _curl(["-XPOST", url, "-d", body, "-H", "Content-Type: application/json"]) == 401
    history = _curl(
        ["-XPOST", f"127.0.0.1:{server.http_port}/internal/v1/history", "-d", "{}",
         "-H", "Content-Type: application/json"]
    )  # fmt: skip
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        owned = f"127.0.0.1:{listener.getsockname()[1]}"
        add = _curl(
            ["-XPOST", f"127.0.0.1:{server.http_port}/internal/v1/raft/add",
             "-d", json.dumps({"peer": owned}), "-H", "Content-Type: application/json"]
        )  # fmt: skip
    assert (history, add) == (401, 401)
    wait_for(lambda: server.logged("refused POST /internal/v1/run from 127.0.0.1"), 5, "a warning")
    assert server.logged("refused POST /internal/v1/raft/add from 127.0.0.1")
    created = httpx.post(
        f"{server.url}/v1/jobs", json=_job("still-writable"), headers=server.auth(), timeout=10
    )
    assert created.status_code == 201, created.text  # the raft/add did not wedge the node
    assert [p["address"] for p in _peers(server)] == [f"127.0.0.1:{server.raft_port}"]
    assert not marker.exists()


def _curl(args: Sequence[str], *, user: str | None = None) -> int:
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", *args]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return int(done.stdout or 0)


def _job(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "true", "shell": "true"},
    }


def _peers(server: Server) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/v1/raft/peers", headers=server.auth(), timeout=10)
    answer.raise_for_status()
    return list(answer.json())


# -- (b) the same attack as another OS user --------------------------------------------------------


@pytest.fixture(scope="session")
def attacker() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("needs root with useradd and runuser to act as a second OS user")
    made = False
    try:
        pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", ATTACKER], check=True, timeout=30)
        made = True
    try:
        yield ATTACKER
    finally:
        if made:
            subprocess.run(["userdel", ATTACKER], check=False, timeout=30)


def test_another_os_user_can_neither_call_nor_read_the_secrets(
    server: Server, shared_dir: Path, attacker: str
) -> None:
    marker = shared_dir / "p.txt"
    url = f"127.0.0.1:{server.http_port}/internal/v1/run"
    body = _run_body(f"id>{marker}").decode()
    status = _curl(
        ["-XPOST", url, "-d", body, "-H", "Content-Type: application/json"], user=attacker
    )
    assert status == 401
    for secret in ("api-token", "cluster-key"):
        read = subprocess.run(
            ["runuser", "-u", attacker, "--", "cat", str(server.data_dir / secret)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert read.returncode != 0 and not read.stdout, secret
    # Even with the data dir opened up, the files themselves are 0600.
    assert {(server.data_dir / s).stat().st_mode & 0o077 for s in ("api-token", "cluster-key")} == {
        0
    }
    assert not marker.exists()


# -- (c) raw bytes to the raft port ----------------------------------------------------------------


def test_raw_bytes_to_the_raft_port_are_never_unpickled(server: Server, shared_dir: Path) -> None:
    marker = shared_dir / "pwned"
    payload = zlib.compress(pickle.dumps(_System(f"touch {marker}")), 3)
    wrong_key = Fernet(Fernet.generate_key()).encrypt_at_time(payload, int(time.monotonic()))
    frames = [
        struct.pack("i", len(payload)) + payload,  # as pysyncobj frames it without a key
        struct.pack("i", len(wrong_key)) + wrong_key,  # encrypted with another key
        os.urandom(64),  # unframed garbage
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        struct.pack("i", -5) + b"x" * 16,
    ]
    for frame in frames:
        _send_raw(server.raft_port, frame)
    created = httpx.post(
        f"{server.url}/v1/jobs", json=_job("after-raw"), headers=server.auth(), timeout=10
    )
    assert created.status_code == 201, created.text  # the node keeps serving
    wait_for(lambda: server.logged("wrong or missing cluster key"), 5, "an authentication warning")
    assert server.logged("from 127.0.0.1:")
    assert not marker.exists()
    assert server.child is not None and server.child.alive


def test_a_huge_unauthenticated_frame_is_dropped_not_buffered(server: Server) -> None:
    """A header announcing a 1 GiB frame, then bytes: pysyncobj alone would buffer them all
    (up to 2 GiB) before checking anything; the node hangs up past 64 KiB."""
    with socket.create_connection(("127.0.0.1", server.raft_port), timeout=5) as conn:
        conn.sendall(struct.pack("i", 2**30))
        sent, closed = 0, False
        chunk = b"\0" * 65536
        while sent < 64 * 2**20 and not closed:  # at most 64 MiB
            try:
                conn.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        if not closed:  # everything went into socket buffers: the close must follow
            with contextlib.suppress(ConnectionResetError):
                closed = conn.recv(1) == b""
    assert closed and sent < 64 * 2**20
    wait_for(lambda: server.logged("sent more than 64 KiB"), 5, "the drop to be logged")
    assert server.child is not None and server.child.alive


def _send_raw(port: int, data: bytes) -> None:
    """Send ``data`` and wait until the node hangs up (or 2 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(data)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while conn.recv(1024):
                pass


async def test_the_raft_adapter_authenticates_before_it_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, with a spy on pysyncobj's ``pickle.loads``: attacks never reach it; a client
    holding the key does (so the spy is wired). And there is no raft port without a key."""
    import pysyncobj.pickle
    from pysyncobj.utility import TcpUtility

    from dkron_lab.errors import ValidationError
    from dkron_lab.state.raft import RaftNode, RaftSettings

    with pytest.raises(ValidationError, match="needs the cluster key"):
        RaftSettings(data_dir=tmp_path / "none", self_address=f"127.0.0.1:{free_port()}")
    loaded: list[str] = []  # the threads that unpickled something
    original = pysyncobj.pickle.loads

    def spy(data: bytes) -> Any:
        loaded.append(threading.current_thread().name)
        return original(data)

    monkeypatch.setattr(pysyncobj.pickle, "loads", spy)
    key, marker = new_cluster_key(), tmp_path / "pwned"
    port = free_port()
    settings = RaftSettings(data_dir=tmp_path / "n", self_address=f"127.0.0.1:{port}", password=key)
    node = RaftNode(settings, _Counter())
    node.start()
    try:
        await node.wait_ready(10)
        payload = zlib.compress(pickle.dumps(_System(f"touch {marker}")), 3)
        _send_raw(port, struct.pack("i", len(payload)) + payload)
        forged = Fernet(Fernet.generate_key()).encrypt_at_time(payload, int(time.monotonic()))
        _send_raw(port, struct.pack("i", len(forged)) + forged)
        assert loaded == [] and not marker.exists()
        status = TcpUtility(password=key, timeout=5).executeCommand(f"127.0.0.1:{port}", ["status"])
        assert status and any(name.startswith("raft-") for name in loaded)  # after auth
        assert await node.submit({"n": 1}) == {"n": 1}
    finally:
        node.stop()


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.RLock()

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        return command

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, data: dict[str, Any]) -> None:
        pass


# -- (d) replay, (e) another node's call, (f) malformed headers -----------------------------------


def _signed(server: Server, body: bytes, *, target: str | None = None) -> dict[str, str]:
    headers = dispatch.sign(
        server.key,
        method="POST",
        path="/internal/v1/run",
        target=server.name if target is None else target,
        body=body,
        now=time.time(),
    )
    return {"Content-Type": "application/json"} | headers


def test_a_signed_call_runs_once_and_never_again_after_a_restart(
    server: Server, procs: Processes, shared_dir: Path
) -> None:
    marker = shared_dir / "runs.txt"
    body = _run_body(f"echo ran >> {marker}", group=4242)
    headers = _signed(server, body)
    url = f"{server.url}/internal/v1/run"
    statuses = [httpx.post(url, content=body, headers=headers, timeout=10).status_code]
    statuses += [httpx.post(url, content=body, headers=headers, timeout=10).status_code]
    statuses += [httpx.post(url, content=body, headers=headers, timeout=10).status_code]
    assert statuses == [202, 401, 401]
    wait_for(lambda: marker.exists() and marker.read_text(), 10, "the one run")
    assert server.logged("(a replay)")

    server.restart(procs)
    again = httpx.post(url, content=body, headers=headers, timeout=10)
    assert again.status_code == 401, again.text
    assert "before this node (re)started" in again.text
    time.sleep(0.5)  # a run would have started by now; nothing else to wait on
    assert marker.read_text() == "ran\n"


def test_a_call_signed_for_another_node_is_refused(server: Server, shared_dir: Path) -> None:
    marker = shared_dir / "other.txt"
    body = _run_body(f"id>{marker}")
    answer = httpx.post(
        f"{server.url}/internal/v1/run",
        content=body,
        headers=_signed(server, body, target="s2"),
        timeout=10,
    )
    assert answer.status_code == 401 and "another node" in answer.text
    assert "s1" not in answer.json()["error"]  # a 401 does not name the node
    assert not marker.exists()


MALFORMED: list[dict[str, str | None]] = [
    {dispatch.SIGNATURE_HEADER: "é" * 64},
    {dispatch.SIGNATURE_HEADER: "\u2603"},
    {dispatch.TIMESTAMP_HEADER: "not-a-number"},
    {dispatch.TIMESTAMP_HEADER: "nan"},
    {dispatch.TIMESTAMP_HEADER: "١٢٣"},  # Arabic-Indic digits: float() would take them
    {dispatch.NONCE_HEADER: "ü"},
    {dispatch.TARGET_HEADER: "s\u00e91"},
    {dispatch.SIGNATURE_HEADER: None},
    {dispatch.TIMESTAMP_HEADER: None},
    {dispatch.NONCE_HEADER: None},
    {dispatch.TARGET_HEADER: None},
]


def test_malformed_signature_headers_are_a_401_not_a_500(server: Server) -> None:
    body = _run_body("true")
    for change in MALFORMED:
        headers: dict[str, Any] = _signed(server, body)
        for name, value in change.items():
            if value is None:
                del headers[name]
            else:
                headers[name] = value.encode("utf-8")  # raw bytes on the wire, as curl sends
        answer = httpx.post(
            f"{server.url}/internal/v1/run", content=body, headers=headers, timeout=10
        )
        assert answer.status_code == 401, (change, answer.text)
        assert "internal call refused" in answer.json()["error"]


# -- (g) joining without the key, and with the wrong one -------------------------------------------


def test_joining_without_the_key_exits_with_the_message(tmp_path: Path) -> None:
    args = [
        sys.executable, "-m", "dkron_lab.cli", "agent", "--server", "--node-name", "s2",
        "--data-dir", str(tmp_path / "s2"), "--http-addr", f"127.0.0.1:{free_port()}",
        "--bind-addr", f"127.0.0.1:{free_port()}", "--join", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    done = subprocess.run(
        args, env=_clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "needs the cluster's key: pass --encrypt KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_node_refuses_to_run_under_python_O(tmp_path: Path) -> None:
    """pysyncobj's per-connection key check is an ``assert``: ``-O`` would drop it."""
    args = [
        sys.executable, "-O", "-m", "dkron_lab.cli", "agent", "--server", "--bootstrap-expect",
        "1", "--data-dir", str(tmp_path / "s1"), "--http-addr", f"127.0.0.1:{free_port()}",
        "--bind-addr", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    done = subprocess.run(
        args, env=_clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "does not run under python -O" in done.stderr
    assert not (tmp_path / "s1" / "raft").exists()


def test_a_node_with_the_wrong_key_says_it_cannot_authenticate(
    server: Server, procs: Processes, shared_dir: Path
) -> None:
    log = shared_dir / "a1.log"
    args = [
        sys.executable, "-m", "dkron_lab.cli", "agent", "--node-name", "a1",
        "--data-dir", str(shared_dir / "a1"), "--http-addr", f"127.0.0.1:{free_port()}",
        "--join", f"127.0.0.1:{server.raft_port}", "--encrypt", new_cluster_key(),
        "--log-level", "info",
    ]  # fmt: skip
    procs.start(args, env=_clean_env(), stderr=log)
    wait_for(
        lambda: "could not authenticate this node" in log.read_text(errors="replace"),
        20,
        "the agent's warning",
    )
    wait_for(lambda: server.logged("wrong or missing cluster key"), 5, "the server's warning")


# -- (h) removing the only voter -------------------------------------------------------------------


def test_removing_the_only_voter_is_refused_at_once(server: Server) -> None:
    started = time.monotonic()
    answer = httpx.delete(
        f"{server.url}/v1/raft/peers/{server.name}", headers=server.auth(), timeout=15
    )
    assert time.monotonic() - started < 2.0
    assert answer.status_code == 409, answer.text
    assert "only voter" in answer.json()["error"]
    assert len(_peers(server)) == 1


# -- TLS between nodes -------------------------------------------------------------------------


async def test_nodes_call_each_other_over_verified_tls(tmp_path: Path) -> None:
    """A server and an agent with --tls-cert/--tls-key/--tls-ca: heartbeats and runs go over
    https (the agent's internal API answers nothing over plain http)."""
    from dkron_lab.api.app import serve
    from dkron_lab.config import Config
    from dkron_lab.model.job import Job
    from dkron_lab.node import Node

    pki = make_pki(tmp_path)
    tls: dict[str, Any] = {"tls_cert": pki.cert, "tls_key": pki.key, "tls_ca": pki.ca}
    key, raft = new_cluster_key(), free_port()
    server = Node(
        Config(
            server=True, bootstrap_expect=1, node_name="s1", data_dir=tmp_path / "s1",
            http_addr=f"127.0.0.1:{free_port()}", bind_addr=f"127.0.0.1:{raft}",
            encrypt=key, **tls,
        )
    )  # fmt: skip
    agent_http = f"127.0.0.1:{free_port()}"
    agent = Node(
        Config(
            node_name="a1", data_dir=tmp_path / "a1", http_addr=agent_http,
            join=(f"127.0.0.1:{raft}",), tags={"role": "worker"}, encrypt=key, **tls,
        )
    )  # fmt: skip
    await server.start()
    https = [await serve(server)]
    try:
        await agent.start()
        https.append(await serve(agent))
        await _until(lambda: server.liveness.is_alive("a1"))
        config = {"command": "true", "shell": "true"}
        work = Job(
            name="work", schedule="@manually", executor="shell", executor_config=config,
            tags={"role": "worker"},
        )  # fmt: skip
        await server.jobs.set_job(work)
        await server.jobs.run_job("work")
        await _until(lambda: server.state.stats["work"].success_count == 1)
        async with httpx.AsyncClient(trust_env=False) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.post(f"http://{agent_http}/internal/v1/heartbeat", content=b"{}")
    finally:
        for http in https:
            http.stop()
        for node in (agent, server):
            if node._ready:
                await node.stop(graceful=False)


async def _until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not get there in time")
        await asyncio.sleep(0.05)
