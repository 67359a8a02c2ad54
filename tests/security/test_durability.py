"""Issue 10, point 5: nothing acknowledged is ever lost, also when the disk is full.

Real ``dkron-lab agent`` processes. The full-disk test puts the data dir on a small tmpfs in a
private mount namespace (root and ``unshare`` needed; skipped otherwise): a holder process
keeps the namespace alive, the node runs inside it with ``nsenter``, and the test reaches the
tmpfs through ``/proc/<holder>/root``. On the code before the fix every create there answered
201 while the journal could not be written ("raft tick failed ... ENOSPC"), ``/health`` stayed
200, and after a kill -9 part of the acknowledged jobs were gone.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_lab.errors import InsufficientStorage
from dkron_lab.history import writer as history_module
from dkron_lab.history.duckdb import DuckDBHistory
from dkron_lab.model.execution import Execution, execution_id
from dkron_lab.testing import auth_headers, free_port, wait_for
from tests.harness import new_cluster_key

TOKEN = "durability-test-token-0123456789abcdef"
PADDING = "x" * 3000  # a job of ~3 KB: a small tmpfs fills within a few hundred creates


@dataclass
class Agent:
    """One single-server node, started (and killed) by pid."""

    data_dir: Path
    log: Path
    key: str
    prefix: list[str] = field(default_factory=list)  # e.g. nsenter into a mount namespace
    http_port: int = field(default_factory=free_port)
    raft_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        args = [sys.executable, "-m", "dkron_lab.cli", "agent", "--server", "--node-name", "s1"]
        args += ["--data-dir", str(self.data_dir), "--http-addr", f"127.0.0.1:{self.http_port}"]
        args += ["--bind-addr", f"127.0.0.1:{self.raft_port}", "--bootstrap-expect", "1"]
        args += ["--encrypt", self.key, "--api-token", TOKEN, "--log-level", "info"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        wait_for(self._healthy, 60, f"node on {self.data_dir} healthy (log: {self.log})")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"node exited with {self.process.returncode}: {self.log}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """kill -9 by pid and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers=auth_headers(TOKEN), timeout=15) as http:
        yield http


def _job(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": "true"},
        "metadata": {"padding": PADDING},
    }


def _job_names(client: httpx.Client, url: str) -> set[str]:
    names: set[str] = set()
    start = 0
    while True:
        page = client.get(f"{url}/v1/jobs", params={"_start": start, "_end": start + 500})
        assert page.status_code == 200, page.text
        batch = [job["name"] for job in page.json()]
        names.update(batch)
        if len(batch) < 500:
            return names
        start += 500


# -- a full disk --------------------------------------------------------------------------------


