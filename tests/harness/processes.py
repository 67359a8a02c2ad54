"""Child processes that a test starts and that are always killed, by pid, even when it fails:
``Processes`` starts them, each ``Child`` is signalled by pid and read line by line."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

__all__ = ["Child", "Processes"]


class Child:
    """A process started by ``Processes``; signalled by pid, its stdout read line by line.

    A daemon thread moves stdout lines into a queue, so ``readline`` can time out instead of
    blocking a test for ever on a child that hangs.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = list(args)
        log = open(stderr, "ab") if stderr is not None else None  # noqa: SIM115 - closed below
        try:
            self._popen = subprocess.Popen(
                self.args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=cwd,
                env=None if env is None else dict(env),
                text=True,
                bufsize=1,
            )
        finally:
            if log is not None:
                log.close()  # the child has its own descriptor
        self.pid = self._popen.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"child-{self.pid}", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        stdin = self._popen.stdin
        if stdin is None or stdin.closed:
            raise EOFError(f"child {self.pid} has no open stdin")
        stdin.write(line.rstrip("\n") + "\n")
        stdin.flush()

    def readline(self, timeout: float = 10.0) -> str:
        """The next stdout line without its newline; ``TimeoutError``, or ``EOFError`` once the
        child closed stdout."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            message = f"child {self.pid} {self.args[:3]} printed nothing for {timeout:g} s"
            raise TimeoutError(message) from None
        if line is None:
            self._lines.put(None)  # stay at end of file for later readers
            raise EOFError(f"child {self.pid} closed its stdout (exit code {self.returncode})")
        return line

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def pause(self) -> None:
        """SIGSTOP: the process stops dead, its sockets stay open (a hung server)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(signal.SIGCONT)

    def kill(self) -> int:
        """kill -9 by pid (a paused child too), reap it, close the pipes. Idempotent."""
        self.signal(signal.SIGKILL)
        code = self._popen.wait()
        self._close()
        return code

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if the child is still there after ``timeout``."""
        self.signal(signal.SIGCONT)  # a stopped process does not handle SIGTERM
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)
        return self.kill()

    def _read(self) -> None:
        stdout = self._popen.stdout
        assert stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us by kill()
            for line in stdout:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _close(self) -> None:
        for stream in (self._popen.stdin, self._popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(timeout=5)


class Processes:
    """Starts child processes; on exit kills every one it started, by pid, even on failure.

    ::

        with Processes() as procs:
            agent = procs.start(["dkron-lab", "agent", "--server"], stderr=tmp_path / "a.log")
            agent.pause(); agent.resume(); agent.kill()
    """

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
    ) -> Child:
        """Start ``args`` (stdin and stdout piped; stderr appended to a file or inherited)."""
        child = Child(args, env=env, cwd=cwd, stderr=stderr)
        self._children.append(child)
        return child

    @property
    def children(self) -> list[Child]:
        return list(self._children)

    def close(self) -> None:
        """kill -9 every child still running and reap it."""
        for child in self._children:
            child.kill()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
