"""The shell executor against real processes."""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace

import psutil
import pytest

from dkron_lab.errors import InvalidJob
from dkron_lab.executors.shell import ShellExecutor, parse_config
from dkron_lab.plugins import ExecutionRequest, Executor, ExecutorResult


def request(config: Mapping[str, str], *, output_limit: int = 256_000) -> ExecutionRequest:
    return ExecutionRequest(
        job_name="nightly",
        execution_id="1700000000000000000-node-a",
        config=config,
        output_limit=output_limit,
    )


class Chunks:
    """An ``emit`` that records what it was given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.arrived = asyncio.Event()

    def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.arrived.set()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


async def run(config: Mapping[str, str], **kwargs: int) -> tuple[ExecutorResult, Chunks]:
    chunks = Chunks()
    result = await ShellExecutor(poll_interval=0.1).execute(request(config, **kwargs), chunks)
    # What a run used is checked in tests/unit/executors/test_resources.py.
    return replace(result, usage=None), chunks


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_gone(pids: list[int], within: float = 2.0) -> bool:
    """Whether every pid is dead within ``within`` seconds: a SIGKILLed process closes its
    files (ending our read) a moment before the kernel turns it into a zombie."""
    deadline = time.monotonic() + within
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids a test learns about; any still alive at the end are killed."""
    found: list[int] = []
    yield found
    for pid in found:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_is_an_executor() -> None:
    assert isinstance(ShellExecutor(), Executor)


async def test_echo_succeeds_and_streams() -> None:
    result, chunks = await run({"command": "echo hello world"})
    assert result == ExecutorResult(success=True, output=b"hello world\n", error="")
    assert chunks.data == b"hello world\n"


async def test_non_zero_exit_fails_and_keeps_output() -> None:
    result, _ = await run({"command": "echo partial >&2; exit 3", "shell": "true"})
    assert not result.success
    assert result.output == b"partial\n"  # stderr is merged into the output
    assert result.error == "exit status 3"


async def test_success_codes_decide_which_exit_statuses_succeed() -> None:
    three = {"command": "exit 3", "shell": "true", "success_codes": "0, 3"}
    assert (await run(three))[0].success
    zero = await run({**three, "command": "exit 0", "success_codes": "3"})
    assert not zero[0].success and zero[0].error == "exit status 0"


async def test_a_timeout_after_the_payload_was_written_kills_cleanly() -> None:
    payload = base64.b64encode(b"hi").decode()
    config = {"command": "cat >/dev/null; sleep 30", "shell": "true", "payload": payload}
    result, _ = await run({**config, "timeout": "1s"})
    assert not result.success and "timeout" in result.error


@pytest.mark.parametrize("codes", ["abc", "0,256", "-1", "1.5"])
def test_bad_success_codes_are_refused_at_save_time(codes: str) -> None:
    with pytest.raises(InvalidJob, match='"success_codes"'):
        parse_config({"command": "true", "success_codes": codes})


async def test_exec_without_shell_splits_quotes_and_has_no_shell_features() -> None:
    result, _ = await run({"command": "printf '%s|' \"a b\" 'c d' $HOME"})
    assert result.output == b"a b|c d|$HOME|"


async def test_env_and_job_variables() -> None:
    command = 'echo "$FOO|$BAZ|$ENV_JOB_NAME|$DKRON_JOB_NAME|$DKRON_EXECUTION_ID"'
    result, _ = await run({"command": command, "shell": "1", "env": "FOO=bar,BAZ=x=y,"})
    assert result.output == b"bar|x=y|nightly|nightly|1700000000000000000-node-a\n"


async def test_env_keeps_the_node_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_LEVEL_VAR", "inherited")
    result, _ = await run({"command": "printenv NODE_LEVEL_VAR", "env": "OTHER=1"})
    assert result.output == b"inherited\n"


async def test_payload_goes_to_stdin() -> None:
    payload = base64.b64encode(b"hello payload").decode()
    result, _ = await run({"command": "cat", "payload": payload})
    assert result.output == b"hello payload"


async def test_large_payload_does_not_deadlock_with_output() -> None:
    data = os.urandom(1024 * 1024)
    result, chunks = await run(
        {"command": "cat", "payload": base64.b64encode(data).decode()}, output_limit=len(data)
    )
    assert result.success
    assert chunks.data == data


async def test_cwd(tmp_path: os.PathLike[str]) -> None:
    result, _ = await run({"command": "pwd", "cwd": str(tmp_path)})
    assert result.output.decode().strip() == str(tmp_path)


async def test_missing_cwd_fails_with_the_reason(tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "nope")
    result, _ = await run({"command": "pwd", "cwd": missing})
    assert not result.success
    assert "working directory" in result.error and missing in result.error


async def test_command_not_found_fails_with_the_reason() -> None:
    result, _ = await run({"command": "no-such-program-dkron-lab --flag"})
    assert not result.success
    assert result.output == b""
    assert "'no-such-program-dkron-lab'" in result.error
    assert "No such file or directory" in result.error


async def test_nul_byte_fails_instead_of_raising() -> None:
    result, _ = await run({"command": "echo a\x00b"})
    assert not result.success
    assert "null byte" in result.error


async def test_output_keeps_the_last_bytes_only() -> None:
    script = "import sys; sys.stdout.write('a' * (1024 * 1024 - 1000) + 'b' * 1000)"
    result, chunks = await run({"command": f'{sys.executable} -c "{script}"'}, output_limit=5000)
    assert result.success
    assert result.output == b"a" * 4000 + b"b" * 1000
    assert len(chunks.data) == 1024 * 1024  # everything was streamed


