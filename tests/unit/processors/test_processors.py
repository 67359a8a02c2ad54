"""The built-in processors (log, files, syslog) with real loggers, files and sockets."""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dkron_lab.errors import InvalidJob
from dkron_lab.model.execution import Execution
from dkron_lab.plugins import Processor
from dkron_lab.processors.files import FilesProcessor, log_file_name
from dkron_lab.processors.log import LogProcessor
from dkron_lab.processors.syslog import SyslogProcessor
from dkron_lab.registry import PluginRegistry

EXECUTION = Execution(
    id="1700000000000000000-node-a",
    job_name="nightly",
    node_name="node-a",
    group=1700000000000000000,
    started_at=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    finished_at=datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC),
    success=True,
    output="line one\nline two",
)
FAILED = dataclasses.replace(EXECUTION, success=False)


@pytest.mark.parametrize("processor", [LogProcessor(), FilesProcessor(), SyslogProcessor()])
def test_builtins_are_processors(processor: object) -> None:
    assert isinstance(processor, Processor)


# --- log ----------------------------------------------------------------------------------------


def test_log_success_is_info_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dkron_lab.processors.log")
    processed = LogProcessor().process(EXECUTION, {"reporting_node": "leader"})
    assert processed.output == "Output in dkron log"
    [record] = caplog.records
    assert record.name == "dkron_lab.processors.log"
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "----- BEGIN OUTPUT job=nightly execution=1700000000000000000-node-a -----\n"
        "line one\nline two\n----- END OUTPUT -----"
    )


def test_log_failure_is_error_and_forwarded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dkron_lab.processors.log")
    processed = LogProcessor().process(FAILED, {"forward": "true"})
    assert processed == FAILED
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


# --- files --------------------------------------------------------------------------------------


def test_files_writes_and_replaces_with_the_path(tmp_path: Path) -> None:
    log_dir = tmp_path / "created" / "on" / "demand"
    processed = FilesProcessor().process(EXECUTION, {"log_dir": str(log_dir)})
    path = log_dir / "1700000000000000000-node-a.log"
    assert path.read_text() == "line one\nline two"
    assert processed.output == str(path)


def test_files_forward_keeps_the_output(tmp_path: Path) -> None:
    processed = FilesProcessor().process(EXECUTION, {"log_dir": str(tmp_path), "forward": "1"})
    assert processed.output == EXECUTION.output
    assert (tmp_path / "1700000000000000000-node-a.log").exists()


@pytest.mark.parametrize(
    ("execution_id", "name"),
    [
        ("17-node-a", "17-node-a.log"),
        ("17-../../etc/passwd", "17-.._.._etc_passwd.log"),
        ("..", "_...log"),
        ("17-nöde a", "17-n_de_a.log"),
    ],
)
def test_file_names_are_safe(execution_id: str, name: str) -> None:
    assert log_file_name(execution_id) == name
    assert "/" not in log_file_name(execution_id)


def test_files_unwritable_dir_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        FilesProcessor().process(EXECUTION, {"log_dir": str(blocker / "sub")})


# --- syslog -------------------------------------------------------------------------------------


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A Unix datagram socket standing in for /dev/log."""
    address = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(address)
        receiver.settimeout(5)
        yield address, receiver


async def test_syslog_sends_each_line_as_cron_info(
    syslog_socket: tuple[str, socket.socket],
) -> None:
    address, receiver = syslog_socket
    processor = SyslogProcessor(address=address)
    try:
        processed = processor.process(EXECUTION, {})
    finally:
        await processor.aclose()
    messages = [receiver.recv(4096), receiver.recv(4096)]
    # <78> = facility CRON (9) * 8 + INFO (6)
    assert messages == [
        b"<78>dkron: job=nightly execution=1700000000000000000-node-a: line one\x00",
        b"<78>dkron: job=nightly execution=1700000000000000000-node-a: line two\x00",
    ]
    assert processed.output == "Output in syslog"


async def test_syslog_failure_is_err_and_forward_keeps_output(
    syslog_socket: tuple[str, socket.socket],
) -> None:
    address, receiver = syslog_socket
    processor = SyslogProcessor(address=address)
    try:
        processed = processor.process(FAILED, {"forward": "true"})
    finally:
        await processor.aclose()
    assert receiver.recv(4096).startswith(b"<75>dkron: ")  # CRON * 8 + ERR (3)
    assert processed == FAILED


def test_syslog_without_a_socket_warns_and_keeps_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    processor = SyslogProcessor(address=str(tmp_path / "no-syslog-here"))
    processed = processor.process(EXECUTION, {"forward": "false"})
    assert processed == EXECUTION
    assert "does not exist" in caplog.text


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("processor", [LogProcessor(), FilesProcessor(), SyslogProcessor()])
def test_validate_forward(processor: LogProcessor) -> None:
    processor.validate({"forward": "true"})
    processor.validate({})
    with pytest.raises(InvalidJob, match="'forward' must be"):
        processor.validate({"forward": "yes please"})


def test_files_validate_rejects_an_empty_log_dir() -> None:
    with pytest.raises(InvalidJob, match="log_dir"):
        FilesProcessor().validate({"log_dir": " "})


# --- chaining through the registry --------------------------------------------------------------


def test_chain_order_is_the_mapping_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dkron_lab.processors.log")
    registry = PluginRegistry(entry_points=False)
    path = tmp_path / "1700000000000000000-node-a.log"

    files_first = registry.run_processors(
        EXECUTION, {"files": {"log_dir": str(tmp_path), "forward": "true"}, "log": {}}, "leader"
    )
    assert files_first.output == "Output in dkron log"
    assert path.read_text() == EXECUTION.output

    log_first = registry.run_processors(
        EXECUTION, {"log": {}, "files": {"log_dir": str(tmp_path)}}, "leader"
    )
    assert log_first.output == str(path)
    assert path.read_text() == "Output in dkron log"
