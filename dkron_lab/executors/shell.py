"""The ``shell`` executor: runs a command as a child process (Dkron's shell executor).

Keys of ``executor_config`` (all strings; see docs/executors.md):

``command``    the command line (required). Split like a POSIX shell would (quotes, escapes) and
               executed directly, unless ``shell`` is true.
``shell``      ``"true"``: run ``/bin/sh -c <command>`` (pipes, ``&&``, variables, globs).
``env``        ``"K1=v1,K2=v2"`` added to the node's environment (less the node's own
               credentials: ``model.secrets.child_environment``). Reads show the values masked.
``cwd``        working directory.
``timeout``    Go duration (``30s``, ``1h30m``): past it the whole process group is killed.
``mem_limit``  size (``512MB``): when the resident memory of the command and its descendants goes
               over it, the whole process group is killed.
``cpu_limit_seconds``  CPU seconds (``"60"``, ``"2.5"``): when the CPU time used by the command
               and its descendants goes over it, the whole process group is killed.
``su``         ``user`` or ``user:group`` to run as (the node must run as root).
``payload``    base64 data written to the command's standard input.
``success_codes``  exit statuses that count as success, e.g. ``"0,3"`` (default ``"0"``).

The command always runs in a process group of its own, so a kill reaches its children too.
Standard output and error are merged; every chunk goes to ``emit`` and the last
``output_limit`` bytes are kept. Success means exit status 0, or one of ``success_codes``.
The result carries the CPU time and peak memory of the command's whole tree
(``executors.resources``); the tree is sampled every ``poll_interval``, and the limits are
checked at each sample.
``ENV_JOB_NAME`` (as Dkron), ``DKRON_JOB_NAME`` and ``DKRON_EXECUTION_ID`` are always set.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import grp
import logging
import math
import os
import pwd
import resource
import shlex
import signal
import subprocess
from collections.abc import Coroutine, Mapping
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psutil

from dkron_lab.errors import ExecutionError, InvalidJob, ValidationError
from dkron_lab.executors.resources import Sample, TreeMeter
from dkron_lab.model.execution import ResourceUsage
from dkron_lab.model.secrets import child_environment
from dkron_lab.model.units import parse_codes, parse_size
from dkron_lab.plugins import (
    Emit,
    ExecutionRequest,
    ExecutorResult,
    OutputTail,
    config_bool,
    config_duration,
)

__all__ = ["ShellCommand", "ShellExecutor", "cpu_limit_error", "parse_config", "parse_cpu_limit"]

logger = logging.getLogger(__name__)

FIRST_LOOK = 0.01
"""Seconds after the start of the first look at a command's own peak memory."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShellCommand:
    """A shell ``executor_config``, parsed and checked."""

    command: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    timeout: float | None = None
    timeout_text: str = ""
    mem_limit: int | None = None
    mem_limit_text: str = ""
    cpu_limit: float | None = None
    cpu_limit_text: str = ""
    user: str | None = None
    group: str | None = None
    stdin: bytes | None = None
    success_codes: frozenset[int] = frozenset({0})


def parse_config(config: Mapping[str, str]) -> ShellCommand:
    """Parse a shell ``executor_config``; ``InvalidJob`` says which key is wrong and why."""
    command = config.get("command", "")
    if not command.strip():
        raise InvalidJob('shell executor: "command" is required, e.g. {"command": "echo hello"}')
    timeout_text = config.get("timeout", "").strip()
    mem_text = config.get("mem_limit", "").strip()
    cpu_text = config.get("cpu_limit_seconds", "").strip()
    user, group = _parse_su(config.get("su", ""))
    return ShellCommand(
        command=command,
        argv=_argv(command, config_bool(config, "shell")),
        env=_parse_env(config.get("env", "")),
        cwd=config.get("cwd") or None,
        timeout=config_duration(config, "timeout", executor="shell"),
        timeout_text=timeout_text,
        mem_limit=_parse_mem_limit(mem_text),
        mem_limit_text=mem_text,
        cpu_limit=parse_cpu_limit(cpu_text, executor="shell"),
        cpu_limit_text=cpu_text,
        user=user,
        group=group,
        stdin=_parse_payload(config.get("payload", "")),
        success_codes=_parse_success_codes(config.get("success_codes", "")),
    )


