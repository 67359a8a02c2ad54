"""The lease rule: which runs in flight are lost (pure; the node applies it each second)."""

from dkron_lab.membership import HEARTBEAT_TTL, LOST_DISPATCH, LostRun, lost_runs

SENT = 1_000.0


def group(*targets, results=(), retry=(), queued=False):
    record = {"job": "j", "targets": list(targets), "results": dict.fromkeys(results, True)}
    record["retry"] = {node: {"attempt": 2} for node in retry}
    if queued:
        record["queued"] = True
    return record


def lost(groups, now, *, alive=("a", "b"), running=None):
    return lost_runs(
        groups,
        now,
        sent=lambda gid, node: SENT,
        alive=lambda node: node in alive,
        running=lambda node: (running or {}).get(node, set()),
    )


def test_a_silent_node_loses_its_runs_after_the_ttl_not_before():
    groups = {1: group("a", "c")}
    assert lost(groups, SENT + HEARTBEAT_TTL - 0.1) == []
    assert lost(groups, SENT + HEARTBEAT_TTL + 0.1) == [
        LostRun(1, "c", "stopped answering heartbeats")
    ]


def test_a_live_node_that_never_shows_the_run_loses_it_after_the_dispatch_window():
    groups = {1: group("a", "b")}
    running = {"a": {1}}
    assert lost(groups, SENT + LOST_DISPATCH - 1, running=running) == []
    assert lost(groups, SENT + LOST_DISPATCH + 1, running=running) == [
        LostRun(1, "b", "never started this execution (lost dispatch)")
    ]


def test_finished_queued_and_retrying_runs_hold_no_lease():
    groups = {
        1: group("c", results=["c"]),
        2: group("c", queued=True),
        3: group("c", retry=["c"]),
    }
    assert lost(groups, SENT + 3600) == []
