"""Retries, dependent runs and concurrency limits inside the state machine (issue 4)."""

from datetime import timedelta

from dkron_lab import codec
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.state.machine import (
    ChildrenDue,
    ExecutionFinished,
    FiresSkipped,
    GroupFinished,
    GroupStarted,
    JobState,
    RetryDue,
    command,
    retry_backoff,
)
from tests.unit.state.test_machine import T0, fire, job, state_with


def run(name, group, node="n1", *, success, attempt=1, seconds=0.1):
    return codec.execution_to_json(
        Execution(
            id=f"{group}-{node}-{attempt}",
            job_name=name,
            node_name=node,
            group=group,
            attempt=attempt,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=seconds),
            success=success,
        )
    )


def recorded(state: JobState) -> list:
    events: list = []
    state.subscribe(events.append)
    return events


def test_a_failed_attempt_with_retries_left_is_counted_and_its_retry_made_due():
    state = state_with(job("a", retries=2))
    events = recorded(state)
    state.apply(command("fire", fires=[fire("a", 1)]))
    state.apply(command("done", executions=[run("a", 1, success=False)]))
    due = [e for e in events if isinstance(e, RetryDue)]
    assert due == [RetryDue("a", 1, "n1", 2, T0 + timedelta(seconds=0.1))]
    assert [e.final for e in events if isinstance(e, ExecutionFinished)] == [False]
    assert state.stats["a"].error_count == 1 and state.running["a"] == {1}
    # The same report again changes nothing.
    assert state.apply(command("done", executions=[run("a", 1, success=False)])) == {"applied": 0}
    # The retry is claimed once; a second claim (another leader) loses.
    retry = command("retry", group=1, node="n1", attempt=2)
    assert state.apply(retry) == {"won": True}
    assert state.apply(retry) == {"won": False}
    state.apply(command("done", executions=[run("a", 1, success=True, attempt=2)]))
    finished = [e for e in events if isinstance(e, GroupFinished)]
    assert finished == [GroupFinished("a", 1, "success")]
    assert state.stats["a"].success_count == 1 and state.stats["a"].status == "success"


def test_the_last_attempt_decides_and_no_retry_follows_it():
    state = state_with(job("a", retries=1))
    events = recorded(state)
    state.apply(command("fire", fires=[fire("a", 1)]))
    state.apply(command("done", executions=[run("a", 1, success=False)]))
    state.apply(command("retry", group=1, node="n1", attempt=2))
    state.apply(command("done", executions=[run("a", 1, success=False, attempt=2)]))
    assert sum(isinstance(e, RetryDue) for e in events) == 1
    assert [e for e in events if isinstance(e, GroupFinished)] == [GroupFinished("a", 1, "failed")]
    assert state.stats["a"].error_count == 2


def test_a_retry_can_move_to_another_node_but_not_onto_a_target_of_the_same_group():
    state = state_with(job("a", retries=1, retry_on="any"))
    state.apply(command("fire", fires=[fire("a", 1, targets=("n1", "n2"))]))
    state.apply(command("done", executions=[run("a", 1, "n1", success=False)]))
    assert state.apply(command("retry", group=1, node="n1", attempt=2, to="n2")) == {"won": False}
    assert state.apply(command("retry", group=1, node="n1", attempt=2, to="n3")) == {"won": True}
    assert state.groups[1]["targets"] == ["n3", "n2"]
    state.apply(command("done", executions=[run("a", 1, "n3", success=True, attempt=2)]))
    state.apply(command("done", executions=[run("a", 1, "n2", success=True)]))
    assert state.stats["a"].status == "success" and not state.groups


def test_backoff_is_dkrons_unless_the_job_sets_an_interval():
    failed = Execution(
        id="x",
        job_name="a",
        node_name="n",
        group=1,
        attempt=1,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
    )
    # log2(1 s / 500 ms) + 2 = 3 halves of a second (reference §1.10's example)
    assert retry_backoff(Job(name="a"), failed) == timedelta(seconds=1.5)
    short = Execution(
        id="x",
        job_name="a",
        node_name="n",
        group=1,
        started_at=T0,
        finished_at=T0 + timedelta(milliseconds=100),
    )
    assert retry_backoff(Job(name="a"), short) == timedelta(0)
    assert retry_backoff(Job(name="a", retry_interval="7s"), short) == timedelta(seconds=7)


