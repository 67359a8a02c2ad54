"""What a run used, on the wire: the execution JSON carries it, a record without it (Dkron, an
older node, an old Raft log) still decodes, and a finished execution applied through the
replicated state reaches the history's listeners with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dkron_lab import codec
from dkron_lab.model.execution import Execution, ResourceUsage
from dkron_lab.model.job import Job
from dkron_lab.state.machine import ExecutionFinished, JobState, command

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
USED = ResourceUsage(cpu_user_seconds=0.31, cpu_system_seconds=0.02, max_rss_bytes=62_914_560)


def finished(usage: ResourceUsage | None = USED) -> Execution:
    return Execution(
        id="1-n1",
        job_name="a",
        node_name="n1",
        group=1,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
        success=True,
        output="out",
    ).with_usage(usage)


def test_the_json_carries_the_three_fields_after_dkrons_and_back() -> None:
    record = codec.execution_to_json(finished())
    assert list(record)[-4:-1] == ["cpu_user_seconds", "cpu_system_seconds", "max_rss_bytes"]
    assert (record["cpu_user_seconds"], record["max_rss_bytes"]) == (0.31, 62_914_560)
    assert codec.execution_from_json(json.loads(json.dumps(record))) == finished()


def test_a_running_or_unmeasured_execution_shows_null() -> None:
    record = codec.execution_to_json(finished(None))
    assert [record[k] for k in ("cpu_user_seconds", "cpu_system_seconds", "max_rss_bytes")] == [
        None,
        None,
        None,
    ]


def test_a_record_without_the_fields_decodes_as_not_measured() -> None:
    record: dict[str, Any] = codec.execution_to_json(finished())
    for key in ("cpu_user_seconds", "cpu_system_seconds", "max_rss_bytes"):
        del record[key]
    assert codec.execution_from_json(record) == finished(None)


def test_a_finished_execution_reaches_the_history_through_the_replicated_state() -> None:
    state = JobState()
    job = codec.job_to_record(Job(name="a", schedule="@manually", executor="shell"))
    assert "error" not in state.apply(command("set_job", job=job))
    fire = {"job": "a", "scheduled_at": None, "group": 1, "targets": ["n1"]}
    assert state.apply(command("fire", fires=[fire]))["won"] == [True]
    events: list[ExecutionFinished] = []
    state.subscribe(events.append, ExecutionFinished)
    # As the Raft log carries it: encoded to JSON bytes and back.
    done = json.loads(json.dumps(command("done", executions=[codec.execution_to_json(finished())])))
    assert state.apply(done) == {"applied": 1}
    assert [event.execution for event in events] == [finished()]
