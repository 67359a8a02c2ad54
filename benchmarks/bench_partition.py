"""A healed partition (issue 15): cut the leader off for a while, heal, count lost fires.

    python benchmarks/bench_partition.py                  # 50 trials, 15 s cut (about 40 minutes)
    python benchmarks/bench_partition.py --trials 10      # the same, 10 trials
    python benchmarks/bench_partition.py --quick          # 3 trials, 6 s cut (about 90 s)
    python benchmarks/bench_partition.py --seed 7 --keep  # replay trial seeds 7, 8, ...; keep logs

Needs root and iproute2: each of the 3 servers and 2 worker agents runs in a network namespace
of its own (``tests.harness.NamespacedCluster``). Each trial starts a fresh cluster, runs
jobs ``@every 1s`` on one worker and on both, takes the leader's link down for ``--cut``
seconds, heals it, and checks every instant of every job against a ledger the runs append to
(``tests/integration/partition_trial.py``, shared with ``test_partition_heal.py``). Misses
inside the leaderless window (the cut until the majority's new leader, plus the claim lead)
are allowed; misses outside it, doubled runs, diverging histories and a majority term raised
by the heal are failures. ``--keep`` keeps each trial's directory (node logs ``<name>.log``,
the ledger) under ``--dir``; a failed trial's is always kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from partition_trial import TrialResult, run_trial  # after the path


def print_table(results: Sequence[TrialResult], cut: float) -> None:
    failed = [r for r in results if not r.ok]
    print(f"\n| figure ({len(results)} trials, leader cut off {cut:g} s) | measured |")
    print("|---|---|")
    rows = (
        ("trials with a failure", f"{len(failed)} of {len(results)}"),
        (
            "instants missed outside the leaderless window",
            f"{sum(len(r.missed_outside) for r in results)} (in "
            f"{sum(1 for r in results if r.missed_outside)} trials)",
        ),
        (
            "instants missed inside it",
            f"{sum(len(r.missed_in_window) for r in results)} of "
            f"{sum(r.instants for r in results)} checked",
        ),
        (
            "instants skipped with a reason (outside the window)",
            f"{sum(r.skipped for r in results)} ({sum(r.skipped_outside for r in results)})",
        ),
        ("doubled runs or claims", str(sum(len(r.doubled) for r in results))),
        ("identical histories on all servers", f"{sum(r.identical for r in results)} trials"),
        ("majority's term unchanged by the heal", f"{sum(r.terms_unchanged for r in results)}"),
        (
            "max elections after the heal (max term rise)",
            f"{max(r.elections_after_heal for r in results)} "
            f"(+{max(r.term_rise for r in results)})",
        ),
        (
            "max leaderless gap (cut → new leader seen)",
            f"{max(r.leaderless for r in results):.2f} s",
        ),
    )
    for label, value in rows:
        print(f"| {label} | {value} |")


def report(index: int, result: TrialResult) -> None:
    verdict = "ok" if result.ok else "FAILED"
    print(f"trial {index} {verdict}: {result.summary()}", flush=True)
    for miss in result.missed_outside:
        print(f"    missed {miss.describe(result.cut)}")
    for doubled in result.doubled:
        print(f"    doubled {doubled}")
    if not result.ok:
        print(f"    terms: {'; '.join(result.term_changes)}")
        print(f"    logs: {result.base_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="trials (default 50)")
    parser.add_argument("--cut", type=float, default=15.0, help="seconds cut off (default 15)")
    parser.add_argument("--after", type=float, default=12.0, help="seconds run after the heal")
    parser.add_argument("--quick", action="store_true", help="3 trials, 6 s cut, 8 s after")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first trial")
    parser.add_argument("--keep", action="store_true", help="keep every trial's directory")
    parser.add_argument("--dir", type=Path, default=None, help="where trials run (default tmp)")
    args = parser.parse_args()
    trials, cut, after = (3, 6.0, 8.0) if args.quick else (args.trials, args.cut, args.after)
    print(f"# dkron-lab partition-heal benchmark ({os.cpu_count()} cores, {trials} trials)")
    base = Path(tempfile.mkdtemp(prefix="bench-partition-", dir=args.dir))
    results = []
    for i in range(trials):
        seed = args.seed + i
        trial_dir = base / f"trial-{seed}"
        trial_dir.mkdir()
        results.append(run_trial(trial_dir, seed=seed, cut=cut, after=after))
        report(i + 1, results[-1])
        if results[-1].ok and not args.keep:
            shutil.rmtree(trial_dir)  # a failed trial keeps its logs
    print_table(results, cut)
    if any(base.iterdir()):
        print(f"\ntrial directories kept (node logs, ledgers): {base}")
    else:
        base.rmdir()


if __name__ == "__main__":
    main()