def test_a_child_is_owed_one_run_per_successful_parent_group_whatever_its_targets():
    state = state_with(job("p"), job("c", parent_job="p"))
    events = recorded(state)
    state.apply(command("fire", fires=[fire("p", 1, targets=("n1", "n2", "n3"))]))
    for node in ("n1", "n2", "n3"):
        state.apply(command("done", executions=[run("p", 1, node, success=True)]))
    assert [e for e in events if isinstance(e, ChildrenDue)] == [ChildrenDue("p", 1)]
    assert state.owed == [{"child": "c", "parent_group": 1}]
    child = {"job": "c", "scheduled_at": None, "group": 9, "targets": ["n1"], "parent_group": 1}
    assert state.apply(command("fire", fires=[child]))["won"] == [True]
    again = {**child, "group": 10}
    assert state.apply(command("fire", fires=[again]))["won"] == [False]
    assert state.owed == []


def test_a_failed_parent_owes_nothing_and_a_disabled_child_records_its_skip():
    state = state_with(job("p"), job("c", parent_job="p", disabled=True))
    events = recorded(state)
    state.apply(command("fire", fires=[fire("p", 1)]))
    state.apply(command("done", executions=[run("p", 1, success=False)]))
    assert state.owed == []
    state.apply(command("fire", fires=[fire("p", 2, at=T0 + timedelta(minutes=1))]))
    state.apply(command("done", executions=[run("p", 2, success=True)]))
    child = {"job": "c", "scheduled_at": None, "group": 9, "targets": ["n1"], "parent_group": 2}
    assert state.apply(command("fire", fires=[child]))["won"] == [False]
    skipped = [e for e in events if isinstance(e, FiresSkipped)]
    assert [e.spans[0]["reason"] for e in skipped] == ["disabled"] and state.owed == []


def limited(fires, overall=0, groups=None):
    return command("fire", fires=fires, limits={"overall": overall, "groups": groups or {}})


def test_over_the_overall_limit_runs_queue_in_order_and_start_as_room_frees():
    state = state_with(job("a"), job("b"), job("c"))
    events = recorded(state)
    result = state.apply(limited([fire("a", 1), fire("b", 2), fire("c", 3)], overall=1))
    assert result == {"won": [True, True, True], "queued": [2, 3]}
    state.apply(command("done", executions=[run("a", 1, success=True)]))
    assert [e.group for e in events if isinstance(e, GroupStarted)] == [2]
    state.apply(command("done", executions=[run("b", 2, success=True)]))
    assert [e.group for e in events if isinstance(e, GroupStarted)] == [2, 3]
    assert state.queue == []


def test_a_full_concurrency_group_holds_back_only_its_own_runs():
    state = state_with(
        job("e1", concurrency_group="etl"), job("e2", concurrency_group="etl"), job("r")
    )
    result = state.apply(limited([fire("e1", 1), fire("e2", 2), fire("r", 3)], groups={"etl": 1}))
    assert result["queued"] == [2]
    assert state.busy_slots() == (2, {"etl": 1})


def test_a_queued_forbid_run_blocks_the_next_and_queues_survive_a_snapshot():
    state = state_with(job("a", concurrency="forbid"), job("b"))
    state.apply(limited([fire("b", 1), fire("a", 2)], overall=1))
    later = fire("a", 3, at=T0 + timedelta(minutes=1))
    assert state.apply(limited([later], overall=1))["won"] == [False]
    copy = JobState()
    copy.restore(state.snapshot())
    assert copy.queue == [2] and copy.limits == state.limits


def test_limits_set_through_the_api_merge_and_survive_a_snapshot():
    state = JobState()
    state.apply(command("set_limits", overall=5, groups={"etl": 2}))
    result = state.apply(command("set_limits", overall=None, groups={"reports": 1, "etl": 0}))
    assert result == {"limit_settings": {"overall": 5, "groups": {"etl": 0, "reports": 1}}}
    copy = JobState()
    copy.restore(state.snapshot())
    assert copy.limit_settings == state.limit_settings
