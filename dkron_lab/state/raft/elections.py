"""The rules of PreVote and leader stickiness as pure functions (Raft thesis §9.6, §5.4.1).

Owns: whether a log is up to date, whether a node is in a leader's lease, whether a pre-vote is
granted, what a majority is, and how much of an AppendEntries a log already holds (B1). May
call: nothing but the standard library; ``_core`` applies these decisions to pysyncobj.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, kw_only=True)
class _PreVoteRound:
    term: int  # the term this node would stand in
    number: int  # tells this round's replies from an earlier round's
    granted: set[Any] = field(default_factory=set)  # the voters that granted it


def _log_up_to_date(theirs: tuple[int, int], ours: tuple[int, int]) -> bool:
    """Raft §5.4.1: whether a log ending at ``theirs`` (last term, last index) is at least as
    up to date as one ending at ``ours``."""
    return theirs >= ours


def _in_lease(*, leading: bool, leader_known: bool, since_heard: float, lease: float) -> bool:
    """Whether a node hears from a live leader: it leads, or it heard from the leader it knows
    less than ``lease`` (the minimum election timeout) ago."""
    return leading or (leader_known and since_heard < lease)


def _grant_pre_vote(*, term: int, our_term: int, log_ok: bool, lease: bool) -> bool:
    """A pre-vote for ``term`` is granted if that term is newer than ours, the candidate's log
    is at least as up to date, and no live leader is heard from (thesis §9.6)."""
    return term > our_term and log_ok and not lease


def _majority(votes: int, voters: int) -> bool:
    return votes > voters / 2


def _held_prefix(
    entries: Sequence[tuple[bytes, int, int]], term_at: Callable[[int], int | None]
) -> int:
    """How many of ``entries`` (command, index, term), from the first, a log already holds:
    an entry at the same index with the same term (by Raft's Log Matching property the same
    entry, and the same log before it)."""
    held = 0
    for _, index, term in entries:
        if term_at(index) != term:
            break
        held += 1
    return held
