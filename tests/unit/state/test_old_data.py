"""A data dir written before typed commands still loads: its snapshot restores and its journal
replays to exactly the state the old code reached (``tests/data/datadir-v1/README.md``)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dkron_lab import codec
from dkron_lab.state.machine import JobState
from dkron_lab.state.raft._core import _REGULAR
from dkron_lab.state.raft.journal import RaftJournal, read_snapshot

DATA = Path(__file__).parents[2] / "data" / "datadir-v1"


def replay(raft: Path) -> tuple[JobState, list[dict[str, Any]]]:
    """The snapshot, then every later entry of the journal, as the Raft adapter applies them."""
    state = JobState()
    data, (last, _prev, _cluster) = read_snapshot(str(raft / "raft.snapshot"))
    state.restore(data)
    journal = RaftJournal(raft / "raft.journal")
    try:
        entries = [payload for payload, index, _ in journal[:] if index > last[1]]
    finally:
        journal.close()
    results = [state.apply(json.loads(p[1:])) for p in entries if p[:1] == _REGULAR]
    return state, results


def test_a_v1_data_dir_replays_to_the_state_the_old_code_reached(tmp_path: Path) -> None:
    raft = tmp_path / "raft"
    shutil.copytree(DATA / "raft", raft)
    state, results = replay(raft)
    assert results, "no journal entry after the snapshot: the test data proves nothing"
    assert not [r for r in results if "error" in r]
    expected = json.loads((DATA / "expected-state.json").read_text())
    # Job fields added since hold their defaults: the old jobs read as if saved without them.
    expected["jobs"] = [codec.job_to_record(codec.job_from_json(j)[0]) for j in expected["jobs"]]
    assert state.snapshot() == expected


def test_what_came_back(tmp_path: Path) -> None:
    raft = tmp_path / "raft"
    shutil.copytree(DATA / "raft", raft)
    state, _ = replay(raft)
    jobs = {job.name: job for job in state.all_jobs()}
    assert sorted(jobs) == ["child", "failing", "hourly", "late", "parent"]
    assert jobs["child"].parent_job == "parent"
    assert jobs["hourly"].disabled and jobs["hourly"].concurrency_group == "etl"
    assert state.is_paused()
    assert state.api_limits() == {"overall": 4, "groups": {"etl": 1}}
    assert state.open_groups() == {}
    last_fired = {job.name: last for job, last in state.jobs_with_last_fired()}
    assert last_fired == dict.fromkeys(jobs) | {"late": datetime(2026, 12, 1, 12, tzinfo=UTC)}
    assert state.stats_of("parent").success_count == 7
