"""The leader's rule in fake time: every due instant ends run, or skipped with a reason.

The three ways issue 15 saw instants lost after a healed partition, each replayed against the
real ``Leader``/``Scheduler``/``JobState`` (``leader_model``): each of these failed on the
code before (the fire was dropped, or claimed and never started).
"""

from datetime import timedelta

from leader_model import T0, ModelCluster, due_instants, settle

from dkron_lab.model.job import Job
from dkron_lab.scheduler import CLAIM_AHEAD, RETRY_CLAIM

EVERY_SECOND = Job(name="a", schedule="* * * * * *", executor="shell")


async def test_a_claim_refused_by_the_fencing_but_committed_later_still_runs_once():
    """Cause 2: the claim is appended, the term changes (the node is re-elected), the entry
    commits in the new term and the fencing answers NotLeaderError. The leader claims the
    instant again, loses to its own committed claim, and starts that group."""
    cluster = ModelCluster([EVERY_SECOND])
    await cluster.elect("s1")
    await cluster.advance(1 - CLAIM_AHEAD.total_seconds())  # T0+1s falls due: claimed
    assert len(cluster.log.pending) == 1
    cluster.log.term += 1  # re-elected: the same Leader keeps running
    cluster.log.commit()  # committed in the new term: fenced out
    await settle()
    await cluster.advance(RETRY_CLAIM.total_seconds())  # the claim is made again and loses
    await cluster.commit_all()
    await cluster.advance(1)
    await cluster.commit_all()
    await cluster.advance(CLAIM_AHEAD.total_seconds())
    first = T0 + timedelta(seconds=1)
    claims = cluster.committed_claims()
    assert cluster.started[("a", first)] == {claims[("a", first)]}
    assert cluster.skipped == []
    await cluster.close()


async def test_a_claim_another_leader_committed_but_never_started_is_started_by_the_next():
    """Cause 2 across leaders: s1's claim commits after s1 was deposed (fenced out, so s1
    starts nothing); s2's catch-up claims the same instant, loses, and starts s1's group."""
    cluster = ModelCluster([EVERY_SECOND])
    await cluster.elect("s1")
    await cluster.advance(1 - CLAIM_AHEAD.total_seconds())
    assert len(cluster.log.pending) == 1
    await cluster.elect("s2")  # commits the old term's claim with the new leader's first entry
    await cluster.advance(0.5)
    await cluster.commit_all()
    await cluster.advance(1)
    await cluster.commit_all()
    await cluster.advance(1)
    claims = cluster.committed_claims()
    for at in due_instants(EVERY_SECOND, T0 + timedelta(seconds=2)):
        assert cluster.started[("a", at)] == {claims[("a", at)]}, at
    await cluster.close()


async def test_a_catch_up_cut_short_loses_no_instant():
    """Cause 3: a new leader catches up 5 missed instants and is deposed before its claim
    commits (the entry is dropped). The next leader finds the same instants and runs them."""
    cluster = ModelCluster([EVERY_SECOND])
    await cluster.advance(5)  # nobody led: T0+1s..T0+5s were missed
    await cluster.elect("s1")
    assert len(cluster.log.pending) == 1  # the catch-up's claim
    cluster.log.drop()
    await cluster.elect("s2")
    await cluster.commit_all()
    missed = due_instants(EVERY_SECOND, T0 + timedelta(seconds=5))
    claims = cluster.committed_claims()
    assert [at for at in missed if cluster.started[("a", at)] != {claims.get(("a", at))}] == []
    await cluster.close()


async def test_a_catch_up_whose_answer_is_lost_is_made_again_and_skips_nothing_twice():
    """The catch-up's entry (skips and claims together) commits but its answer is lost: the
    leader makes it again; the state machine settles the second one as already done."""
    cluster = ModelCluster([EVERY_SECOND], policy="once")
    await cluster.advance(5)
    await cluster.elect("s1")
    assert len(cluster.log.pending) == 1  # the catch-up
    cluster.log.term += 1
    cluster.log.commit()  # applied, answered NotLeaderError
    await settle()
    await cluster.advance(0.2)
    await cluster.commit_all()
    await cluster.advance(0.1)
    skipped = cluster.skipped_instants()
    assert sorted(skipped) == [("a", T0 + timedelta(seconds=s)) for s in range(1, 5)]
    last = T0 + timedelta(seconds=5)
    assert cluster.started[("a", last)] == {cluster.committed_claims()[("a", last)]}
    await cluster.close()
