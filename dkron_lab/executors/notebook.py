"""The ``notebook`` executor: runs a Jupyter notebook top to bottom with a kernel, papermill-style.

Keys of ``executor_config`` (all strings; see docs/executors.md):

``path``         the ``.ipynb`` to run, an absolute path on the target node (required).
``kernel``       kernel name; default the notebook's ``metadata.kernelspec.name``, else ``python3``.
``parameters``   a JSON object. Its entries become ``name = <Python literal>`` lines of a new cell
                 tagged ``injected-parameters``, placed right after the cell tagged
                 ``parameters`` (at the top when there is none).
``timeout``      Go duration: limit on the whole run, kernel start included; also on each cell.
``output_path``  where the executed notebook is saved: a template with ``{job}``,
                 ``{execution_id}``, ``{date}``, ``{time}`` (UTC) and ``{notebook}``; relative to
                 the notebook's folder, and it must stay inside that folder (no ``..`` out of
                 it, no absolute path elsewhere): the node writes the file, and a job's author
                 must not pick any file the node can write. Default: ``DEFAULT_OUTPUT_PATH``, a
                 folder ``dkron-lab-notebooks/`` beside the notebook.
``cwd``          the kernel's working directory; default the notebook's folder.
``cpu_limit_seconds``  CPU seconds (``"600"``): when the runner, the kernel and whatever they
                 started have used more, all of them are killed (checked every
                 ``ShellExecutor`` sample).

The result carries the CPU time and peak memory of the runner and everything under it, the
kernel included (``executors.resources``).

**Why a child process.** The node does not run nbclient itself: it starts ``python -m
dkron_lab.executors.notebook_runner`` (the *runner*), supervised by the shell executor, and the
runner starts the kernel. In the node's process nbclient would replace the node's SIGINT and
SIGTERM handlers and register an ``atexit`` hook for every run, and a notebook's outputs (plots,
tables) would be held in the node's memory. In a child, a wedged runner or kernel costs only a
kill: the runner enforces ``timeout`` itself (and still saves the partial notebook and stops the
kernel); if it has not ended ``stop_grace`` seconds later, the shell executor kills it and every
process under it, the kernel included. Cancelling the execution (node shutdown) kills the same
tree. The price is one Python start-up per run, small beside a kernel's.

The runner's standard output is the execution's output: one line per finished cell
(``cell 3/7 ok (0.2s)``), where the executed notebook went, then the failing cell's error and
traceback (ANSI colours stripped) or, on success, the text output of the last code cell that has
any. The parent hands it its plan in a JSON file, which the runner overwrites with its verdict, so
the reason for a failure does not have to be parsed back out of the output.
"""

from __future__ import annotations

import asyncio
import json
import keyword
import os
import re
import shlex
import string
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dkron_lab.clock import Clock, SystemClock
from dkron_lab.errors import InvalidJob, ValidationError
from dkron_lab.executors.shell import ShellExecutor, cpu_limit_error, parse_cpu_limit
from dkron_lab.plugins import Emit, ExecutionRequest, ExecutorResult, config_duration

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = [
    "DEFAULT_OUTPUT_PATH",
    "OUTPUT_PLACEHOLDERS",
    "NotebookConfig",
    "NotebookExecutor",
    "cell_tags",
    "inject_parameters",
    "parse_config",
    "render_output_path",
    "render_parameters",
    "safe_name",
]

DEFAULT_OUTPUT_PATH = "dkron-lab-notebooks/{job}/{date}T{time}-{execution_id}.ipynb"
OUTPUT_PLACEHOLDERS = ("job", "execution_id", "date", "time", "notebook")
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"

