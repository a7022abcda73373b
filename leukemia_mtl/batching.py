"""A bounded micro-batch queue: requests that arrive together are answered by one call, so concurrent clients
share the models' calls instead of waiting for one another's (issue 35).

The server's coroutines `submit` their images; one task takes what is waiting (up to `max_images`), waits at most
`wait_s` after the first for others to join while the worker is free, and runs `answer_many` on them in the worker
thread. While a batch runs, the next one gathers, so under load batches fill without anyone waiting on the timer.
Images waiting beyond `max_queued` are refused (`QueueFull`) rather than held: the server's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from leukemia_mtl.errors import LeukemiaMtlError

log = logging.getLogger(__name__)


class QueueFull(LeukemiaMtlError):
    """More images wait than the queue holds: the client should retry later."""


@dataclass
class _Waiting:
    items: list
    future: asyncio.Future
    arrived: float = field(default=0.0)


class MicroBatcher:
    """`await submit(items)` gives `answer_many`'s answers for `items`, computed in a batch with other submitters'.

    `answer_many(items) -> answers` (one per item, in order) runs in `executor`. `on_batch(images)` is told each
    batch's size (the server's histogram). A submission is never split: one larger than `max_images` runs alone.
    Where `answer_many` raises on a batch, each submission is answered alone, so one submitter's failure is its own.
    """

    def __init__(
        self,
        answer_many: Callable[[list], Sequence],
        executor: Executor,
        *,
        max_images: int,
        wait_s: float,
        max_queued: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_images < 1 or max_queued < max_images or wait_s < 0:
            raise ValueError(
                f"max_images {max_images}, max_queued {max_queued}, wait_s {wait_s}: need 1 <= max_images <= max_queued, wait_s >= 0"
            )
        self.answer_many, self.executor = answer_many, executor
        self.max_images, self.wait_s, self.max_queued = max_images, wait_s, max_queued
        self.on_batch = on_batch or (lambda images: None)
        self._waiting: list[_Waiting] = []
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        return sum(len(w.items) for w in self._waiting)

    async def submit(self, items: list) -> list:
        if not items:
            return []
        if self.queued + len(items) > self.max_queued:
            raise QueueFull(
                f"{self.queued} images are waiting, and this request's {len(items)} would pass the queue's "
                f"{self.max_queued}: retry in a moment"
            )
        loop = asyncio.get_running_loop()
        if self._runner is None or self._runner.done():
            self._arrived = asyncio.Event()
            self._runner = loop.create_task(self._run(), name="micro-batcher")
        waiting = _Waiting(list(items), loop.create_future(), loop.time())
        self._waiting.append(waiting)
        waiting.future.add_done_callback(lambda _: self._forget(waiting))  # a client that left frees its place
        self._arrived.set()
        return await waiting.future

    def _forget(self, waiting: _Waiting) -> None:
        if waiting.future.cancelled() and waiting in self._waiting:
            self._waiting.remove(waiting)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:  # (a client that left may have emptied it again)
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._waiting[0].arrived + self.wait_s
            while self.queued < self.max_images and loop.time() < deadline:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            batch, images = [], 0
            while self._waiting and (not batch or images + len(self._waiting[0].items) <= self.max_images):
                waiting = self._waiting.pop(0)
                if waiting.future.cancelled():  # its client left: nobody to answer
                    continue
                batch.append(waiting)
                images += len(waiting.items)
            if not batch:
                continue
            try:
                await self._answer(loop, batch, images)
            except Exception as exc:  # a fault of this loop itself: its submitters hear of it, and the loop goes on
                log.exception("answering a batch of %d submissions", len(batch))
                for waiting in batch:
                    _fail(waiting.future, exc)

    async def _answer(self, loop, batch: list[_Waiting], images: int) -> None:
        flat = [item for waiting in batch for item in waiting.items]
        try:
            self.on_batch(images)
            answers = await loop.run_in_executor(self.executor, self.answer_many, flat)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0].future, exc)
                return
            log.warning("a batch of %d submissions failed; answering each alone", len(batch), exc_info=True)
            for waiting in batch:
                try:
                    _settle(waiting.future, await loop.run_in_executor(self.executor, self.answer_many, waiting.items))
                except Exception as exc:
                    _fail(waiting.future, exc)
            return
        start = 0
        for waiting in batch:
            _settle(waiting.future, list(answers[start : start + len(waiting.items)]))
            start += len(waiting.items)


def _settle(future: asyncio.Future, answers: list) -> None:
    if not future.done():
        future.set_result(answers)


def _fail(future: asyncio.Future, exc: Exception) -> None:
    """The submitter gets the exception (and logs it and answers its client)."""
    if not future.done():
        future.set_exception(exc)
