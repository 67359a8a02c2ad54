from datetime import UTC, datetime, timedelta

from dkron_lab import codec
from dkron_lab.model.execution import Execution
from dkron_lab.model.job import Job
from dkron_lab.state.machine import (
    ExecutionFinished,
    ExecutionsCleared,
    FireClaimed,
    FiresSkipped,
    GroupFinished,
    JobChanged,
    JobState,
    StateRestored,
    command,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def job(name, **fields):
    return codec.job_to_record(Job(name=name, schedule="@every 1m", executor="shell", **fields))


def state_with(*records):
    state = JobState()
    for record in records:
        assert "error" not in state.apply(command("set_job", job=record))
    return state


def fire(name, group, targets=("n1",), at=T0):
    return {
        "job": name,
        "scheduled_at": codec.format_time(at),
        "group": group,
        "targets": list(targets),
    }


def done(name, group, node="n1", success=True, at=T0):
    return codec.execution_to_json(
        Execution(
            id=f"{group}-{node}",
            job_name=name,
            node_name=node,
            group=group,
            started_at=at,
            finished_at=at + timedelta(seconds=1),
            success=success,
            output="out",
        )
    )


def test_set_job_creates_then_updates_and_emits():
    events = []
    state = JobState()
    state.subscribe(events.append)
    assert state.apply(command("set_job", job=job("a"))) == {"created": True}
    assert state.apply(command("set_job", job=job("a", disabled=True))) == {"created": False}
    assert state.job("a").disabled is True
    assert [type(e) for e in events] == [JobChanged, JobChanged]


def test_missing_parent_is_refused_and_nothing_changes():
    state = JobState()
    result = state.apply(command("set_job", job=job("child", parent_job="nope")))
    assert result["error"]["type"] == "JobNotFound"
    assert "create it first" in result["error"]["message"]
    assert state.jobs == {}


def test_parent_cycles_are_refused():
    state = state_with(job("a"), job("b", parent_job="a"), job("c", parent_job="b"))
    result = state.apply(command("set_job", job=job("a", parent_job="c")))
    assert result["error"]["type"] == "InvalidJob" and "cycle" in result["error"]["message"]
    assert state.job("a").parent_job == ""
    assert state.dependents("a") == ("b",)


def test_delete_parent_with_children_is_a_conflict():
    state = state_with(job("a"), job("b", parent_job="a"))
    result = state.apply(command("delete_job", name="a"))
    assert result["error"]["type"] == "JobHasDependents"
    assert "delete them first" in result["error"]["message"]
    assert state.apply(command("delete_job", name="b"))["job"]["name"] == "b"
    assert state.dependents("a") == ()
    assert "error" not in state.apply(command("delete_job", name="a"))
    assert state.names == []


def test_reparenting_moves_the_child_link():
    state = state_with(job("p1"), job("p2"), job("c", parent_job="p1"))
    state.apply(command("set_job", job=job("c", parent_job="p2")))
    assert state.dependents("p1") == () and state.dependents("p2") == ("c",)


def test_first_claim_of_an_instant_wins():
    state = state_with(job("a"))
    assert state.apply(command("fire", fires=[fire("a", 1)]))["won"] == [True]
    assert state.apply(command("fire", fires=[fire("a", 2)]))["won"] == [False]
    earlier = fire("a", 3, at=T0 - timedelta(minutes=1))
    assert state.apply(command("fire", fires=[earlier]))["won"] == [False]
    later = fire("a", 4, at=T0 + timedelta(minutes=1))
    assert state.apply(command("fire", fires=[later]))["won"] == [True]


def test_forbid_refuses_a_second_run_while_one_is_in_flight():
    state = state_with(job("a", concurrency="forbid"))
    assert state.apply(command("fire", fires=[fire("a", 1)]))["won"] == [True]
    manual = {"job": "a", "scheduled_at": None, "group": 2, "targets": ["n1"]}
    assert state.apply(command("fire", fires=[manual]))["won"] == [False]
    state.apply(command("done", executions=[done("a", 1)]))
    assert state.apply(command("fire", fires=[manual]))["won"] == [True]


def test_a_scheduled_instant_refused_by_forbid_is_skipped_once_with_its_reason():
    """Every due instant ends run or skipped with a reason: one that ``forbid`` refuses is
    recorded as skipped ("running"), and a second claim of it (a new leader) records nothing."""
    events = []
    state = state_with(job("a", concurrency="forbid"))
    state.apply(command("fire", fires=[fire("a", 1)]))
    state.subscribe(events.append)
    later = T0 + timedelta(minutes=1)
    assert state.apply(command("fire", fires=[fire("a", 2, at=later)]))["won"] == [False]
    assert state.apply(command("fire", fires=[fire("a", 3, at=later)]))["won"] == [False]
    at = codec.format_time(later)
    assert events == [
        FiresSkipped("a", ({"reason": "running", "first": at, "last": at, "count": 1},))
    ]
    assert state.last_fired["a"] == later


def test_done_counts_once_and_sets_status():
    events = []
    state = state_with(job("a"))
    state.subscribe(events.append)
    state.apply(command("fire", fires=[fire("a", 1)]))
    assert state.apply(command("done", executions=[done("a", 1)])) == {"applied": 1}
    assert state.apply(command("done", executions=[done("a", 1)])) == {"applied": 0}
    stats = state.stats["a"]
    assert stats.success_count == 1 and stats.status == "success"
    assert stats.last_success == T0 + timedelta(seconds=1)
    assert [type(e) for e in events] == [FireClaimed, ExecutionFinished, GroupFinished]
    assert events[0] == FireClaimed("a", T0)
    assert state.groups == {} and state.running == {}


def test_group_status_over_several_targets():
    state = state_with(job("a"))
    state.apply(command("fire", fires=[fire("a", 1, targets=("n1", "n2"))]))
    state.apply(command("done", executions=[done("a", 1, "n1", success=True)]))
    assert state.stats["a"].status == ""
    state.apply(command("done", executions=[done("a", 1, "n2", success=False)]))
    stats = state.stats["a"]
    assert (stats.status, stats.success_count, stats.error_count) == ("partially_failed", 1, 1)


def test_ephemeral_job_is_deleted_after_a_successful_group():
    state = state_with(job("a", ephemeral=True))
    state.apply(command("fire", fires=[fire("a", 1)]))
    state.apply(command("done", executions=[done("a", 1, success=False)]))
    assert "a" in state.jobs
    state.apply(command("fire", fires=[fire("a", 2, at=T0 + timedelta(minutes=1))]))
    state.apply(command("done", executions=[done("a", 2)]))
    assert "a" not in state.jobs


def test_delete_executions_resets_counters():
    events = []
    state = state_with(job("a"))
    state.apply(command("fire", fires=[fire("a", 1)]))
    state.apply(command("done", executions=[done("a", 1)]))
    state.subscribe(events.append)
    state.apply(command("delete_executions", name="a"))
    assert state.stats["a"].success_count == 0 and state.stats["a"].status == ""
    assert events == [ExecutionsCleared("a")]


def test_saving_keeps_dkron_merge_of_counters():
    state = state_with(job("a"))
    state.apply(command("fire", fires=[fire("a", 1)]))
    state.apply(command("done", executions=[done("a", 1)]))
    restored = {**job("a"), "success_count": 10, "error_count": 0, "status": "failed"}
    state.apply(command("set_job", job=restored))
    stats = state.stats["a"]
    assert (stats.success_count, stats.error_count, stats.status) == (10, 0, "success")


def test_snapshot_restore_round_trip():
    state = state_with(job("a", concurrency="forbid"), job("b", parent_job="a"))
    state.apply(command("fire", fires=[fire("a", 1)]))
    state.apply(command("pause", paused=True))
    copy = JobState()
    events = []
    copy.subscribe(events.append)
    copy.restore(state.snapshot())
    assert copy.snapshot() == state.snapshot()
    assert copy.jobs == state.jobs and copy.names == ["a", "b"] and copy.paused
    assert copy.dependents("a") == ("b",)
    manual = {"job": "a", "scheduled_at": None, "group": 2, "targets": ["n1"]}
    assert copy.apply(command("fire", fires=[manual]))["won"] == [False]
    assert events == [StateRestored()]


def test_snapshot_hooks_run_first():
    calls = []
    state = JobState()
    state.before_snapshot(lambda: calls.append("flush"))
    state.snapshot()
    assert calls == ["flush"]


def test_unknown_commands_and_versions_are_refused():
    state = JobState()
    assert "error" in state.apply({"type": "explode", "v": 1})
    assert "error" in state.apply({"type": "pause", "v": 99, "paused": True})
    assert state.paused is False


def test_a_batch_applies_each_command_with_its_own_result():
    state = JobState()
    result = state.apply(
        command(
            "batch",
            commands=[
                command("set_job", job=job("a")),
                command("set_job", job=job("b", parent_job="nope")),
                command("toggle_job", name="a"),
            ],
        )
    )
    first, second, third = result["results"]
    assert first == {"created": True}
    assert second["error"]["type"] == "JobNotFound"
    assert third == {"disabled": True}
    assert list(state.jobs) == ["a"]


def test_nodes_register_replace_and_leave_and_survive_snapshots():
    state = JobState()
    node = {"name": "a1", "role": "agent", "http": "127.0.0.1:1", "tags": {"gpu": "yes"}}
    state.apply(command("register", node=node))
    state.apply(command("register", node={**node, "http": "127.0.0.1:2"}))
    copy = JobState()
    copy.restore(state.snapshot())
    assert copy.nodes == {"a1": {**node, "http": "127.0.0.1:2"}}
    state.apply(command("deregister", name="a1"))
    assert state.nodes == {}


def test_a_pause_refuses_every_job_saved_after_it_in_log_order():
    """Decided by the state machine, so a follower that has not applied the pause yet cannot
    let a job through: the write is refused wherever it entered the cluster."""
    state = state_with(job("a"))
    state.apply(command("pause", paused=True))
    refused = state.apply(command("set_job", job=job("b")))
    assert refused["error"]["type"] == "Paused" and "b" not in state.jobs
    state.apply(command("pause", paused=False))
    assert state.apply(command("set_job", job=job("b"))) == {"created": True}
