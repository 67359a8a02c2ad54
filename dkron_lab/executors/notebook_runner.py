"""The notebook executor's runner: the child process ``python -m
dkron_lab.executors.notebook_runner <exchange.json>`` that the ``notebook`` executor starts
(supervised by the shell executor). It alone imports nbclient: it reads the plan from the
exchange file, starts the kernel, runs the cells (one line of output per finished cell), saves
the executed notebook, stops the kernel and writes its report back into the exchange file.
Why a child process at all: ``dkron_lab.executors.notebook``'s docstring.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dkron_lab.executors.notebook import cell_tags, inject_parameters, safe_name

if TYPE_CHECKING:
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbformat import NotebookNode

__all__: list[str] = []

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_KERNEL_LOG_TAIL = 4000


class _RunError(Exception):
    """The notebook cannot be run; the message is the execution's error."""


def _say(text: str) -> None:
    print(text, flush=True)


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


class _Runner:
    """One run of one notebook: prepare, execute, save, report."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        self.plan = plan
        self.path = Path(plan["path"])
        self.output = Path(plan["output"])
        self.current: int | None = None
        self.cell_started = 0.0
        self.numbers: dict[int, int] = {}

    async def run(self) -> dict[str, Any]:
        try:
            nb = _read_notebook(self.path)
            kernel = self._prepare(nb)
        except _RunError as exc:
            return {"success": False, "error": str(exc)}
        self.numbers = _code_cell_numbers(nb)
        _say(f"running {self.path} with kernel {kernel}: {len(self.numbers)} code cells")
        with tempfile.TemporaryFile() as kernel_log:
            error, block = await self._execute(nb, kernel, kernel_log)
        error = self._save(nb, kernel, error)
        if block:
            _say(block)
        return {"success": not error, "error": error}

    def _prepare(self, nb: NotebookNode) -> str:
        cwd = Path(self.plan["cwd"])
        if not cwd.is_dir():
            raise _RunError(f"notebook: working directory {str(cwd)!r} is not a directory")
        kernelspec = nb.metadata.get("kernelspec", {})
        kernel = self.plan["kernel"] or kernelspec.get("name") or "python3"
        language = _kernel_language(kernel)
        if self.plan["parameters"]:
            if language.lower() != "python":
                raise _RunError(
                    f"notebook: parameters are injected as Python, but kernel {kernel!r} runs "
                    f'{language}; leave "parameters" out or use a Python kernel'
                )
            inject_parameters(nb, self.plan["parameters"])
        return kernel

    async def _execute(self, nb: NotebookNode, kernel: str, log: IO[bytes]) -> tuple[str, str]:
        """Run every cell; return the error ("" on success) and the block that ends the output."""
        from jupyter_client.manager import AsyncKernelManager
        from nbclient.exceptions import CellExecutionError, DeadKernelError

        manager = AsyncKernelManager(kernel_name=kernel, connection_file=self._connection_file())
        client = self._client(nb, manager)
        timeout = self.plan["timeout"]
        expired = False
        try:
            async with asyncio.timeout(timeout) as deadline:
                await client.async_execute(stdout=log, stderr=log)
        except CellExecutionError:
            return self._cell_error(nb)
        except Exception as exc:
            # The total timeout cancels nbclient mid-cell, which nbclient reports as a dead
            # kernel; the per-cell timeout raises a TimeoutError of its own.
            expired = deadline.expired() or isinstance(exc, TimeoutError)
            if isinstance(exc, DeadKernelError) and not expired:
                return self._where("the kernel died"), _tail(log)
            if not expired:
                return f"notebook: kernel {kernel!r}: {type(exc).__name__}: {exc}", _tail(log)
        finally:
            await _stop_kernel(client, manager)
        if expired:
            return self._where(f"timed out after {self.plan['timeout_text']}"), ""
        return "", _last_text(nb)

    def _connection_file(self) -> str:
        """In Jupyter's runtime dir, where kernel tools look (else it would go to /tmp)."""
        from jupyter_core.paths import jupyter_runtime_dir
        from jupyter_core.utils import ensure_dir_exists

        runtime = jupyter_runtime_dir()
        ensure_dir_exists(runtime, mode=0o700)
        name = f"kernel-dkron-lab-{safe_name(self.plan['execution_id'])}-{os.getpid()}.json"
        return os.path.join(runtime, name)

    def _client(self, nb: NotebookNode, manager: AsyncKernelManager) -> NotebookClient:
        from nbclient import NotebookClient

        timeout = self.plan["timeout"]
        return NotebookClient(
            nb,
            km=manager,
            timeout=None if timeout is None else math.ceil(timeout),
            resources={"metadata": {"path": self.plan["cwd"]}},
            on_cell_execute=self._on_cell_execute,
            on_cell_executed=self._on_cell_executed,
        )

    def _on_cell_execute(self, cell: NotebookNode, cell_index: int) -> None:
        self.current = cell_index
        self.cell_started = time.monotonic()

    def _on_cell_executed(
        self, cell: NotebookNode, cell_index: int, execute_reply: Mapping[str, Any]
    ) -> None:
        status = "ok" if execute_reply["content"]["status"] == "ok" else "failed"
        elapsed = time.monotonic() - self.cell_started
        _say(f"{self._cell_name(cell_index)} {status} ({elapsed:.1f}s)")

    def _cell_name(self, index: int) -> str:
        return f"cell {self.numbers.get(index, '?')}/{len(self.numbers)}"

    def _where(self, what: str) -> str:
        if self.current is None:
            return f"notebook: {what} while starting the kernel"
        return f"notebook: {what} while running {self._cell_name(self.current)}"

    def _cell_error(self, nb: NotebookNode) -> tuple[str, str]:
        index = self.current
        errors = [] if index is None else _error_outputs(nb.cells[index])
        if index is None or not errors:
            return self._where("a cell raised"), ""
        ename, evalue = errors[-1].get("ename", "Error"), errors[-1].get("evalue", "")
        traceback = _plain("\n".join(errors[-1].get("traceback", [])))
        error = f"notebook: {self._cell_name(index)} raised {ename}: {evalue}"
        return error, f"{ename}: {evalue}\n{traceback}"

    def _save(self, nb: NotebookNode, kernel: str, error: str) -> str:
        """Save the executed notebook, whatever the outcome; return the error, now or before."""
        import nbformat

        nb.metadata["dkron_lab"] = {
            "job": self.plan["job"],
            "execution_id": self.plan["execution_id"],
            "input_path": str(self.path),
            "kernel": kernel,
            "parameters": self.plan["parameters"],
            "success": not error,
            "error": error,
        }
        partial = self.output.with_name(f".{self.output.name}.{os.getpid()}.partial")
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, partial)  # type: ignore[no-untyped-call]
            os.replace(partial, self.output)
        except OSError as exc:
            with suppress(OSError):
                partial.unlink()
            reason = f"cannot save the executed notebook to {str(self.output)!r}: {exc.strerror}"
            _say(reason)
            return f"{error}; {reason}" if error else f"notebook: {reason}"
        _say(f"executed notebook saved to {self.output}")
        return error


