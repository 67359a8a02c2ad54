import asyncio
from datetime import UTC, datetime, timedelta

from dkron_lab.model.job import Job
from dkron_lab.scheduler import CLAIM_AHEAD, Fire, ScheduleIndex, Scheduler
from dkron_lab.testing import FakeClock

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def every_minute(name, **fields):
    return Job(name=name, schedule="0 * * * * *", executor="shell", **fields)


def test_next_is_known_as_soon_as_a_job_is_saved():
    index = ScheduleIndex()
    index.update("a", every_minute("a"), T0)
    assert index.next_of("a") == T0 + timedelta(minutes=1)
    berlin = Job(name="b", schedule="@daily", timezone="Europe/Berlin", executor="shell")
    index.update("b", berlin, T0)
    assert index.next_of("b") == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)


def test_jobs_that_never_fire_by_schedule_have_no_next():
    index = ScheduleIndex()
    index.update("off", every_minute("off", disabled=True), T0)
    index.update("child", every_minute("child", parent_job="p"), T0)
    index.update("manual", Job(name="manual", schedule="@manually", executor="shell"), T0)
    expired = every_minute("old", expires_at=T0 + timedelta(seconds=30))
    index.update("old", expired, T0)
    assert [index.next_of(n) for n in ("off", "child", "manual", "old")] == [None] * 4
    assert index.earliest() is None


def test_starts_at_delays_the_first_fire():
    index = ScheduleIndex()
    index.update("a", every_minute("a", starts_at=T0 + timedelta(minutes=10)), T0)
    assert index.next_of("a") == T0 + timedelta(minutes=10)


def test_pop_due_returns_due_fires_in_order_and_advance_moves_each_job_on():
    index = ScheduleIndex()
    index.update("a", every_minute("a"), T0)
    index.update("b", Job(name="b", schedule="30 * * * * *", executor="shell"), T0)
    first = index.pop_due(T0 + timedelta(seconds=59))
    assert first == [Fire(job="b", scheduled_at=T0 + timedelta(seconds=30))]
    index.advance(first)
    due = index.pop_due(T0 + timedelta(minutes=2))
    assert [(f.job, f.scheduled_at - T0) for f in due] == [
        ("a", timedelta(minutes=1)),
        ("b", timedelta(minutes=1, seconds=30)),
    ]
    index.advance(due)
    assert index.next_of("a") == T0 + timedelta(minutes=2)
    assert index.next_of("b") == T0 + timedelta(minutes=2, seconds=30)


def test_updates_and_deletes_replace_old_heap_entries():
    index = ScheduleIndex()
    index.update("a", every_minute("a"), T0)
    index.update("a", Job(name="a", schedule="@hourly", executor="shell"), T0)
    index.update("b", every_minute("b"), T0)
    index.update("b", None, T0)
    assert index.pop_due(T0 + timedelta(minutes=59)) == []
    assert index.earliest() == T0 + timedelta(hours=1)


