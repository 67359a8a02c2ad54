import asyncio

import pytest

from dkron_lab.batching import Batcher


async def test_items_that_arrive_while_a_batch_is_in_flight_ride_the_next_one():
    sent: list[list[int]] = []
    gate = asyncio.Event()

    async def submit(items):
        sent.append(list(items))
        await gate.wait()
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(submit)
    first = batcher.add(1)
    await asyncio.sleep(0)
    later = [batcher.add(i) for i in (2, 3, 4)]
    gate.set()
    assert await first == 10
    assert [await f for f in later] == [20, 30, 40]
    assert sent == [[1], [2, 3, 4]]


async def test_a_failed_batch_fails_each_item_unless_retrying():
    async def broken(items):
        raise RuntimeError("no quorum")

    batcher: Batcher[int, int] = Batcher(broken)
    futures = [batcher.add(1), batcher.add(2)]
    for future in futures:
        with pytest.raises(RuntimeError, match="no quorum"):
            await future


async def test_retrying_batches_land_eventually():
    calls = 0

    async def flaky(items):
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("timeout")
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(flaky, retry=True, retry_delay=0.001)
    batcher.add(1)
    await batcher.drain()
    assert calls == 3
