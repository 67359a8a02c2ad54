"""Backfills in the replicated state: an instant goes to one claim only (a backfill, another
backfill, or a live fire), claims are taken in order, progress is counted as groups end, a
cancelled backfill claims nothing, and snapshots carry it all."""

from __future__ import annotations

from dkron_lab import codec
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.state.commands import (
    CancelBackfill,
    Claim,
    Done,
    Fire,
    StartBackfill,
    decode,
)
from dkron_lab.state.events import ExecutionFinished
from dkron_lab.state.machine import JobState, command

T = [f"2026-12-0{day}T02:00:00Z" for day in range(1, 6)]


def state_with_job() -> JobState:
    state = JobState()
    job = Job(name="report", schedule="0 0 2 * * *", executor="shell")
    assert "error" not in state.apply(command("set_job", job=codec.job_to_record(job)))
    return state


def start(state: JobState, backfill_id: str, instants: list[str], watermark: str = "") -> None:
    cmd = StartBackfill(
        id=backfill_id, job="report", instants=tuple(instants), mode="all", max_parallel=2,
        first=instants[0], last=instants[-1], created=T[-1], watermark=watermark,
    )  # fmt: skip
    assert decode(cmd.encode()) == cmd
    assert "error" not in state.apply(cmd)


def claim(state: JobState, at: str, group: int, backfill: str | None = None) -> bool:
    fire = Claim(job="report", group=group, targets=("n1",), scheduled_at=at, backfill=backfill)
    won: list[bool] = state.apply(Fire(claims=(fire,)))["won"]
    return won[0]


def finish(state: JobState, group: int, *, success: bool = True) -> Execution:
    at = codec.parse_time(T[0], "t")
    assert at is not None
    run = Execution(id=f"{group}-n1", job_name="report", node_name="n1", group=group,
                    started_at=at, finished_at=at, success=success)  # fmt: skip
    state.apply(Done(executions=(codec.execution_to_json(run),)))
    return run


def test_a_backfill_claims_its_instants_in_order_and_counts_how_they_end() -> None:
    state = state_with_job()
    start(state, "bf-1", T[:3])
    assert not claim(state, T[1], 1, "bf-1")  # not its next instant: a repeat, nothing changes
    assert claim(state, T[0], 1, "bf-1") and claim(state, T[1], 2, "bf-1")
    finish(state, 1)
    finish(state, 2, success=False)
    record = state.backfill("bf-1")
    assert record is not None
    assert (record["next"], record["done"], record["failed"], record["state"]) == (
        2,
        1,
        1,
        "running",
    )
    assert claim(state, T[2], 3, "bf-1")
    finish(state, 3)
    assert state.backfill("bf-1")["state"] == "done"  # type: ignore[index]


def test_runs_of_a_backfill_are_marked_with_its_id() -> None:
    state = state_with_job()
    start(state, "bf-1", T[:1])
    marked: list[str] = []
    state.subscribe(lambda event: marked.append(event.execution.backfill), ExecutionFinished)
    claim(state, T[0], 1, "bf-1")
    finish(state, 1)
    assert marked == ["bf-1"]


def test_an_instant_goes_to_one_backfill_and_a_live_fire_loses_it_after() -> None:
    state = state_with_job()
    start(state, "bf-1", T[:2])
    start(state, "bf-2", T[:2])
    assert claim(state, T[0], 1, "bf-1")
    assert not claim(state, T[0], 2, "bf-2")  # bf-1 has it
    assert state.backfill("bf-2")["lost"] == 1  # type: ignore[index]
    assert claim(state, T[1], 3, "bf-2")
    assert not claim(state, T[1], 4)  # the live fire of the same instant loses
    assert state.last_fired["report"] == codec.parse_time(T[1], "t")  # and it is handled


def test_an_instant_a_live_fire_may_have_claimed_since_the_plan_is_lost() -> None:
    state = state_with_job()
    assert claim(state, T[0], 1)  # live: the watermark when the backfill was planned
    start(state, "bf-1", T[1:4], watermark=T[0])
    assert claim(state, T[2], 2)  # live again, after the plan: T[1] is now behind it
    assert not claim(state, T[1], 3, "bf-1")  # it may have run live (it was due after the plan)
    assert not claim(state, T[2], 4, "bf-1")
    assert claim(state, T[3], 5, "bf-1")  # not yet due live: the backfill takes it
    assert state.backfill("bf-1")["lost"] == 2  # type: ignore[index]
    # An instant at or before the watermark that did not run is the backfill's to take.
    start(state, "bf-2", [T[0]], watermark=T[0])
    assert claim(state, T[0], 6, "bf-2")


def test_a_cancelled_backfill_claims_nothing_and_a_deleted_job_cancels_its_own() -> None:
    state = state_with_job()
    start(state, "bf-1", T[:3])
    assert state.apply(CancelBackfill(id="bf-1"))["backfill"]["state"] == "cancelled"
    assert not claim(state, T[0], 1, "bf-1")
    start(state, "bf-2", T[:3])
    state.apply(command("delete_job", name="report"))
    assert state.backfill("bf-2")["state"] == "cancelled"  # type: ignore[index]
    assert "error" in state.apply(CancelBackfill(id="bf-9"))


def test_snapshots_carry_backfills_and_their_instants() -> None:
    state = state_with_job()
    start(state, "bf-1", T[:2])
    claim(state, T[0], 1, "bf-1")
    again = JobState()
    again.restore(state.snapshot())
    assert again.backfill("bf-1") == state.backfill("bf-1")
    assert again.backfilled_of("report") == {T[0]}
    assert not claim(again, T[0], 2)  # the restored replica still refuses the live fire
    assert "backfills" not in state_with_job().snapshot()  # none: absent, as before backfills
