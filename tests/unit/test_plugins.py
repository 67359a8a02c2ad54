"""The plugin contracts (``dkron_lab.plugins``) and the registry (``dkron_lab.registry``)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

import dkron_lab.plugins
import dkron_lab.registry
from dkron_lab.errors import InvalidJob, PluginNotFound
from dkron_lab.model.execution import Execution
from dkron_lab.plugins import (
    EXECUTOR_ENTRY_POINTS,
    PROCESSOR_ENTRY_POINTS,
    Emit,
    ExecutionRequest,
    Executor,
    ExecutorResult,
    OutputTail,
    Processor,
    apply_forward,
    config_bool,
)
from dkron_lab.registry import BUILTINS, PluginRegistry

EXECUTION = Execution(
    id="17-node-a",
    job_name="nightly",
    node_name="node-a",
    group=17,
    started_at=datetime(2024, 1, 1, tzinfo=UTC),
    success=True,
    output="original",
)


class Echo:
    """An executor that answers with its config's ``text``."""

    def __init__(self) -> None:
        self.closed = False

    async def execute(self, request: ExecutionRequest, emit: Emit) -> ExecutorResult:
        data = request.config.get("text", "").encode()
        emit(data)
        return ExecutorResult(success=True, output=data)

    def validate(self, config: Mapping[str, str]) -> None:
        if "text" not in config:
            raise ValueError('"text" is required')

    async def aclose(self) -> None:
        self.closed = True