def _read_notebook(path: Path) -> NotebookNode:
    import nbformat

    try:
        notebook: NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    except FileNotFoundError:
        raise _RunError(
            f'notebook: no notebook at {str(path)!r} on this node; check "path"'
        ) from None
    except OSError as exc:
        raise _RunError(f"notebook: cannot read {str(path)!r}: {exc.strerror}") from None
    except Exception as exc:  # nbformat raises many kinds for a file that is not a notebook
        raise _RunError(f"notebook: {str(path)!r} is not a valid notebook: {exc}") from None
    return notebook


def _kernel_language(kernel: str) -> str:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    specs = KernelSpecManager()
    try:
        language: str = specs.get_kernel_spec(kernel).language
    except NoSuchKernel:
        installed = ", ".join(sorted(specs.find_kernel_specs())) or "none"
        raise _RunError(
            f'notebook: no kernel {kernel!r} on this node (installed: {installed}); set "kernel"'
        ) from None
    return language


def _code_cell_numbers(nb: NotebookNode) -> dict[int, int]:
    """Cell index -> 1-based number among the cells nbclient will run."""
    runnable = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and cell.source.strip()
        and "skip-execution" not in cell_tags(cell)
    ]
    return {index: number for number, index in enumerate(runnable, start=1)}


def _error_outputs(cell: NotebookNode) -> list[Mapping[str, Any]]:
    return [output for output in cell.get("outputs", []) if output["output_type"] == "error"]


def _text_of(cell: NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "text/plain" in output.get("data", {}):
            parts.append(output["data"]["text/plain"] + "\n")
    return _plain("".join(parts))


def _last_text(nb: NotebookNode) -> str:
    """The text output of the last code cell that has any, without its final newline."""
    for cell in reversed(nb.cells):
        if cell.cell_type == "code" and (text := _text_of(cell)):
            return text.removesuffix("\n")
    return ""


def _tail(log: IO[bytes]) -> str:
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - _KERNEL_LOG_TAIL))
    text = log.read().decode("utf-8", errors="replace").strip()
    return f"kernel log (last lines):\n{_plain(text)}" if text else ""


async def _stop_kernel(client: NotebookClient, manager: AsyncKernelManager) -> None:
    if client.kc is not None:
        client.kc.stop_channels()
    try:
        if manager.has_kernel:
            await manager.shutdown_kernel(now=True)
    except Exception as exc:  # still ours to kill below
        _say(f"stopping the kernel failed: {exc}")
    _kill_descendants()


def _kill_descendants() -> None:
    """Kill whatever the kernel left behind, so nothing outlives the run or holds its output."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.Error):
            child.kill()


def _main() -> None:
    import warnings

    # The runner's output is the execution's output: library warnings would only be noise.
    warnings.simplefilter("ignore")
    exchange = Path(sys.argv[1])
    plan = json.loads(exchange.read_text())
    report = asyncio.run(_Runner(plan).run())
    exchange.write_text(json.dumps(report))
    sys.exit(0 if report["success"] else 1)


if __name__ == "__main__":
    _main()