async def test_the_loop_claims_ahead_and_starts_on_the_instant():
    clock = FakeClock(T0)
    index = ScheduleIndex()
    index.update("a", every_minute("a"), T0)
    index.update("b", every_minute("b"), T0)
    claimed, started = [], []

    async def claim(fires):
        claimed.append((clock.now(), [f.job for f in fires]))
        return [f for f in fires if f.job == "a"]  # b's claim is lost

    scheduler = Scheduler(
        index,
        clock,
        claim=claim,
        start=lambda fires: started.append((clock.now(), [f.job for f in fires])),
    )
    task = asyncio.ensure_future(scheduler.run())
    await _settle()
    clock.advance(timedelta(minutes=1) - CLAIM_AHEAD)
    await _settle()
    assert claimed == [(T0 + timedelta(minutes=1) - CLAIM_AHEAD, ["a", "b"])]
    assert started == []
    clock.advance(CLAIM_AHEAD)
    await _settle()
    assert started == [(T0 + timedelta(minutes=1), ["a"])]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_new_earlier_job_wakes_the_loop():
    clock = FakeClock(T0)
    index = ScheduleIndex()
    index.update("late", Job(name="late", schedule="@hourly", executor="shell"), T0)
    started = []

    async def claim(fires):
        return fires

    scheduler = Scheduler(index, clock, claim=claim, start=lambda f: started.extend(f))
    index.changed = scheduler.poke
    task = asyncio.ensure_future(scheduler.run())
    await _settle()
    index.update("soon", Job(name="soon", schedule="*/5 * * * * *", executor="shell"), T0)
    await _settle()
    clock.advance(timedelta(seconds=5))
    await _settle()
    assert [f.job for f in started] == ["soon"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _settle():
    for _ in range(20):
        await asyncio.sleep(0)


def test_advance_moves_fired_jobs_on_unless_saved_meanwhile():
    index = ScheduleIndex()
    index.update("a", every_minute("a"), T0)
    index.update("b", every_minute("b"), T0)
    due = index.pop_due(T0 + timedelta(minutes=1))
    index.update("b", Job(name="b", schedule="@hourly", executor="shell"), T0)
    index.advance(due)
    assert index.next_of("a") == T0 + timedelta(minutes=2)
    assert index.next_of("b") == T0 + timedelta(hours=1)
    assert [f.job for f in index.pop_due(T0 + timedelta(hours=1))].count("b") == 1


async def test_lost_claims_still_move_on():
    clock = FakeClock(T0)
    index = ScheduleIndex()
    index.update("a", every_minute("a"), T0)

    async def claim(fires):
        return []

    scheduler = Scheduler(index, clock, claim=claim, start=lambda f: None)
    await scheduler.tick(T0 + timedelta(minutes=1))
    assert index.next_of("a") == T0 + timedelta(minutes=2)


async def test_a_lone_job_keeps_firing():
    """Between claim and start the heap holds no entry for the job: the loop must not sleep
    through its next instant (it once slept for a minute here)."""
    clock = FakeClock(T0)
    index = ScheduleIndex()
    index.update("only", Job(name="only", schedule="@every 1s", executor="shell"), T0)
    started = []

    async def claim(fires):
        return fires

    scheduler = Scheduler(index, clock, claim=claim, start=lambda f: started.extend(f))
    task = asyncio.ensure_future(scheduler.run())
    for _ in range(5):
        await _settle()
        clock.advance(timedelta(seconds=1))
    await _settle()
    assert [f.scheduled_at - T0 for f in started] == [timedelta(seconds=s) for s in range(1, 6)]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _lead(index: ScheduleIndex, clock: FakeClock, claim, started: list) -> tuple:
    scheduler = Scheduler(index, clock, claim=claim, start=started.extend)
    index.changed = scheduler.poke  # as the node does: the index pokes the current scheduler
    return scheduler, asyncio.ensure_future(scheduler.run())


async def test_a_leader_deposed_between_claim_and_instant_still_starts_it_and_the_next_fires():
    """Leadership lost and regained within one second (a partition healing) once left the job
    with no heap entry: the new scheduler never fired it again. A claimed start belongs to
    this node whoever leads, so it runs; the following instants are fired by the new one."""
    clock = FakeClock(T0)
    index = ScheduleIndex()
    index.update("a", Job(name="a", schedule="@every 1s", executor="shell"), T0)
    started: list[Fire] = []

    async def claim(fires):
        return fires

    first, task = await _lead(index, clock, claim, started)
    await _settle()
    clock.advance(timedelta(seconds=1) - CLAIM_AHEAD)  # T0+1s claimed, its start waits
    await _settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    second, task = await _lead(index, clock, claim, started)
    for _ in range(4):
        clock.advance(timedelta(seconds=1))
        await _settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [f.scheduled_at - T0 for f in started] == [timedelta(seconds=s) for s in range(1, 5)]


async def test_a_claim_cut_short_puts_its_fires_back():
    clock = FakeClock(T0)
    index = ScheduleIndex()
    index.update("a", every_minute("a"), T0)
    claiming = asyncio.Event()

    async def claim(fires):
        claiming.set()
        await asyncio.sleep(3600)  # the answer never comes: leadership is lost meanwhile

    scheduler = Scheduler(index, clock, claim=claim, start=lambda f: None)
    tick = asyncio.ensure_future(scheduler.tick(T0 + timedelta(minutes=1)))
    await claiming.wait()
    assert index.earliest() is None
    tick.cancel()
    await asyncio.gather(tick, return_exceptions=True)
    assert index.earliest() == T0 + timedelta(minutes=1)
