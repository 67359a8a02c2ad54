"""Executor and processor plugins: the two contracts, and the helpers plugins share.

An **executor** runs one execution of a job on this node and reports how it went::

    class Executor(Protocol):
        async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult: ...

- ``request.config`` is the job's ``executor_config`` (string to string, as in Dkron).
- ``emit(chunk)`` streams live output; it is called with each chunk as it arrives.
- The result keeps only the *tail* of the output, at most ``request.output_limit`` bytes.
- A command that fails is a result with ``success=False`` and a reason in ``error``, never an
  exception. Raise only for bugs. Cancelling the task running ``execute`` (node shutdown) must
  stop the work before the ``CancelledError`` propagates.

A **processor** rewrites a finished Execution before it is stored (Dkron's ``forward`` switch
decides whether the output is kept or replaced by a placeholder)::

    class Processor(Protocol):
        def process(self, execution: Execution, config: Mapping[str, str]) -> Execution: ...

Optional members, looked up with ``getattr``, on either kind of plugin:

- ``validate(config) -> None`` raises ``InvalidJob`` when a job is saved with bad keys or values;
- ``async aclose() -> None`` releases pools and sockets when the node stops.

Third-party plugins are published under the entry point groups ``EXECUTOR_ENTRY_POINTS`` and
``PROCESSOR_ENTRY_POINTS``. ``dkron_lab.registry.PluginRegistry`` holds them with the built-ins;
this module knows no plugin, so the plugins (built-in or not) can import it freely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from dkron_lab.errors import InvalidJob, ValidationError
from dkron_lab.model.execution import Execution, ResourceUsage
from dkron_lab.model.units import parse_duration

__all__ = [
    "EXECUTOR_ENTRY_POINTS",
    "PROCESSOR_ENTRY_POINTS",
    "Emit",
    "ExecutionRequest",
    "Executor",
    "ExecutorResult",
    "OutputTail",
    "Processor",
    "apply_forward",
    "config_bool",
    "config_duration",
]

EXECUTOR_ENTRY_POINTS = "dkron_lab.executors"
"""The entry point group a package publishes its executors under."""
PROCESSOR_ENTRY_POINTS = "dkron_lab.processors"
"""The entry point group a package publishes its processors under."""

Emit = Callable[[bytes], None]
"""Live output: called with each chunk of output as it arrives."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRequest:
    """What an executor is asked to run: one execution of ``job_name``."""

    job_name: str
    execution_id: str
    config: Mapping[str, str]
    output_limit: int = 256_000
    hidden_values: frozenset[str] = frozenset()
    """The node's own credentials (API token, cluster key): an executor that starts a process
    builds its environment with ``model.secrets.child_environment`` so that none reaches it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorResult:
    """How an execution went. ``output`` is the tail of the output (at most the request's
    ``output_limit`` bytes); ``error`` says why it failed and is ``""`` on success. The error is
    not repeated in ``output``: the runner puts the two together. ``usage`` is what the run's
    processes used, for an executor that measures it (``None``: not measured)."""

    success: bool
    output: bytes
    error: str = ""
    usage: ResourceUsage | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs executions of jobs whose ``executor`` is this plugin's name."""

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        """Run ``request``; stream output through ``emit``; never raise for a failed command."""
        ...


@runtime_checkable
class Processor(Protocol):
    """Rewrites a finished execution before it is stored."""

    def process(self, execution: Execution, config: Mapping[str, str]) -> Execution:
        """Return the execution to store. ``config`` is the job's ``processors[name]`` plus
        ``reporting_node``: the name of the node running the processor."""
        ...


class OutputTail:
    """The last ``limit`` bytes written to it: memory stays bounded however much is written."""

    __slots__ = ("_buffer", "_limit", "total")

    def __init__(self, limit: int) -> None:
        self._buffer = bytearray()
        self._limit = max(0, limit)
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if self._limit == 0:
            return
        if len(data) >= self._limit:
            self._buffer[:] = data[-self._limit :]
            return
        self._buffer += data
        excess = len(self._buffer) - self._limit
        if excess > 0:
            del self._buffer[:excess]

    def getvalue(self) -> bytes:
        return bytes(self._buffer)

    @property
    def truncated(self) -> bool:
        return self.total > self._limit


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def config_bool(config: Mapping[str, str], key: str, *, default: bool = False) -> bool:
    """A boolean config value, spelled as Go's ``strconv.ParseBool`` accepts (``true``, ``1``,
    ``f``, ...). Missing or empty gives ``default``; anything else raises ``InvalidJob``."""
    text = config.get(key, "")
    if text == "":
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidJob(f'{key!r} must be "true" or "false", not {text!r}')


def config_duration(config: Mapping[str, str], key: str, *, executor: str) -> float | None:
    """A Go duration config value in seconds (``"30s"``, ``"1h30m"``); missing or empty:
    ``None``. Anything else, or a duration that is not positive, raises ``InvalidJob``."""
    text = config.get(key, "").strip()
    if not text:
        return None
    try:
        seconds = parse_duration(text).total_seconds()
    except ValidationError as exc:
        raise InvalidJob(f'{executor} executor: "{key}": {exc}') from None
    if seconds <= 0:
        raise InvalidJob(
            f'{executor} executor: "{key}" must be positive, not {text!r}; leave it out for none'
        )
    return seconds


def apply_forward(execution: Execution, config: Mapping[str, str], placeholder: str) -> Execution:
    """Dkron's ``forward`` switch: the execution as it is when ``forward`` is true, else with its
    output replaced by ``placeholder`` (saying where the output went)."""
    if config_bool(config, "forward"):
        return execution
    return replace(execution, output=placeholder)
