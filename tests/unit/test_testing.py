"""``dkron_lab.testing``, the pytest plugin that ships with the package: its helpers, its
fixtures (a real one-node server among them), and its registration under ``pytest11``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import psutil
import pytest

from dkron_lab.testing import DkronNode, FakeClock, install_plugin, one_node, wait_for


async def test_fake_clock_wakes_a_sleeper_only_when_advanced_past_its_instant(
    fake_clock: FakeClock,
) -> None:
    woken: list[bool] = []

    async def sleeper() -> None:
        await fake_clock.sleep_until(fake_clock.now() + timedelta(seconds=10))
        woken.append(True)

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    fake_clock.advance(9)
    await asyncio.sleep(0)
    assert not woken and fake_clock.sleepers == 1
    fake_clock.advance(timedelta(seconds=1))
    await task
    assert woken and fake_clock.sleepers == 0


def test_wait_for_returns_the_first_truthy_answer_or_names_what_did_not_happen() -> None:
    answers = iter([None, 0, "yes"])
    assert wait_for(lambda: next(answers), 5, "no answer") == "yes"
    with pytest.raises(TimeoutError, match="nothing came within 0.1 s"):
        wait_for(lambda: None, 0.1, "nothing came")


def test_install_plugin_makes_an_entry_point_that_a_new_process_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = {"dkron_lab.executors": {"echo2": "echo2_plugin:Echo"}}
    install_plugin(tmp_path, "echo2_plugin", "class Echo: ...\n", group, monkeypatch=monkeypatch)
    probe = (
        "from importlib.metadata import entry_points\n"
        "print([e.load().__name__ for e in entry_points(group='dkron_lab.executors') "
        "if e.name == 'echo2'])"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert found.stdout.strip() == "['Echo']"


def test_dkron_node_serves_authenticated_requests_and_runs_a_job(dkron_node: DkronNode) -> None:
    leader = f"{dkron_node.url}/v1/leader"
    assert httpx.get(leader, trust_env=False).status_code == 401
    with dkron_node.client() as client:
        assert client.leader()["Name"] == "node1"
        job = {"name": "hello", "schedule": "@manually", "executor": "shell"}
        client.put_job(job | {"executor_config": {"command": "echo hi"}})
        client.run_job("hello", wait=True)
        ran = wait_for(lambda: client.executions("hello"), 30, "no execution of hello")
    assert ran[0]["success"] and ran[0]["output"].strip() == "hi"


def test_one_node_kills_its_process_by_pid_on_exit(tmp_path: Path) -> None:
    with one_node(tmp_path, token="secret") as node:
        assert node.token == "secret" and psutil.pid_exists(node.pid)
        assert node.data_dir.is_dir() and node.log.exists()
    assert not psutil.pid_exists(node.pid)


def test_the_plugin_is_registered_under_pytest11_and_autoloaded(tmp_path: Path) -> None:
    registered = {e.name: e.value for e in entry_points(group="pytest11")}
    assert registered.get("dkron_lab") == "dkron_lab.testing"
    (tmp_path / "test_uses_fixtures.py").write_text(
        textwrap.dedent(
            """
            def test_fake_clock(fake_clock):
                assert fake_clock.now().year == 2026
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},  # without PYTEST_DISABLE_PLUGIN_AUTOLOAD or addopts
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_no_two_test_files_share_a_basename() -> None:
    """pytest imports test files by basename (no packages): a second file of the same name
    stops the whole run at collection."""
    tests = Path(__file__).resolve().parents[1]
    names = Counter(path.name for path in tests.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