class Tag:
    """A processor that appends its name and records the configs it got."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.configs: list[dict[str, str]] = []

    def process(self, execution: Execution, config: Mapping[str, str]) -> Execution:
        self.configs.append(dict(config))
        return dataclasses.replace(execution, output=f"{execution.output}+{self.name}")


class Broken:
    def process(self, execution: Execution, config: Mapping[str, str]) -> Execution:
        raise RuntimeError("boom")


def test_public_surface() -> None:
    assert sorted(dkron_lab.plugins.__all__) == [
        "EXECUTOR_ENTRY_POINTS",
        "Emit",
        "ExecutionRequest",
        "Executor",
        "ExecutorResult",
        "OutputTail",
        "PROCESSOR_ENTRY_POINTS",
        "Processor",
        "apply_forward",
        "config_bool",
        "config_duration",
    ]
    assert sorted(dkron_lab.registry.__all__) == ["BUILTINS", "PluginRegistry"]
    for module in (dkron_lab.plugins, dkron_lab.registry):
        for name in module.__all__:
            assert hasattr(module, name)


def test_the_contracts_import_no_plugin() -> None:
    # The cycle plugins -> executors -> plugins is gone: a fresh interpreter importing the
    # contracts loads neither a built-in plugin nor the registry.
    code = (
        "import sys, dkron_lab.plugins; "
        "print(sorted(m for m in sys.modules if m.startswith(('dkron_lab.executors', "
        "'dkron_lab.processors', 'dkron_lab.registry'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_builtins_are_loaded_as_entry_points() -> None:
    # Each built-in is a "module:attribute" reference, the form an entry point has.
    registry = PluginRegistry(entry_points=False)
    lookup = {EXECUTOR_ENTRY_POINTS: registry.executor, PROCESSOR_ENTRY_POINTS: registry.processor}
    assert sorted(BUILTINS) == sorted(lookup)
    for group, names in BUILTINS.items():
        for name, reference in names.items():
            target = importlib.metadata.EntryPoint(name=name, value=reference, group=group).load()
            assert type(lookup[group](name)) is target


def test_builtins_are_always_there() -> None:
    registry = PluginRegistry(entry_points=False)
    assert registry.executor_names == ("heartbeat", "http", "shell")
    assert registry.processor_names == ("files", "log", "syslog")
    assert isinstance(registry.executor("shell"), Executor)
    assert isinstance(registry.processor("log"), Processor)


def test_unknown_names_list_the_installed_ones() -> None:
    registry = PluginRegistry(entry_points=False)
    with pytest.raises(PluginNotFound) as raised:
        registry.executor("docker")
    assert str(raised.value) == "unknown executor 'docker'; installed: heartbeat, http, shell"
    with pytest.raises(PluginNotFound) as raised:
        registry.processor("slack")
    assert str(raised.value) == "unknown processor 'slack'; installed: files, log, syslog"


async def test_given_and_registered_plugins() -> None:
    echo = Echo()
    registry = PluginRegistry(executors={"echo": echo}, entry_points=False)
    registry.register_processor("tag", Tag("t"))
    assert registry.executor_names == ("echo", "heartbeat", "http", "shell")
    assert "tag" in registry.processor_names
    chunks: list[bytes] = []
    request = ExecutionRequest(job_name="j", execution_id="1-n", config={"text": "hi"})
    assert await registry.executor("echo").execute(request, chunks.append) == ExecutorResult(
        success=True, output=b"hi"
    )
    assert chunks == [b"hi"]
    await registry.aclose()
    assert echo.closed


def test_register_rejects_what_is_not_a_plugin() -> None:
    registry = PluginRegistry(entry_points=False)
    with pytest.raises(TypeError):
        registry.register_executor("bad", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        registry.register_executor("cls", Echo)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        registry.register_processor("", Tag("x"))


def test_validate() -> None:
    registry = PluginRegistry(executors={"echo": Echo()}, entry_points=False)
    registry.validate("shell", {"command": "true"}, {"log": {"forward": "true"}})
    with pytest.raises(InvalidJob, match="executor is required.*echo, heartbeat, http, shell"):
        registry.validate("", {}, {})
    with pytest.raises(PluginNotFound, match="unknown executor 'nope'"):
        registry.validate("nope", {}, {})
    with pytest.raises(PluginNotFound, match="unknown processor 'nope'"):
        registry.validate("shell", {"command": "true"}, {"nope": {}})
    with pytest.raises(InvalidJob, match='"command" is required'):
        registry.validate("shell", {}, {})
    # A shared helper's refusal is given the plugin's name.
    with pytest.raises(InvalidJob, match="^files processor: 'forward' must be"):
        registry.validate("shell", {"command": "true"}, {"files": {"forward": "sure"}})
    with pytest.raises(InvalidJob, match="^shell executor: 'shell' must be"):
        registry.validate("shell", {"command": "true", "shell": "sure"}, {})
    # A third-party ValueError comes back as the API's InvalidJob.
    with pytest.raises(InvalidJob, match="executor 'echo': \"text\" is required"):
        registry.validate("echo", {}, {})


def test_run_processors_in_order_with_the_reporting_node() -> None:
    first, second = Tag("a"), Tag("b")
    registry = PluginRegistry(processors={"a": first, "b": second}, entry_points=False)
    processed = registry.run_processors(EXECUTION, {"b": {"k": "v"}, "a": {}}, "leader-1")
    assert processed.output == "original+b+a"
    assert second.configs == [{"k": "v", "reporting_node": "leader-1"}]
    assert first.configs == [{"reporting_node": "leader-1"}]


def test_failing_and_unknown_processors_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    registry = PluginRegistry(processors={"broken": Broken(), "tag": Tag("t")}, entry_points=False)
    processed = registry.run_processors(
        EXECUTION, {"broken": {}, "missing": {}, "tag": {}}, "leader"
    )
    assert processed.output == "original+t"
    assert "processor 'broken' failed; output kept" in caplog.text
    assert "processor 'missing' is not installed" in caplog.text


def test_output_tail() -> None:
    tail = OutputTail(5)
    for chunk in (b"ab", b"cd", b"efg"):
        tail.write(chunk)
    assert tail.getvalue() == b"cdefg" and tail.total == 7 and tail.truncated
    tail.write(b"0123456789")
    assert tail.getvalue() == b"56789"
    empty = OutputTail(0)
    empty.write(b"abc")
    assert empty.getvalue() == b"" and empty.truncated


def test_config_bool_and_forward() -> None:
    assert config_bool({"x": "True"}, "x") and not config_bool({"x": "0"}, "x")
    assert config_bool({}, "x", default=True)
    with pytest.raises(InvalidJob):
        config_bool({"x": "yes"}, "x")
    assert apply_forward(EXECUTION, {"forward": "t"}, "elsewhere") == EXECUTION
    assert apply_forward(EXECUTION, {}, "elsewhere").output == "elsewhere"


# --- entry points, from a real dist-info directory on sys.path ----------------------------------


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "dkron_lab_test_plugins.py").write_text(
        textwrap.dedent(
            """
            import dataclasses

            class Upper:
                def process(self, execution, config):
                    return dataclasses.replace(execution, output=execution.output.upper())

            class Hello:
                async def execute(self, request, emit):
                    raise NotImplementedError

            def make_hello():
                return Hello()

            instance = Hello()
            """
        )
    )
    dist_info = tmp_path / "dkron_lab_test_plugins-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dkron-lab-test-plugins\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [dkron_lab.executors]
            hello-class = dkron_lab_test_plugins:Hello
            hello-factory = dkron_lab_test_plugins:make_hello
            hello-instance = dkron_lab_test_plugins:instance
            shell = dkron_lab_test_plugins:Hello
            broken = dkron_lab_test_plugins_missing:Nothing

            [dkron_lab.processors]
            upper = dkron_lab_test_plugins:Upper
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_points_are_loaded(installed_plugins: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dkron_lab.registry")
    registry = PluginRegistry()
    for name in ("hello-class", "hello-factory", "hello-instance"):
        assert type(registry.executor(name)).__name__ == "Hello"
    # A built-in name is not taken over; a broken entry point is skipped, with a log.
    assert type(registry.executor("shell")).__name__ == "ShellExecutor"
    assert "broken" not in registry.executor_names
    assert "plugin 'broken'" in caplog.text and "failed to load" in caplog.text
    assert "plugin 'shell'" in caplog.text and "already taken" in caplog.text
    assert registry.run_processors(EXECUTION, {"upper": {}}, "n").output == "ORIGINAL"


def test_entry_points_can_be_turned_off(installed_plugins: Path) -> None:
    assert "hello-class" not in PluginRegistry(entry_points=False).executor_names
