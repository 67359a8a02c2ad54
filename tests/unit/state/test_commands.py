"""The replicated commands: every one survives encode/decode, today's wire dicts (with or
without ``"v"``) decode, and what a newer dkron-lab might write is refused by name."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dkron_lab import codec
from dkron_lab.errors import BadRequest
from dkron_lab.model.job import Job, JobStats
from dkron_lab.state.commands import (
    Batch,
    Claim,
    Command,
    DeleteExecutions,
    DeleteJob,
    Deregister,
    Done,
    Fire,
    Limits,
    Pause,
    Register,
    Retry,
    SetJob,
    SetLimits,
    Skip,
    ToggleJob,
    decode,
)
from dkron_lab.state.machine import JobState

names = st.text("abcxyz-_", min_size=1, max_size=8)
instants = st.none() | st.sampled_from(["2026-12-01T10:00:00Z", "2026-12-07T20:31:19.181808Z"])
counts = st.integers(min_value=0, max_value=2**31)
jobs = st.builds(
    lambda name, disabled, retries: Job(
        name=name,
        schedule="@every 1m",
        executor="shell",
        executor_config={"command": "true"},
        disabled=disabled,
        retries=retries,
    ),
    names,
    st.booleans(),
    st.integers(min_value=0, max_value=5),
)
claims = st.builds(
    Claim,
    job=names,
    group=counts,
    targets=st.lists(names, max_size=3).map(tuple),
    scheduled_at=instants,
    parent_group=st.none() | counts,
    at=instants,
    untargeted=st.booleans(),
)
limits = st.builds(Limits, overall=counts, groups=st.dictionaries(names, counts, max_size=2))
execution = {
    "id": "1-n1",
    "job_name": "a",
    "started_at": "2026-12-01T10:00:00Z",
    "finished_at": "2026-12-01T10:00:01Z",
    "success": True,
    "output": "hi",
    "node_name": "n1",
    "group": 1,
    "attempt": 1,
    "scheduled_at": None,
}
span = {"reason": "catchup", "first": "2026-12-01T10:00:00Z", "last": "2026-12-01T12:00:00Z"}
simple: st.SearchStrategy[Command] = st.one_of(
    st.builds(SetJob, job=jobs, stats=st.none() | st.builds(JobStats, success_count=counts)),
    st.builds(DeleteJob, name=names),
    st.builds(ToggleJob, name=names),
    st.builds(Fire, claims=st.lists(claims, max_size=3).map(tuple), limits=st.none() | limits),
    st.builds(Retry, group=counts, node=names, attempt=counts, to=st.none() | names),
    st.builds(Done, executions=st.just((execution,))),
    st.builds(DeleteExecutions, name=names),
    st.builds(Skip, job=names, spans=st.just(({**span, "count": 3},))),
    st.builds(Register, node=st.builds(lambda n: {"name": n, "role": "server"}, names)),
    st.builds(Deregister, name=names),
    st.builds(SetLimits, overall=st.none() | counts, groups=st.dictionaries(names, counts)),
    st.builds(Pause, paused=st.booleans()),
)
commands = simple | st.builds(Batch, commands=st.lists(simple, max_size=3).map(tuple))


@given(commands)
def test_every_command_survives_encode_and_decode(command: Command) -> None:
    wire = command.encode()
    assert wire["type"] == command.kind and wire["v"] == command.version == 1
    codec.check_command(wire)  # plain JSON data, as a Raft entry holds
    assert decode(wire) == command


def test_the_wire_dicts_today_s_main_wrote_decode() -> None:
    record = codec.job_to_record(Job(name="a", schedule="@manually", executor="shell"))
    fire = {"job": "a", "scheduled_at": None, "group": 7, "targets": ["n1"]}
    assert decode({"type": "set_job", "v": 1, "job": record}) == SetJob(
        job=codec.job_from_json(record)[0]
    )
    assert decode({"type": "fire", "v": 1, "fires": [fire]}) == Fire(
        claims=(Claim(job="a", group=7, targets=("n1",)),)
    )
    assert decode({"type": "retry", "v": 1, "group": 7, "node": "n1", "attempt": 2}) == Retry(
        group=7, node="n1", attempt=2
    )
    assert decode({"type": "batch", "v": 1, "commands": []}) == Batch()


def test_a_command_without_a_version_is_version_1() -> None:
    assert decode({"type": "pause", "paused": True}) == Pause(paused=True)
    assert decode({"type": "deregister", "name": "a1"}) == Deregister(name="a1")


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        ({"type": "explode", "v": 1}, "unknown command 'explode' v1"),
        ({"type": "pause", "v": 2, "paused": True}, "unknown command 'pause' v2"),
        ({"type": ["pause"], "v": 1}, "unknown command"),
        ({"type": "pause", "v": "1", "paused": True}, "unknown command"),
        ({"type": "delete_job", "v": 1}, "'delete_job' v1 command is malformed"),
        ("pause", "must be a JSON object"),
    ],
)
def test_unknown_or_malformed_commands_are_refused_by_name(wire: Any, says: str) -> None:
    with pytest.raises(BadRequest, match=says.replace("(", r"\(")):
        decode(wire)


def test_a_refused_command_is_an_error_result_of_apply() -> None:
    result = JobState().apply({"type": "pause", "v": 2, "paused": True})
    assert result["error"]["type"] == "BadRequest"
    assert "newer dkron-lab" in result["error"]["message"]