async def test_timeout_kills_the_group_grandchildren_included(pids: list[int]) -> None:
    started = time.monotonic()
    result, chunks = await run(
        {"command": "sleep 30 & echo $$ $!; sleep 30", "shell": "true", "timeout": "1s"}
    )
    elapsed = time.monotonic() - started
    pids.extend(int(pid) for pid in chunks.data.split())
    assert len(pids) == 2
    assert not result.success
    assert result.error == (
        "shell: Job 'sleep 30 & echo $$ $!; sleep 30' execution time exceeding defined "
        "timeout 1s. Job was killed"
    )
    assert 0.9 < elapsed < 3
    assert all_gone(pids)


async def test_timeout_without_shell() -> None:
    started = time.monotonic()
    result, _ = await run({"command": "sleep 30", "timeout": "500ms"})
    assert "exceeding defined timeout 500ms" in result.error
    assert time.monotonic() - started < 2.5


async def test_grandchild_that_left_the_group_is_killed_too(pids: list[int]) -> None:
    # setsid puts the grandchild in a session of its own: killpg alone would miss it.
    command = "setsid sleep 30 & echo $!; sleep 30"
    result, chunks = await run({"command": command, "shell": "true", "timeout": "1s"})
    pids.extend(int(pid) for pid in chunks.data.split())
    assert not result.success
    assert pids and all_gone(pids)


async def test_output_held_by_an_escaped_process_is_dropped_after_the_grace(
    pids: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    # A double fork in a new session escapes both the group and the tree: the kill cannot
    # reach it, but the execution must still end, without leaking the pipe.
    command = "setsid sh -c 'sleep 30 & echo $!'; sleep 30"
    executor = ShellExecutor(kill_grace=0.3)
    chunks = Chunks()
    fds_before = open_fds()
    started = time.monotonic()
    result = await executor.execute(
        request({"command": command, "shell": "true", "timeout": "500ms"}), chunks
    )
    pids.extend(int(pid) for pid in chunks.data.split())
    assert "exceeding defined timeout 500ms" in result.error
    assert time.monotonic() - started < 2
    assert "output pipe is still open" in caplog.text
    await asyncio.sleep(0.05)  # let the cancelled reader finish
    assert open_fds() == fds_before  # the pipe is not leaked


async def test_mem_limit_kills_a_memory_hog() -> None:
    script = "import time; data = b'x' * (300 << 20); time.sleep(30)"
    started = time.monotonic()
    result, _ = await run(
        {"command": f'{sys.executable} -c "{script}"', "mem_limit": "50MB", "timeout": "20s"}
    )
    assert not result.success
    assert "memory usage" in result.error
    assert "defined limit 50MB (52428800 bytes). Job was killed" in result.error
    assert time.monotonic() - started < 5


async def test_mem_limit_lets_a_small_command_finish() -> None:
    result, _ = await run({"command": "echo small", "mem_limit": "1GB"})
    assert result == ExecutorResult(success=True, output=b"small\n")


async def test_cancellation_kills_the_group(pids: list[int]) -> None:
    chunks = Chunks()
    config = {"command": "sleep 30 & echo $$ $!; wait", "shell": "true"}
    task = asyncio.ensure_future(ShellExecutor().execute(request(config), chunks))
    await asyncio.wait_for(chunks.arrived.wait(), 5)
    pids.extend(int(pid) for pid in chunks.data.split())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pids) == 2 and all_gone(pids)


@pytest.mark.skipif(os.geteuid() != 0, reason="su needs root")
async def test_su_runs_as_another_user() -> None:
    result, _ = await run({"command": "id -u", "su": "nobody"})
    assert result.output.strip() == str(pwd.getpwnam("nobody").pw_uid).encode()


async def test_su_unknown_user_fails() -> None:
    result, _ = await run({"command": "id -u", "su": "no-such-user-dkron-lab"})
    assert not result.success
    assert "no user 'no-such-user-dkron-lab'" in result.error


async def test_invalid_config_at_run_time_is_a_failed_result() -> None:
    result, _ = await run({"command": "echo", "timeout": "soon"})
    assert not result.success
    assert "timeout" in result.error


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({}, '"command" is required'),
        ({"command": "   "}, '"command" is required'),
        ({"command": "echo 'unclosed"}, "close the quotes"),
        ({"command": "echo", "timeout": "10"}, "invalid duration '10'"),
        ({"command": "echo", "timeout": "0s"}, "must be positive"),
        ({"command": "echo", "mem_limit": "lots"}, "invalid memory size"),
        ({"command": "echo", "shell": "yes"}, '\'shell\' must be "true" or "false"'),
        ({"command": "echo", "payload": "not base64!"}, "not valid base64"),
        ({"command": "echo", "env": "A=1,JUSTANAME"}, "'JUSTANAME' is not NAME=value"),
        ({"command": "echo", "su": "user:"}, '"user:group"'),
    ],
)
def test_validate_rejects(config: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidJob) as raised:
        ShellExecutor().validate(config)
    assert fragment in str(raised.value)


def test_parse_config_full() -> None:
    spec = parse_config(
        {
            "command": "echo hi",
            "shell": "true",
            "env": "A=1",
            "cwd": "/tmp",
            "timeout": "1m30s",
            "mem_limit": "1.5GB",
            "su": "nobody:nogroup",
            "payload": base64.b64encode(b"in").decode(),
        }
    )
    assert spec.argv == ("/bin/sh", "-c", "echo hi")
    assert spec.env == (("A", "1"),)
    assert (spec.cwd, spec.timeout, spec.mem_limit) == ("/tmp", 90.0, int(1.5 * 1024**3))
    assert (spec.user, spec.group, spec.stdin) == ("nobody", "nogroup", b"in")