_KEYS = ("path", "kernel", "parameters", "timeout", "output_path", "cwd", "cpu_limit_seconds")
_RUNNER = "dkron_lab.executors.notebook_runner"  # the child process, which alone imports nbclient
# The same rule as jupyter_client's kernelspec names.
_KERNEL_NAME = re.compile(r"^[a-z0-9._-]+$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True, kw_only=True)
class NotebookConfig:
    """A notebook job's ``executor_config``, checked and converted."""

    path: Path
    kernel: str | None
    parameters: Mapping[str, Any]
    timeout: float | None
    timeout_text: str
    output_path: str
    cwd: str | None
    cpu_limit: float | None = None
    cpu_limit_text: str = ""


def parse_config(config: Mapping[str, str]) -> NotebookConfig:
    """Check and convert ``config``; ``InvalidJob`` says which key is wrong and how to fix it."""
    unknown = sorted(set(config) - set(_KEYS))
    if unknown:
        raise InvalidJob(
            f"notebook executor: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the keys are: {', '.join(_KEYS)}"
        )
    timeout_text = config.get("timeout", "").strip()
    cpu_text = config.get("cpu_limit_seconds", "").strip()
    path = _parse_path(config.get("path", ""))
    output_path = _parse_template(config.get("output_path", "").strip() or DEFAULT_OUTPUT_PATH)
    _check_output_inside(output_path, path)
    return NotebookConfig(
        path=path,
        kernel=_parse_kernel(config.get("kernel", "").strip()),
        parameters=_parse_parameters(config.get("parameters", "")),
        timeout=config_duration(config, "timeout", executor="notebook"),
        timeout_text=timeout_text,
        output_path=output_path,
        cwd=_parse_cwd(config.get("cwd", "").strip()),
        cpu_limit=parse_cpu_limit(cpu_text, executor="notebook"),
        cpu_limit_text=cpu_text,
    )


def _check_output_inside(template: str, notebook: Path) -> None:
    """Refuse an ``output_path`` that leads out of the notebook's folder. Placeholder values
    cannot (``render_output_path`` makes each a plain file name), so the template decides."""
    root = Path(os.path.normpath(notebook.parent))
    sample = template.format_map(dict.fromkeys(OUTPUT_PLACEHOLDERS, "x"))
    target = Path(os.path.normpath(root / sample))
    if target == root or not target.is_relative_to(root):
        raise InvalidJob(
            f'notebook executor: "output_path" {template!r} leads to {str(target)!r}, outside '
            f"the notebook's folder {str(root)!r}: the executed notebook must be saved inside "
            "that folder; write a path relative to it without '..' (e.g. "
            f"{DEFAULT_OUTPUT_PATH!r}), or an absolute path that starts with {str(root)!r}"
        )


def _parse_path(text: str) -> Path:
    text = text.strip()
    if not text:
        raise InvalidJob(
            'notebook executor: "path" is required, e.g. {"path": "/srv/notebooks/report.ipynb"}'
        )
    if "\x00" in text:
        raise InvalidJob('notebook executor: "path" contains a NUL byte')
    path = Path(text)
    if not path.is_absolute():
        raise InvalidJob(
            f'notebook executor: "path" must be absolute, not {text!r}: a relative path would '
            "depend on the directory the target node was started in"
        )
    if path.suffix != ".ipynb":
        raise InvalidJob(f'notebook executor: "path" must name an .ipynb file, not {text!r}')
    return path


def _parse_kernel(text: str) -> str | None:
    if text and not _KERNEL_NAME.match(text):
        raise InvalidJob(
            f'notebook executor: "kernel" {text!r} is not a kernel name: use letters, digits, '
            "'.', '_' and '-' (`jupyter kernelspec list` shows the installed ones)"
        )
    return text or None


def _parse_parameters(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidJob(
            f'notebook executor: "parameters" is not valid JSON ({exc}); write a JSON object '
            'as a string, e.g. "{\\"region\\": \\"eu\\", \\"days\\": 7}"'
        ) from None
    if not isinstance(value, dict):
        raise InvalidJob(
            'notebook executor: "parameters" must be a JSON object of name: value, '
            f"not {type(value).__name__}"
        )
    bad = [name for name in value if not name.isidentifier() or keyword.iskeyword(name)]
    if bad:
        raise InvalidJob(
            f'notebook executor: "parameters" names {", ".join(map(repr, bad))} are not '
            "Python variable names"
        )
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} has no Python literal; send it as a string")


def _parse_template(template: str) -> str:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidJob(
            f'notebook executor: "output_path" {template!r}: {exc}; write {{{{ and }}}} '
            "for literal braces"
        ) from None
    known = ", ".join(f"{{{name}}}" for name in OUTPUT_PLACEHOLDERS)
    for _, field, _, _ in parsed:
        if field is not None and field not in OUTPUT_PLACEHOLDERS:
            raise InvalidJob(
                f'notebook executor: "output_path" has an unknown placeholder {{{field}}}; '
                f"the placeholders are {known}"
            )
    if any(spec or conversion for _, _, spec, conversion in parsed):
        raise InvalidJob(
            f'notebook executor: "output_path" placeholders take no format spec; use {known}'
        )
    if "\x00" in template:
        raise InvalidJob('notebook executor: "output_path" contains a NUL byte')
    return template


def _parse_cwd(text: str) -> str | None:
    if "\x00" in text:
        raise InvalidJob('notebook executor: "cwd" contains a NUL byte')
    return text or None


def render_parameters(parameters: Mapping[str, Any]) -> str:
    """The source of the injected cell: one ``name = <literal>`` line per parameter.

    Values are JSON-decoded, so ``repr`` always gives a Python literal (str, int, float, bool,
    None, list, dict) that evaluates back to the value: nothing in a value can become code.
    """
    lines = ["# Parameters", *(f"{name} = {value!r}" for name, value in parameters.items())]
    return "\n".join(lines) + "\n"


def inject_parameters(nb: NotebookNode, parameters: Mapping[str, Any]) -> int:
    """Insert the parameters cell into ``nb`` and return its index.

    As papermill: earlier injected cells are removed, and the new one goes right after the
    first cell tagged ``parameters`` (whose values it overrides), or first when none is tagged.
    """
    import nbformat

    nb.cells = [cell for cell in nb.cells if INJECTED_TAG not in cell_tags(cell)]
    tagged = [i for i, cell in enumerate(nb.cells) if PARAMETERS_TAG in cell_tags(cell)]
    position = tagged[0] + 1 if tagged else 0
    cell = nbformat.v4.new_code_cell(  # type: ignore[no-untyped-call]
        render_parameters(parameters), metadata={"tags": [INJECTED_TAG]}
    )
    nb.cells.insert(position, cell)
    return position


def cell_tags(cell: Mapping[str, Any]) -> list[str]:
    tags: list[str] = cell.get("metadata", {}).get("tags", [])
    return tags


def render_output_path(
    template: str, *, notebook: Path, job: str, execution_id: str, now: datetime
) -> Path:
    """Where the executed notebook goes: ``template`` filled in (each value made safe for a
    file name), taken relative to the notebook's folder unless it is absolute."""
    values = {
        "job": safe_name(job),
        "execution_id": safe_name(execution_id),
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H%M%S"),
        "notebook": safe_name(notebook.stem),
    }
    return notebook.parent / template.format_map(values)


def safe_name(value: str) -> str:
    return _UNSAFE.sub("_", value).lstrip(".") or "_"


class NotebookExecutor:
    """Runs the notebook at ``path`` with a kernel, in a runner process of its own.

    ``clock`` gives the ``{date}`` and ``{time}`` of ``output_path``. ``stop_grace`` is how long
    the runner may take, past ``timeout``, to save the notebook and stop its kernel before it is
    killed with everything under it. ``python`` runs the runner: it needs nbclient, nbformat and
    this package.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        stop_grace: float = 15.0,
        python: str = sys.executable,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._stop_grace = stop_grace
        self._python = python
        self._shell = ShellExecutor()

    def validate(self, config: Mapping[str, str]) -> None:
        parse_config(config)

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        try:
            config = parse_config(request.config)
        except ValidationError as exc:
            return ExecutorResult(success=False, output=b"", error=str(exc))
        loop = asyncio.get_running_loop()
        started = loop.time()
        plan = _plan(config, request, self._clock.now())
        with _exchange_file(plan) as exchange:
            runner = self._runner_request(request, exchange, config)
            ran = await self._shell.execute(runner, emit)
            report = _read_report(exchange)
        usage = ran.usage
        if report is not None:
            return ExecutorResult(
                success=report["success"], output=ran.output, error=report["error"], usage=usage
            )
        return ExecutorResult(
            success=False, output=ran.output, error=self._failure(config, ran, started), usage=usage
        )

    def _failure(self, config: NotebookConfig, ran: ExecutorResult, started: float) -> str:
        """Why the runner ended without a report."""
        loop = asyncio.get_running_loop()
        used = None if ran.usage is None else ran.usage.cpu_seconds
        if used is not None and config.cpu_limit is not None and used > config.cpu_limit:
            return cpu_limit_error("notebook", used, config.cpu_limit_text)
        if config.timeout is not None and loop.time() - started >= config.timeout:
            return (
                f"notebook: timed out after {config.timeout_text}, and the runner did not stop "
                f"within {self._stop_grace:g}s more; it was killed with its kernel"
            )
        return f"notebook: the runner ended without a result ({ran.error}); see the output"

    def _runner_request(
        self, request: ExecutionRequest, exchange: Path, notebook: NotebookConfig
    ) -> ExecutionRequest:
        timeout = notebook.timeout
        config = {
            # -P: the node's working directory must not shadow modules in the runner.
            "command": shlex.join([self._python, "-P", "-m", _RUNNER, str(exchange)]),
            "timeout": "" if timeout is None else f"{timeout + self._stop_grace}s",
            "cpu_limit_seconds": notebook.cpu_limit_text,
        }
        return ExecutionRequest(
            job_name=request.job_name,
            execution_id=request.execution_id,
            config=config,
            output_limit=request.output_limit,
            hidden_values=request.hidden_values,
        )


def _plan(config: NotebookConfig, request: ExecutionRequest, now: datetime) -> dict[str, Any]:
    """What the runner is told to do, as JSON-ready data."""
    folder = config.path.parent
    output = render_output_path(
        config.output_path,
        notebook=config.path,
        job=request.job_name,
        execution_id=request.execution_id,
        now=now,
    )
    return {
        "path": str(config.path),
        "kernel": config.kernel,
        "parameters": dict(config.parameters),
        "timeout": config.timeout,
        "timeout_text": config.timeout_text,
        "output": str(output),
        "cwd": str(folder / config.cwd) if config.cwd else str(folder),
        "job": request.job_name,
        "execution_id": request.execution_id,
    }


@contextmanager
def _exchange_file(plan: Mapping[str, Any]) -> Iterator[Path]:
    """A file holding ``plan`` for the runner, which replaces it with its report."""
    handle, name = tempfile.mkstemp(prefix="dkron-lab-notebook-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(plan, file)
    try:
        yield Path(name)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(name)


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not isinstance(report.get("success"), bool):
        return None
    return {"success": report["success"], "error": str(report.get("error", ""))}
