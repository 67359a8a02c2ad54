"""Peering in fake time: a server that knocks is tried at most once per 10 s, and one removed
less than a minute ago stays out (``services_model``: no process)."""

from __future__ import annotations

from datetime import timedelta

from services_model import T0, Harness, settle

S4 = "s4.test:8946"


async def knocking(harness: Harness, seconds: int) -> None:
    """S4 knocks at s1's Raft port each second (as a server started with --join does)."""
    for _ in range(seconds):
        harness.peering.knocked(S4)
        await settle()
        await harness.advance(1)


async def test_a_knocking_server_is_tried_at_most_once_per_10_seconds():
    harness = Harness()
    await harness.roster.register()
    await knocking(harness, 25)
    tried = [at - T0 for at, change, _ in harness.raft.changes if change == "add"]
    assert tried == [timedelta(seconds=s) for s in (0, 10, 20)]
    assert S4 in harness.raft.voters
    await harness.close()


async def test_a_server_removed_less_than_a_minute_ago_stays_out_however_it_knocks():
    harness = Harness()
    await harness.roster.register()
    harness.raft.voters.append(S4)
    await harness.peering.remove(S4)
    assert S4 not in harness.raft.voters
    await knocking(harness, 59)  # refused at T0+0s, 10 s, ... 50 s
    assert [change for _, change, _ in harness.raft.changes] == ["remove"]
    await knocking(harness, 2)  # T0+60s: a minute has passed
    assert harness.raft.changes[-1] == (T0 + timedelta(seconds=60), "add", S4)
    assert S4 in harness.raft.voters
    await harness.close()
