"""The invariant of docs/raft.md, tested over interleavings: every due instant ends as exactly
one of: run (its one committed claim started on its target), or skipped with a reason.

Hypothesis draws a sequence of what Raft and elections can do to a leader between its claim
and its commit (entries committing, possibly in a later term and answered NotLeaderError by
the fencing; uncommitted entries dropped; new leaders elected, the old one's task cancelled;
the same node re-elected in a new term) while fake time passes; then the cluster heals and
runs on, and every instant up to the heal is checked.
"""

import asyncio
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from leader_model import T0, ModelCluster, due_instants

from dkron_lab.model.job import Job

JOBS = [
    Job(name="a", schedule="* * * * * *", executor="shell"),
    Job(name="b", schedule="*/2 * * * * *", executor="shell", catchup="once"),
]

STEPS = st.one_of(
    st.tuples(st.just("advance"), st.floats(min_value=0.01, max_value=1.5)),
    st.tuples(st.just("commit"), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("drop"), st.just(0)),
    st.tuples(st.just("elect"), st.integers(min_value=0, max_value=2)),
    st.tuples(st.just("term"), st.just(0)),
)


async def play(steps: list[tuple[str, float]], policy: str) -> None:
    cluster = ModelCluster(JOBS, policy=policy)
    try:
        await cluster.elect("s1")
        for kind, value in steps:
            await apply(cluster, kind, value)
        healed = cluster.clock.now()
        if cluster.leader is None:
            await cluster.elect("s1")
        for _ in range(40):  # healed: every entry commits, time runs on
            await cluster.commit_all()
            await cluster.advance(0.1)
        check(cluster, healed)
    finally:
        await cluster.close()


async def apply(cluster: ModelCluster, kind: str, value: float) -> None:
    if kind == "advance":
        await cluster.advance(value)
    elif kind == "commit":
        for _ in range(int(value)):
            cluster.log.commit()
            await asyncio.sleep(0)
        await cluster.advance(0)
    elif kind == "drop":
        cluster.log.drop()
    elif kind == "elect":
        await cluster.elect(f"s{int(value) + 1}")
    else:  # the leader is re-elected in a new term: its running Leader is not restarted
        cluster.log.term += 1


def check(cluster: ModelCluster, healed) -> None:
    claims = cluster.committed_claims()
    skipped = cluster.skipped_instants()
    assert len(skipped) == len(set(skipped)), "an instant skipped twice"
    for key, groups in cluster.started.items():
        assert groups == {claims.get(key)}, f"{key} started as {groups}, claimed {claims.get(key)}"
    for job in JOBS:
        for at in due_instants(job, healed):
            ran, passed = (job.name, at) in claims, (job.name, at) in skipped
            assert not (ran and passed), f"{job.name} @ {at - T0}: run and skipped"
            assert ran or passed, f"{job.name} @ {at - T0} lost"
            if ran:
                assert cluster.started[(job.name, at)], f"{job.name} @ {at - T0} never started"


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEPS, max_size=30), policy=st.sampled_from(["all", "once", "skip"]))
def test_every_due_instant_runs_once_or_is_skipped_with_a_reason(steps, policy):
    asyncio.run(play(steps, policy))


def test_the_checker_sees_a_lost_instant():
    """The check is not vacuous: an instant nobody claimed or skipped is reported."""
    cluster = ModelCluster(JOBS)
    try:
        check(cluster, T0 + timedelta(seconds=1))
    except AssertionError as lost:
        assert "lost" in str(lost)
    else:
        raise AssertionError("the checker accepted an instant that never ran")
