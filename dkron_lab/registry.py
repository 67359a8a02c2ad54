"""The plugin registry: executors and processors by name, built-in and third-party.

The contracts the plugins fulfil live in ``dkron_lab.plugins``; this module is the only one that
imports the plugins themselves, so the contracts never depend on their implementations.

**How plugins are found.** Every plugin, built-in or not, is a reference ``"module:attribute"``
resolved the same way: an ``importlib.metadata.EntryPoint`` is loaded, and its target (an
instance, a class or a factory taking no arguments) becomes the plugin.

- Built-ins come from one table, ``BUILTINS``, written as the entry points a package would
  declare. They are not read from the installed entry points because they must be there
  whatever is installed: in a source checkout that was never ``pip install``-ed, with
  ``entry_points=False`` (a node, a test or a benchmark that wants a closed set of plugins), and
  under a third-party package that publishes the same name. A built-in that fails to load is a
  bug of ours, so its error propagates.
- Third-party plugins, and built-ins that need not always be there (the ``notebook`` executor,
  declared in ``pyproject.toml``), are the entry points installed under
  ``dkron_lab.executors`` and ``dkron_lab.processors``. One that fails to load, or whose name is
  already taken, is logged and skipped: a broken package must not stop a node.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from dkron_lab.errors import InvalidJob, PluginNotFound, ValidationError
from dkron_lab.model.execution import Execution
from dkron_lab.plugins import EXECUTOR_ENTRY_POINTS, PROCESSOR_ENTRY_POINTS, Executor, Processor

__all__ = ["BUILTINS", "PluginRegistry"]

logger = logging.getLogger(__name__)

BUILTINS: Mapping[str, Mapping[str, str]] = {
    EXECUTOR_ENTRY_POINTS: {
        "heartbeat": "dkron_lab.executors.heartbeat:HeartbeatExecutor",
        "http": "dkron_lab.executors.http:HttpExecutor",
        "shell": "dkron_lab.executors.shell:ShellExecutor",
    },
    PROCESSOR_ENTRY_POINTS: {
        "files": "dkron_lab.processors.files:FilesProcessor",
        "log": "dkron_lab.processors.log:LogProcessor",
        "syslog": "dkron_lab.processors.syslog:SyslogProcessor",
    },
}
"""The built-in plugins: entry-point group, then name to ``"module:attribute"``."""

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
        self._executors: dict[str, Executor] = _builtins(EXECUTOR_ENTRY_POINTS, Executor)
        self._processors: dict[str, Processor] = _builtins(PROCESSOR_ENTRY_POINTS, Processor)
        for name, executor in (executors or {}).items():
            self.register_executor(name, executor)
        for name, processor in (processors or {}).items():
            self.register_processor(name, processor)
        if entry_points:
            _load_installed(EXECUTOR_ENTRY_POINTS, Executor, self._executors)
            _load_installed(PROCESSOR_ENTRY_POINTS, Processor, self._processors)

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
        for a name that is not installed. Every refusal of a config names its plugin
        (``shell executor: ...``), whether or not the plugin's own message does.
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


def _builtins(group: str, kind: type) -> dict[str, Any]:
    entry_points = (
        importlib.metadata.EntryPoint(name=name, value=value, group=group)
        for name, value in BUILTINS[group].items()
    )
    return {entry_point.name: _load(entry_point, kind) for entry_point in entry_points}


def _load_installed(group: str, kind: type, into: dict[str, Any]) -> None:
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
            into[entry_point.name] = _load(entry_point, kind)
        except Exception:
            logger.exception(
                "skipping %s plugin %r from %s: it failed to load",
                group,
                entry_point.name,
                entry_point.value,
            )


def _load(entry_point: importlib.metadata.EntryPoint, kind: type) -> Any:
    """An entry point's target as a plugin: an instance as is, a class or factory called."""
    target = entry_point.load()
    if not isinstance(target, type) and isinstance(target, kind):
        return target
    if not callable(target):
        raise TypeError(f"{target!r} is neither an {kind.__name__} nor a factory of one")
    return _checked(target(), kind)


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
    except ValidationError as exc:
        # Shared helpers (``config_bool``) cannot know whose config they read: say it here.
        message = str(exc)
        if f"{name} {kind}" in message or f"{kind} {name!r}" in message:
            raise
        raise type(exc)(f"{name} {kind}: {message}") from exc
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