def _parse_success_codes(text: str) -> frozenset[int]:
    try:
        return parse_codes(text, low=0, high=255) or frozenset({0})
    except ValueError:
        raise InvalidJob(
            f'shell executor: "success_codes" {text!r} must list exit statuses from 0 to 255, '
            'e.g. "0,3"'
        ) from None


@lru_cache(maxsize=4096)  # shlex is slow, and every save of a job validates its command
def _argv(command: str, use_shell: bool) -> tuple[str, ...]:
    if use_shell:
        return ("/bin/sh", "-c", command)
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise InvalidJob(
            f'shell executor: cannot split "command" {command!r} into words ({exc}); '
            'close the quotes, or set "shell": "true"'
        ) from None
    if not argv:
        raise InvalidJob('shell executor: "command" has no words to run')
    return argv


def _parse_env(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise InvalidJob(
                f'shell executor: "env" entry {entry!r} is not NAME=value; write '
                '"env": "K1=v1,K2=v2" (values cannot contain commas)'
            )
        pairs.append((name.strip(), value))
    return tuple(pairs)


def _parse_mem_limit(text: str) -> int | None:
    if not text:
        return None
    try:
        limit = parse_size(text)
    except ValidationError as exc:
        raise InvalidJob(f'shell executor: "mem_limit": {exc}') from None
    if limit <= 0:
        raise InvalidJob(
            f'shell executor: "mem_limit" must be positive, not {text!r}; leave it out for none'
        )
    return limit


def parse_cpu_limit(text: str, *, executor: str) -> float | None:
    """The ``cpu_limit_seconds`` value: a positive number of CPU seconds, or ``None`` when
    empty; anything else raises ``InvalidJob`` saying what to write."""
    if not text:
        return None
    try:
        limit = float(text)
    except ValueError:
        limit = math.nan
    if not math.isfinite(limit) or limit <= 0:
        raise InvalidJob(
            f'{executor} executor: "cpu_limit_seconds" must be a positive number of CPU seconds, '
            f'e.g. "60" or "2.5", not {text!r}; leave it out for no limit'
        )
    return limit


def cpu_limit_error(executor: str, used: float, limit_text: str) -> str:
    """The error of a run killed for going over ``cpu_limit_seconds``."""
    return (
        f"{executor}: CPU limit hit: the run used {used:.2f} CPU seconds, over "
        f"cpu_limit_seconds={limit_text}; it was killed with all its processes"
    )


def _parse_su(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, sep, group = text.partition(":")
    if not user or (sep and not group) or ":" in group:
        raise InvalidJob(f'shell executor: "su" must be "user" or "user:group", not {text!r}')
    return user, group or None


def _parse_payload(text: str) -> bytes | None:
    if not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidJob(
            'shell executor: "payload" is not valid base64; encode it, e.g. with `base64 -w0`'
        ) from None


class ShellExecutor:
    """Runs ``command`` as a child process in its own process group.

    ``poll_interval`` is how often (seconds) the command's tree is sampled for its resource use
    and checked against ``mem_limit`` and ``cpu_limit_seconds``; a run shorter than that is
    never sampled. ``kill_grace`` is how long a killed command's output pipe may stay open (held
    by a process that escaped the kill) before it is dropped. ``account=False`` (for the overhead
    benchmark) samples nothing and reports no usage unless a limit needs the samples.
    """

    def __init__(
        self, *, poll_interval: float = 0.5, kill_grace: float = 5.0, account: bool = True
    ) -> None:
        self._poll_interval = poll_interval
        self._kill_grace = kill_grace
        self._account = account

    def validate(self, config: Mapping[str, str]) -> None:
        parse_config(config)

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        tail = OutputTail(request.output_limit)

        def sink(chunk: bytes) -> None:
            tail.write(chunk)
            emit(chunk)

        try:
            spec = parse_config(request.config)
            child = await _Child.start(spec, request, sink)
        except (ValidationError, ExecutionError) as exc:
            return ExecutorResult(success=False, output=b"", error=str(exc))
        kill_reason, meter = await self._supervise(child, spec)
        usage = None if meter is None else meter.finish(child.rusage())
        if tail.truncated:
            logger.info(
                "job %r: %r printed %d bytes of output; the last %d are kept",
                request.job_name,
                spec.command,
                tail.total,
                request.output_limit,
            )
        output = tail.getvalue()
        return _result(child.popen.returncode, kill_reason, output, spec.success_codes, usage)

    async def _supervise(self, child: _Child, spec: ShellCommand) -> tuple[str, TreeMeter | None]:
        """Wait for the command to end; return why it was killed (or ``""``) and the meter of
        its tree (``None`` when not measured)."""
        guard = watch = meter = None
        if self._account or spec.mem_limit is not None or spec.cpu_limit is not None:
            meter = TreeMeter(child.popen.pid)
            watch = _Watch(child.popen, meter, spec, self._poll_interval)
            guard = watch.over if spec.mem_limit or spec.cpu_limit else None
        try:
            done, _ = await asyncio.wait(
                {child.finished} if guard is None else {child.finished, guard},
                timeout=spec.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:
            await child.abort(self._kill_grace)
            raise
        finally:
            if watch is not None:
                watch.stop()
        if child.finished in done:
            return "", meter
        await child.abort(self._kill_grace)
        if guard is not None and guard in done:
            return _limit_error(spec, guard.result()), meter
        return (
            f"shell: Job '{spec.command}' execution time exceeding defined timeout "
            f"{spec.timeout_text}. Job was killed"
        ), meter


def _limit_error(spec: ShellCommand, sample: Sample) -> str:
    if spec.cpu_limit is not None and sample.cpu_seconds > spec.cpu_limit:
        return cpu_limit_error("shell", sample.cpu_seconds, spec.cpu_limit_text)
    return (
        f"shell: Job '{spec.command}' memory usage {sample.rss_bytes} bytes exceeding "
        f"defined limit {spec.mem_limit_text} ({spec.mem_limit} bytes). Job was killed"
    )


class _Child:
    """A running command, watched without a thread.

    asyncio's subprocess support on Python 3.11 starts a thread per child to wait for it; here
    the exit is watched through a pidfd registered with the event loop, and the output pipe is
    read by a plain protocol that hands every chunk to ``sink``. ``finished`` resolves once the
    process has been reaped *and* its output is closed.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        output: asyncio.ReadTransport,
        stdin: asyncio.WriteTransport | None,
        exited: asyncio.Future[resource.struct_rusage | None],
        finished: asyncio.Future[Any],
    ) -> None:
        self.popen = popen
        self.finished = finished
        self._exited = exited
        self._output = output
        self._stdin = stdin

    @classmethod
    async def start(cls, spec: ShellCommand, request: ExecutionRequest, sink: Emit) -> _Child:
        popen = _popen(spec, request)
        loop = asyncio.get_running_loop()
        exited = _exit_future(loop, popen)
        closed: asyncio.Future[None] = loop.create_future()
        try:
            output, stdin = await _connect(loop, popen, spec.stdin, _Output(sink, closed))
        except BaseException:
            _kill_tree(popen)
            raise
        return cls(popen, output, stdin, exited, asyncio.gather(exited, closed))

    def rusage(self) -> resource.struct_rusage | None:
        """What ``wait4`` said of the command (``None``: not reaped here, or not yet)."""
        if not self._exited.done() or self._exited.cancelled():
            return None
        return self._exited.result()

    async def abort(self, grace: float) -> None:
        """Kill the command's tree, then wait up to ``grace`` seconds for its output to close."""
        _kill_tree(self.popen)
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.abort()
        await asyncio.wait({self.finished}, timeout=grace)
        if not self.finished.done():
            logger.warning(
                "shell: pid %d was killed but its output pipe is still open (held by a process "
                "outside its group); output is no longer read",
                self.popen.pid,
            )
            self._output.close()


class _Output(asyncio.Protocol):
    def __init__(self, sink: Emit, closed: asyncio.Future[None]) -> None:
        self._sink = sink
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        self._sink(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


async def _connect(
    loop: asyncio.AbstractEventLoop,
    popen: subprocess.Popen[bytes],
    payload: bytes | None,
    output_protocol: asyncio.Protocol,
) -> tuple[asyncio.ReadTransport, asyncio.WriteTransport | None]:
    """Hand the child's pipes to the loop; on failure, close the ones no transport owns."""
    assert popen.stdout is not None
    output = None
    try:
        output, _ = await loop.connect_read_pipe(lambda: output_protocol, popen.stdout)
        if payload is None:
            return output, None
        assert popen.stdin is not None
        stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, popen.stdin)
    except BaseException:
        if output is None:
            popen.stdout.close()
        if popen.stdin is not None:
            popen.stdin.close()
        raise
    # Not awaited: the payload is written in the background while the output is read, so a
    # big payload cannot deadlock with a command that prints before it reads.
    stdin.write(payload)
    stdin.close()
    return output, stdin


def _popen(spec: ShellCommand, request: ExecutionRequest) -> subprocess.Popen[bytes]:
    env = child_environment(os.environ, request.hidden_values)
    env.update(spec.env)
    env["ENV_JOB_NAME"] = request.job_name
    env["DKRON_JOB_NAME"] = request.job_name
    env["DKRON_EXECUTION_ID"] = request.execution_id
    try:
        return subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL if spec.stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            cwd=spec.cwd,
            env=env,
            # Always a group of its own, so that one killpg reaches every child.
            start_new_session=True,
            **_credentials(spec),
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        # ValueError: an embedded NUL byte in the command, env or cwd.
        reason = _start_error(spec, exc)
        raise ExecutionError(f"shell: cannot start {spec.command!r}: {reason}") from None


def _start_error(spec: ShellCommand, exc: Exception) -> str:
    if not isinstance(exc, OSError):
        return str(exc)
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason if spec.user is None else f"{reason} (su needs the node to run as root)"
    what = "working directory" if exc.filename == spec.cwd else "program"
    return f"{what} {exc.filename!r}: {reason}"


def _credentials(spec: ShellCommand) -> dict[str, Any]:
    if spec.user is None:
        return {}
    try:
        account = pwd.getpwnam(spec.user)
    except KeyError:
        raise ExecutionError(f"shell: su: no user {spec.user!r} on this node") from None
    try:
        gid = account.pw_gid if spec.group is None else grp.getgrnam(spec.group).gr_gid
    except KeyError:
        raise ExecutionError(f"shell: su: no group {spec.group!r} on this node") from None
    # As Dkron (Go's Credential): the user's uid and gid, and no supplementary groups.
    return {"user": account.pw_uid, "group": gid, "extra_groups": []}


def _exit_future(
    loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]
) -> asyncio.Future[resource.struct_rusage | None]:
    """A future of the command's resource use as ``wait4`` gives it; when it resolves the
    process is reaped and ``popen.returncode`` set."""
    exited: asyncio.Future[resource.struct_rusage | None] = loop.create_future()

    def reap() -> None:
        usage = _reap(popen)  # the process has exited: this returns at once
        if not exited.done():
            exited.set_result(usage)

    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        # No pidfd (not Linux >= 5.3): poll instead; still no thread.
        _background(loop, _poll_exit(popen, exited))
        return exited

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        reap()

    loop.add_reader(pidfd, on_exit)
    return exited


_BACKGROUND: set[asyncio.Task[None]] = set()


def _background(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]) -> None:
    task = loop.create_task(coroutine)
    _BACKGROUND.add(task)  # a task nobody references can be garbage-collected mid-flight
    task.add_done_callback(_BACKGROUND.discard)


def _reap(popen: subprocess.Popen[bytes], *, block: bool = True) -> resource.struct_rusage | None:
    """Reap the exited command with ``wait4``, which also says what it (and every descendant
    it waited for) used; ``None`` if it was already reaped elsewhere. Without ``block``, a
    command still running is left alone (``popen.returncode`` stays ``None``)."""
    try:
        pid, status, usage = os.wait4(popen.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        popen.wait()
        return None
    if pid == 0:
        return None
    popen.returncode = os.waitstatus_to_exitcode(status)
    return usage


async def _poll_exit(
    popen: subprocess.Popen[bytes], exited: asyncio.Future[resource.struct_rusage | None]
) -> None:
    delay = 0.001
    while True:
        usage = _reap(popen, block=False)
        if popen.returncode is not None:
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    if not exited.done():
        exited.set_result(usage)


class _Watch:
    """Samples the command's tree on the event loop's timers (a task per run would cost more
    than a short run's whole accounting): the command's own peak memory after 10, 20, 40 ...
    ms, then the whole tree every ``interval``. ``over`` resolves with the first sample over
    ``mem_limit`` or ``cpu_limit_seconds``."""

    def __init__(
        self, popen: subprocess.Popen[bytes], meter: TreeMeter, spec: ShellCommand, interval: float
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._popen = popen
        self._meter = meter
        self._spec = spec
        self._interval = interval
        self.over: asyncio.Future[Sample] = self._loop.create_future()
        self._timer = self._loop.call_later(FIRST_LOOK, self._look, FIRST_LOOK)

    def _look(self, waited: float) -> None:
        if self._popen.returncode is None:
            self._meter.look()
        if waited * 2 < self._interval:
            self._timer = self._loop.call_later(waited, self._look, waited * 2)
        else:
            self._timer = self._loop.call_later(self._interval - waited, self._sample)

    def _sample(self) -> None:
        # Once the command is reaped, the rest of its tree may still hold the output open.
        sample = self._meter.sample(root_alive=self._popen.returncode is None)
        spec = self._spec
        if (spec.mem_limit is not None and sample.rss_bytes > spec.mem_limit) or (
            spec.cpu_limit is not None and sample.cpu_seconds > spec.cpu_limit
        ):
            self.over.set_result(sample)
        else:
            self._timer = self._loop.call_later(self._interval, self._sample)

    def stop(self) -> None:
        self._timer.cancel()


def _kill_tree(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group, and its descendants that left the group."""
    descendants: list[psutil.Process] = []
    if popen.returncode is None:
        with suppress(psutil.Error):
            descendants = psutil.Process(popen.pid).children(recursive=True)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    for child in descendants:
        with suppress(psutil.Error):
            child.kill()


def _result(
    returncode: int | None,
    kill_reason: str,
    output: bytes,
    success_codes: frozenset[int],
    usage: ResourceUsage | None,
) -> ExecutorResult:
    if kill_reason:
        return ExecutorResult(success=False, output=output, error=kill_reason, usage=usage)
    if returncode in success_codes:
        return ExecutorResult(success=True, output=output, usage=usage)
    error = _exit_text(returncode)
    return ExecutorResult(success=False, output=output, error=error, usage=usage)


def _exit_text(returncode: int | None) -> str:
    """Go's wording, as Dkron reports it: ``exit status 3``, ``signal: killed``."""
    if returncode is None or returncode >= 0:
        return f"exit status {returncode}"
    name = signal.strsignal(-returncode) or f"signal {-returncode}"
    return f"signal: {name.lower()}"
