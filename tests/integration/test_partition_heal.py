"""A healed partition loses no fires (issue 15).

3 servers and 2 worker agents, each in a network namespace of its own; jobs ``@every 1s`` on one
worker and on both; the leader's link goes down for a few seconds, then comes back. Every
instant of every job must run (or be skipped with a reason) except while no leader could claim
it; nothing runs twice; every server ends with the same history; and the heal must not depose
the majority's leader (its term stays the same). The workload and the checker are in
``partition_trial.py``, shared with ``benchmarks/bench_partition.py``, which runs the long form
many times.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from partition_trial import run_trial

from tests.harness import network_namespaces_unavailable

pytestmark = pytest.mark.slow


def test_a_healed_partition_loses_no_fire_and_forces_no_election(tmp_path: Path) -> None:
    unavailable = network_namespaces_unavailable()
    if unavailable is not None:
        pytest.skip(unavailable)
    result = run_trial(tmp_path, seed=15, cut=6.0, steady=2.0, after=8.0)
    print(result.summary())
    print("\n".join(result.term_changes))
    outside = [miss.describe(result.cut) for miss in result.missed_outside]
    assert outside == [], f"instants missed outside the leaderless window (logs in {tmp_path})"
    assert result.doubled == ()
    assert result.identical, "the servers hold different histories"
    assert result.terms_at_heal != {} and result.terms_unchanged, (
        f"the heal forced {result.elections_after_heal} election(s): terms "
        f"{dict(result.terms_at_heal)} -> {dict(result.terms_after)}"
    )