@dataclass
class Tmpfs:
    """A tmpfs mounted at ``mount`` in a private mount namespace kept by ``holder``."""

    holder: subprocess.Popen[bytes]
    mount: Path

    @property
    def outside(self) -> Path:
        """The mount point as this process reaches it (through the holder's root)."""
        return Path(f"/proc/{self.holder.pid}/root") / self.mount.relative_to("/")

    @property
    def enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--"]

    def free(self) -> int:
        stat = os.statvfs(self.outside)
        return stat.f_bavail * stat.f_frsize


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs in a mount namespace needs root")
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("unshare/nsenter (util-linux) are not installed")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    script = f"mount -t tmpfs -o size=8m,mode=0700 tmpfs {mount} && echo mounted && exec sleep 3600"
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().decode()
        if line.strip() != "mounted":
            pytest.skip(f"cannot mount a tmpfs in a mount namespace here: {line.strip()}")
        yield Tmpfs(holder, mount)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def _fill(fs: Tmpfs, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on the tmpfs."""
    filler = fs.outside / "filler"
    size = max(fs.free() - leave, 0)
    with open(filler, "wb") as out:
        out.write(b"\0" * size)
    return filler


def _create_until_refused(client: httpx.Client, url: str) -> tuple[list[str], list[str]]:
    """Create jobs until ten in a row are refused; (acknowledged, refused) names."""
    acknowledged: list[str] = []
    refused: list[str] = []
    in_a_row = 0
    for i in range(3000):
        name = f"full-{i:05d}"
        answer = client.post(f"{url}/v1/jobs", json=_job(name))
        assert answer.status_code in (201, 507), (answer.status_code, answer.text)
        if answer.status_code == 201:
            acknowledged.append(name)
            in_a_row = 0
            continue
        refused.append(name)
        in_a_row += 1
        if in_a_row == 10:
            return acknowledged, refused
    raise AssertionError("3000 creates were all accepted: the disk never filled")


@pytest.mark.slow
def test_full_disk_refuses_writes_keeps_every_acknowledged_one_and_recovers(
    tmpfs: Tmpfs, tmp_path: Path, client: httpx.Client
) -> None:
    data_dir = tmpfs.mount / "data"
    agent = Agent(data_dir, tmp_path / "full.log", new_cluster_key(), prefix=tmpfs.enter)
    agent.start()
    try:
        filler = _fill(tmpfs, leave=400_000)
        acknowledged, refused = _create_until_refused(client, agent.url)
        assert acknowledged and refused

        health = client.get(f"{agent.url}/health")
        assert health.status_code == 503
        assert str(data_dir) in health.json()["reason"]
        answer = client.post(f"{agent.url}/v1/jobs", json=_job("while-full"))
        assert answer.status_code == 507
        assert str(data_dir) in answer.json()["error"] or str(data_dir) in answer.text
        assert set(acknowledged) <= _job_names(client, agent.url)  # reads keep working

        filler.unlink()  # space comes back: no restart
        wait_for(
            lambda: client.get(f"{agent.url}/health").status_code == 200,
            15,
            "/health back to 200 after space was freed",
        )
        after = client.post(f"{agent.url}/v1/jobs", json=_job("after-recovery"))
        assert after.status_code == 201, after.text
        acknowledged.append("after-recovery")
    finally:
        agent.kill()

    log = agent.log.read_text(errors="replace")
    assert log.count("retrying every") <= 4, "the fault must be logged once, not per tick"
    copy = tmp_path / "copy"
    shutil.copytree(tmpfs.outside / "data", copy, symlinks=True)
    restarted = Agent(copy, tmp_path / "restarted.log", agent.key)
    restarted.start()
    try:
        missing = set(acknowledged) - _job_names(client, restarted.url)
        assert not missing, f"{len(missing)} acknowledged jobs lost: {sorted(missing)[:5]}"
    finally:
        restarted.kill()


# -- kill -9 at random points ------------------------------------------------------------------


class _Stream:
    """Writers sending creates and runs until stopped; what was acknowledged is recorded."""

    def __init__(self, url: str, prefix: str, writers: int = 4) -> None:
        self.url = url
        self.prefix = prefix
        self.created: list[str] = []
        self.ran: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(writers)
        ]

    def __enter__(self) -> _Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _write(self, writer: int) -> None:
        with httpx.Client(headers=auth_headers(TOKEN), timeout=10) as http:
            for i in range(100_000):
                if self._stop.is_set():
                    return
                name = f"{self.prefix}-{writer}-{i}"
                try:
                    if http.post(f"{self.url}/v1/jobs", json=_job(name)).status_code != 201:
                        continue
                    with self._lock:
                        self.created.append(name)
                    if i % 3 == 0 and http.post(f"{self.url}/v1/jobs/{name}/run").is_success:
                        with self._lock:
                            self.ran.append(name)
                except httpx.HTTPError:
                    return  # the node was killed


@pytest.mark.slow
def test_kill9_at_random_points_loses_no_acknowledged_write(
    tmp_path: Path, client: httpx.Client
) -> None:
    rng = random.Random(20261207)
    agent = Agent(tmp_path / "data", tmp_path / "kill9.log", new_cluster_key())
    created: list[str] = []
    ran: list[str] = []
    try:
        for iteration in range(3):
            agent.start()
            with _Stream(agent.url, f"k{iteration}") as stream:
                wait_for(lambda s=stream: len(s.created) >= 5, 30, "the first creates answered")
                time.sleep(rng.uniform(0.0, 1.5))  # a random point in the stream, not a wait
                agent.kill()
            created += stream.created
            ran += stream.ran
        agent.start()
        missing = set(created) - _job_names(client, agent.url)
        assert not missing, f"{len(missing)} acknowledged creates lost: {sorted(missing)[:5]}"
        for name in ran:
            wait_for(
                lambda n=name: client.get(f"{agent.url}/v1/jobs/{n}/executions").json(),
                15,
                f"an execution of the acknowledged run of {name}",
            )
    finally:
        agent.kill()
    assert created and ran


# -- the history writer on a full disk (in process, an injected failing commit) ---------------


def test_history_writer_keeps_a_batch_the_disk_refused_and_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = threading.Event()
    real = history_module._in_transaction

    def commit(cur: Any, writes: list[Any]) -> None:
        if full.is_set():  # what DuckDB raises when its WAL cannot grow
            raise RuntimeError('Failed to commit: Could not write file "x.wal": No space left')
        real(cur, writes)

    monkeypatch.setattr(history_module, "_in_transaction", commit)
    started = datetime(2026, 12, 7, tzinfo=UTC)
    runs = [
        Execution(
            id=execution_id(i, "s1"),
            job_name="j",
            node_name="s1",
            group=i,
            started_at=started + timedelta(seconds=i),
            finished_at=started + timedelta(seconds=i + 1),
            success=True,
            output="ok",
        )
        for i in range(1, 4)
    ]
    with DuckDBHistory(tmp_path / "history.duckdb", flush_interval=0.0) as history:
        history.storage_retry = 0.05
        full.set()
        for run in runs:
            history.append(run)
        with pytest.raises(InsufficientStorage, match=str(tmp_path)):
            history.flush()  # what a snapshot calls first: it must not go ahead
        assert history.storage_fault is not None
        full.clear()
        wait_for(lambda: history.storage_fault is None, 5, "the history writer recovered")
        history.flush()
        assert history.count("j") == 3  # kept, not dropped
