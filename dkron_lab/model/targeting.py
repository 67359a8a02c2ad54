"""Which nodes run a job: Dkron's tag rules (reference §1.6), with randomness as a parameter."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Candidate", "cardinality", "select_targets"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A live node that could run jobs."""

    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    region: str = "global"


def cardinality(job_tags: Mapping[str, str]) -> tuple[dict[str, str], int | None]:
    """Split ``value:N`` tags into bare values and the smallest N (``None`` = every match).

    A malformed N selects no node, as in Dkron.
    """
    bare: dict[str, str] = {}
    count: int | None = None
    for key, value in job_tags.items():
        text, sep, number = value.rpartition(":")
        if not sep:
            bare[key] = value
            continue
        bare[key] = text
        n = int(number) if number.isdigit() else 0
        count = n if count is None else min(count, n)
    return bare, count


def select_targets(
    job_tags: Mapping[str, str],
    candidates: Sequence[Candidate],
    *,
    region: str,
    rng: random.Random,
) -> list[str]:
    """Names of the nodes that run the job: every tag must match; ``value:N`` picks N at random.

    No tags means every node in the region.
    """
    bare, count = cardinality(job_tags)
    matching = [
        c.name
        for c in candidates
        if c.region == region and all(c.tags.get(k) == v for k, v in bare.items())
    ]
    if count is None or count >= len(matching):
        return sorted(matching)
    return sorted(rng.sample(matching, max(count, 0)))
