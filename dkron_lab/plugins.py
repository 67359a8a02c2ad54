"""Executor and processor plugins: the two contracts and the registry that holds them.

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

``PluginRegistry`` holds the built-ins (executors ``shell`` and ``http``; processors ``log``,
``files`` and ``syslog``), the ones given to it, and third-party ones published under the entry
point groups ``dkron_lab.executors`` and ``dkron_lab.processors``.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from dkron_lab.errors import InvalidJob, PluginNotFound, ValidationError
from dkron_lab.model.execution import Execution
from dkron_lab.model.units import parse_duration

__all__ = [
    "EXECUTOR_ENTRY_POINTS",
    "PROCESSOR_ENTRY_POINTS",
    "Emit",
    "ExecutionRequest",
    "Executor",
    "ExecutorResult",
    "OutputTail",
    "PluginRegistry",
    "Processor",
    "apply_forward",
    "config_bool",
    "config_duration",
]

logger = logging.getLogger(__name__)

EXECUTOR_ENTRY_POINTS = "dkron_lab.executors"
PROCESSOR_ENTRY_POINTS = "dkron_lab.processors"

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
    not repeated in ``output``: the runner puts the two together."""

    success: bool
    output: bytes
    error: str = ""


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


_Plugin = TypeVar("_Plugin")


