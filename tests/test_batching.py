"""The micro-batch queue (leukemia_mtl/batching.py) with real threads and a real event loop: requests that arrive
together share one call, a batch never passes its bound, a full queue refuses, and one submitter's failure stays
its own."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from leukemia_mtl.batching import MicroBatcher, QueueFull


class Doubler:
    """answer_many: each item doubled, after `seconds` (the models' time); records every batch it was given."""

    def __init__(self, seconds: float = 0.05, fails_on=None) -> None:
        self.seconds, self.fails_on, self.batches = seconds, fails_on, []
        self.lock = threading.Lock()

    def __call__(self, items: list) -> list:
        with self.lock:
            self.batches.append(list(items))
        time.sleep(self.seconds)
        if self.fails_on is not None and self.fails_on in items:
            raise RuntimeError(f"cannot answer {self.fails_on}")
        return [2 * item for item in items]


def _batcher(answer, **options) -> MicroBatcher:
    settings = {"max_images": 8, "wait_s": 0.02, "max_queued": 32, **options}
    return MicroBatcher(answer, ThreadPoolExecutor(max_workers=1), **settings)


def test_requests_that_arrive_together_share_one_call_and_each_gets_its_own_answers():
    answer, sizes = Doubler(), []
    batcher = _batcher(answer, on_batch=sizes.append)

    async def clients():
        return await asyncio.gather(*(batcher.submit([10 * k, 10 * k + 1]) for k in range(4)))

    got = asyncio.run(clients())
    assert got == [[20 * k, 20 * k + 2] for k in range(4)]
    assert len(answer.batches) == 1 and sorted(answer.batches[0]) == sorted(
        x for k in range(4) for x in (10 * k, 10 * k + 1)
    )
    assert sizes == [8]


def test_a_batch_never_passes_its_bound_and_requests_are_never_split():
    answer, sizes = Doubler(seconds=0.02), []
    batcher = _batcher(answer, max_images=5, on_batch=sizes.append)

    async def clients():
        return await asyncio.gather(*(batcher.submit([k] * 3) for k in range(6)))

    got = asyncio.run(clients())
    assert got == [[2 * k] * 3 for k in range(6)]
    assert all(len(batch) <= 5 for batch in answer.batches) and sum(sizes) == 18
    for batch in answer.batches:  # each request's three images travel together
        assert all(batch.count(k) in (0, 3) for k in range(6))


def test_one_client_alone_waits_at_most_the_wait_and_later_arrivals_gather_while_the_models_work():
    answer = Doubler(seconds=0.2)
    batcher = _batcher(answer, wait_s=0.01)

    async def clients():
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.05)  # the first batch is running: these gather meanwhile
        rest = [asyncio.ensure_future(batcher.submit([k])) for k in range(2, 6)]
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(clients())
    assert first == [2] and rest == [[4], [6], [8], [10]]
    assert answer.batches == [[1], [2, 3, 4, 5]]  # two calls, not five


def test_a_full_queue_refuses_with_a_message_and_the_queued_are_still_answered():
    answer = Doubler(seconds=0.2)
    batcher = _batcher(answer, max_images=2, max_queued=4, wait_s=0)

    async def clients():
        running = asyncio.ensure_future(batcher.submit([0, 0]))
        await asyncio.sleep(0.05)  # taken by the worker: no longer queued
        queued = [asyncio.ensure_future(batcher.submit([k, k])) for k in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="4 images are waiting.*queue's 4"):
            await batcher.submit([9])
        return await running, await asyncio.gather(*queued)

    running, queued = asyncio.run(clients())
    assert running == [0, 0] and queued == [[2, 2], [4, 4]]


def test_a_failing_batch_is_answered_request_by_request_so_one_failure_stays_its_own():
    answer = Doubler(seconds=0.01, fails_on=13)
    batcher = _batcher(answer)

    async def clients():
        return await asyncio.gather(*(batcher.submit([k]) for k in (11, 12, 13, 14)), return_exceptions=True)

    got = asyncio.run(clients())
    assert got[:2] == [[22], [24]] and got[3] == [28]
    assert isinstance(got[2], RuntimeError) and "cannot answer 13" in str(got[2])
    assert answer.batches[0] == [11, 12, 13, 14] and [13] in answer.batches[1:]


def test_a_client_that_left_is_not_answered_and_bad_bounds_are_refused():
    answer = Doubler(seconds=0.1)
    batcher = _batcher(answer, wait_s=0)

    async def clients():
        busy = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.02)
        left = asyncio.ensure_future(batcher.submit([2]))
        stays = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0.01)
        left.cancel()
        return await busy, await stays

    assert asyncio.run(clients()) == ([2], [6])
    assert [2] not in answer.batches and [3] in answer.batches
    for bad in ({"max_images": 0}, {"max_queued": 4, "max_images": 8}, {"wait_s": -1}):
        with pytest.raises(ValueError, match="max_images"):
            _batcher(answer, **bad)


def test_a_client_that_leaves_frees_its_place_in_the_queue_at_once():
    answer = Doubler(seconds=0.2)
    batcher = _batcher(answer, max_images=2, max_queued=2, wait_s=0)

    async def clients():
        running = asyncio.ensure_future(batcher.submit([1, 1]))
        await asyncio.sleep(0.05)  # taken by the worker
        leaving = asyncio.ensure_future(batcher.submit([2, 2]))
        await asyncio.sleep(0)
        assert batcher.queued == 2
        leaving.cancel()
        await asyncio.sleep(0)
        assert batcher.queued == 0  # not only once the runner reaches it
        return await running, await batcher.submit([3, 3])

    assert asyncio.run(clients()) == ([2, 2], [6, 6])
    assert [2, 2] not in answer.batches


def test_a_fault_of_the_queue_itself_reaches_its_submitters_and_the_queue_goes_on():
    answer, sizes = Doubler(seconds=0.01), []

    def on_batch(images: int) -> None:
        sizes.append(images)
        if len(sizes) == 1:
            raise RuntimeError("the histogram broke")

    batcher = _batcher(answer, on_batch=on_batch)

    async def clients():
        first = await asyncio.gather(batcher.submit([1]), return_exceptions=True)
        return first, await batcher.submit([2])

    first, second = asyncio.run(clients())
    assert isinstance(first[0], RuntimeError) and "histogram broke" in str(first[0])
    assert second == [4] and answer.batches == [[2]]
