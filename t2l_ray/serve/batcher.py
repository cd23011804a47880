"""A replica's batching queue: items from concurrent requests -> one call of the batch function at a time, on
everything that waited while the previous call ran.

Why not `@serve.batch`: in Ray 2.60 its loop closes a batch when `batch_wait_timeout_s` has passed since that
batch's first item, whether or not the previous batch has finished; closed batches then wait on the
`max_concurrent_batches` semaphore. With a batch function that takes hundreds of milliseconds (a hypernet
forward at Mistral-7B shapes on CPU) and clients that come back at different times, every 10 ms window became
its own batch of 1-3 descriptions, queued behind the running one. Here a batch is formed only when the function
is free to run it: all items waiting then (up to `max_batch_size`), and `wait_s` is counted from the oldest
waiting item, so items that already waited through a batch never wait again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BatchStats:
    """Counters since the replica started: how many batches ran and how full they were."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    @property
    def mean(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass
class _Waiting:
    item: Any
    future: asyncio.Future
    arrived: float


class Batcher(Generic[Item, Result]):
    """`await submit(item)` from any number of requests; `run(items) -> results` (same order and length) is called
    one batch at a time. Set `max_batch_size` and `wait_s` at any time; they apply from the next batch."""

    def __init__(self, run: Callable[[list[Item]], Awaitable[list[Result]]], max_batch_size: int, wait_s: float):
        self._run = run
        self.max_batch_size, self.wait_s = max_batch_size, wait_s
        self.stats = BatchStats()
        self._waiting: deque[_Waiting] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        future = loop.create_future()
        self._waiting.append(_Waiting(item, future, loop.time()))
        self._arrived.set()
        if self._worker is None:  # the worker ends when nothing waits; the next item starts another
            self._worker = loop.create_task(self._work())
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                deadline = self._waiting[0].arrived + self.wait_s
                while len(self._waiting) < self.max_batch_size and loop.time() < deadline:
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                taken = [self._waiting.popleft() for _ in range(min(self.max_batch_size, len(self._waiting)))]
                batch = [entry for entry in taken if not entry.future.done()]  # callers gone (client disconnected)
                if batch:
                    await self._run_batch(batch)
        finally:
            self._worker = None

    async def _run_batch(self, batch: list[_Waiting]) -> None:
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        try:
            results = await self._run([entry.item for entry in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # noqa: BLE001 - each caller gets it; the queue keeps serving
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
            return
        for entry, result in zip(batch, results):
            if not entry.future.done():
                entry.future.set_result(result)