class PluginRegistry:
    """Executors and processors by name.

    Built-ins are always there; ``executors`` / ``processors`` given here are added on top (and
    may replace a built-in); then entry points are loaded unless ``entry_points`` is false. An
    entry point may name an instance, a class or a factory (called with no arguments); one that
    fails to load, or whose name is already taken, is logged and skipped.
    """

    def __init__(
        self,
        *,
        executors: Mapping[str, Executor] | None = None,
        processors: Mapping[str, Processor] | None = None,
        entry_points: bool = True,
    ) -> None:
        self._executors: dict[str, Executor] = _builtin_executors()
        self._processors: dict[str, Processor] = _builtin_processors()
        for name, executor in (executors or {}).items():
            self.register_executor(name, executor)
        for name, processor in (processors or {}).items():
            self.register_processor(name, processor)
        if entry_points:
            _load_entry_points(EXECUTOR_ENTRY_POINTS, Executor, self._executors)
            _load_entry_points(PROCESSOR_ENTRY_POINTS, Processor, self._processors)

    def register_executor(self, name: str, executor: Executor) -> None:
        self._executors[_checked_name(name)] = _checked(executor, Executor)

    def register_processor(self, name: str, processor: Processor) -> None:
        self._processors[_checked_name(name)] = _checked(processor, Processor)

    @property
    def executor_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._executors))

    @property
    def processor_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._processors))

    def executor(self, name: str) -> Executor:
        """The executor called ``name``; ``PluginNotFound`` lists the installed ones."""
        return _lookup("executor", name, self._executors)

    def processor(self, name: str) -> Processor:
        """The processor called ``name``; ``PluginNotFound`` lists the installed ones."""
        return _lookup("processor", name, self._processors)

    def validate(
        self,
        executor: str,
        executor_config: Mapping[str, str],
        processors: Mapping[str, Mapping[str, str]],
    ) -> None:
        """Save-time check of a job's plugins and their configs.

        Raises ``InvalidJob`` for a missing executor or a bad config value, ``PluginNotFound``
        for a name that is not installed.
        """
        if not executor:
            installed = ", ".join(self.executor_names)
            raise InvalidJob(f'executor is required: set "executor" to one of: {installed}')
        _validate_config("executor", executor, self.executor(executor), executor_config)
        for name, config in processors.items():
            _validate_config("processor", name, self.processor(name), config)

    def run_processors(
        self,
        execution: Execution,
        processors: Mapping[str, Mapping[str, str]],
        reporting_node: str,
    ) -> Execution:
        """Run the job's processors in the order of the mapping (the job's JSON order).

        Unlike Dkron, whose order is Go's random map order, chaining is deterministic. A
        processor that is not installed, raises, or returns something else than an Execution is
        logged and skipped: the execution goes on unchanged to the next one.
        """
        for name, config in processors.items():
            processor = self._processors.get(name)
            if processor is None:
                logger.warning(
                    "job %r: processor %r is not installed (installed: %s); skipped",
                    execution.job_name,
                    name,
                    ", ".join(self.processor_names),
                )
                continue
            execution = _run_processor(name, processor, execution, config, reporting_node)
        return execution

    async def aclose(self) -> None:
        """Release what the plugins hold (HTTP pools, sockets); each plugin is closed once."""
        plugins = {id(p): p for p in [*self._executors.values(), *self._processors.values()]}
        for plugin in plugins.values():
            close = getattr(plugin, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:
                logger.exception("closing plugin %r failed", plugin)


def _builtin_executors() -> dict[str, Executor]:
    # Imported here: the built-ins import this module for the contract.
    from dkron_lab.executors.http import HttpExecutor
    from dkron_lab.executors.shell import ShellExecutor

    return {"http": HttpExecutor(), "shell": ShellExecutor()}


def _builtin_processors() -> dict[str, Processor]:
    from dkron_lab.processors.files import FilesProcessor
    from dkron_lab.processors.log import LogProcessor
    from dkron_lab.processors.syslog import SyslogProcessor

    return {"files": FilesProcessor(), "log": LogProcessor(), "syslog": SyslogProcessor()}


def _checked_name(name: str) -> str:
    if not name or not isinstance(name, str):
        raise ValueError(f"a plugin name must be a non-empty string, not {name!r}")
    return name


def _checked(plugin: _Plugin, kind: type) -> _Plugin:
    if isinstance(plugin, type) or not isinstance(plugin, kind):
        raise TypeError(f"{plugin!r} is not an {kind.__name__}: it lacks the required method")
    return plugin


def _lookup(kind: str, name: str, plugins: Mapping[str, _Plugin]) -> _Plugin:
    try:
        return plugins[name]
    except KeyError:
        raise PluginNotFound(
            f"unknown {kind} {name!r}; installed: {', '.join(sorted(plugins))}"
        ) from None


def _validate_config(kind: str, name: str, plugin: object, config: Mapping[str, str]) -> None:
    validate = getattr(plugin, "validate", None)
    if validate is None:
        return
    try:
        validate(config)
    except ValidationError:
        raise
    except (ValueError, TypeError) as exc:
        # Third-party plugins may raise plain ValueErrors; give them the API's error type.
        raise InvalidJob(f"{kind} {name!r}: {exc}") from exc


def _run_processor(
    name: str,
    processor: Processor,
    execution: Execution,
    config: Mapping[str, str],
    reporting_node: str,
) -> Execution:
    try:
        processed = processor.process(execution, {**config, "reporting_node": reporting_node})
    except Exception:
        logger.exception(
            "job %r execution %s: processor %r failed; output kept",
            execution.job_name,
            execution.id,
            name,
        )
        return execution
    if not isinstance(processed, Execution):
        logger.error(
            "job %r: processor %r returned %r instead of an Execution; skipped",
            execution.job_name,
            name,
            type(processed).__name__,
        )
        return execution
    return processed


def _load_entry_points(group: str, kind: type, into: dict[str, Any]) -> None:
    for entry_point in importlib.metadata.entry_points(group=group):
        if entry_point.name in into:
            logger.warning(
                "skipping %s plugin %r from %s: that name is already taken",
                group,
                entry_point.name,
                entry_point.value,
            )
            continue
        try:
            into[entry_point.name] = _instantiate(entry_point.load(), kind)
        except Exception:
            logger.exception(
                "skipping %s plugin %r from %s: it failed to load",
                group,
                entry_point.name,
                entry_point.value,
            )


def _instantiate(target: object, kind: type) -> Any:
    """An entry point's target as a plugin: an instance as is, a class or factory called."""
    if not isinstance(target, type) and isinstance(target, kind):
        return target
    if not callable(target):
        raise TypeError(f"{target!r} is neither an {kind.__name__} nor a factory of one")
    return _checked(target(), kind)
