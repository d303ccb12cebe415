"""Dynamic batching: many small submissions in, few full batches out.

The batcher knows nothing of Kafka, Ray or ONNX. Callers submit *units* (a list of items that
arrived together, e.g. one fetch's requests for one model) and get back one result per item,
where a result is either the value or the exception that item failed with: failures are data.

A batch is dispatched when it holds ``max_batch_size`` rows, when its oldest unit has waited
``max_wait_ms``, or ``deadline_margin_ms`` before the earliest deadline of an item in the queue. At low
load a unit therefore leaves within ``max_wait_ms``; at high load, while ``max_concurrent``
batches run, units queue up and the next batch leaves full. Before a batch runs, items whose
deadline has already passed are failed without being run. If a batch fails with one of the
``split_on`` errors, it is run again in halves until each failing item fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streaminfer.streams.clock import SYSTEM_CLOCK, Clock
from streaminfer.streams.errors import BatcherClosed

T = TypeVar("T")
R = TypeVar("R")



@dataclass(slots=True)
class _Unit(Generic[T]):
    items: list[T]
    rows: int
    future: asyncio.Future[list[object]]
    enqueued: float
    earliest_deadline: float | None = None
    results: list[object] = field(default_factory=list)


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_concurrent: int = 1,
        rows_of: Callable[[T], int] = lambda item: 1,
        deadline_of: Callable[[T], float | None] = lambda item: None,
        expired: Callable[[T], BaseException] = lambda item: TimeoutError("deadline passed"),
        split_on: tuple[type[BaseException], ...] = (),
        deadline_margin_ms: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``deadline_of`` is in seconds since the epoch (the header's ms / 1000), on ``clock.time()``;
        the wait budget and deadlines are waited for on ``clock``."""
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self._rows_of = rows_of
        self._deadline_of = deadline_of
        self._expired = expired
        self._split_on = split_on
        self._deadline_margin_s = deadline_margin_ms / 1000
        self._clock = clock
        self._max_concurrent = max_concurrent
        self._queue: deque[_Unit[T]] = deque()
        self._queued_rows = 0
        self._slots: asyncio.Semaphore | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batch_sizes: deque[int] = deque(maxlen=1024)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the loop's objects inside the running loop; safe to call twice."""
        if self._task is not None:
            return
        self._slots = asyncio.Semaphore(self._max_concurrent)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._dispatch_loop(), name="batcher")
        self._task.add_done_callback(self._on_loop_done)

    async def stop(self) -> None:
        """Run what is queued, wait for running batches, then stop. Safe to call twice."""
        task, self._task = self._task, None
        if task is None:
            return
        while self._queue:
            await self._dispatch(self._take_batch())
        task.cancel()
        await asyncio.gather(task, *self._running, return_exceptions=True)

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        """If the loop dies, nobody would ever answer the queue: fail every waiter instead."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        while self._queue:
            unit = self._queue.popleft()
            if not unit.future.done():
                unit.future.set_exception(error)  # type: ignore[arg-type]

    # submitting ------------------------------------------------------------------------------

    async def submit(self, items: list[T]) -> list[R | BaseException]:
        """One result per item, in order: the value, or the exception that item failed with."""
        if self._task is None or self._wakeup is None:
            raise BatcherClosed("batcher is not running")
        if not items:
            return []
        futures = [self._enqueue(chunk) for chunk in self._chunks(items)]
        self._wakeup.set()
        if len(futures) == 1:
            return await futures[0]  # type: ignore[return-value]
        return [r for part in await asyncio.gather(*futures) for r in part]  # type: ignore[misc]

    def _chunks(self, items: list[T]) -> list[list[T]]:
        """Split a submission so no unit exceeds ``max_batch_size`` rows (one item may, alone)."""
        chunks: list[list[T]] = [[]]
        rows = 0
        for item in items:
            item_rows = self._rows_of(item)
            if chunks[-1] and rows + item_rows > self.max_batch_size:
                chunks.append([])
                rows = 0
            chunks[-1].append(item)
            rows += item_rows
        return chunks

    def _enqueue(self, items: list[T]) -> asyncio.Future[list[object]]:
        deadlines = [d for d in map(self._deadline_of, items) if d is not None]
        unit: _Unit[T] = _Unit(
            items=items,
            rows=sum(map(self._rows_of, items)),
            future=asyncio.get_running_loop().create_future(),
            enqueued=self._clock.time(),
            earliest_deadline=min(deadlines) if deadlines else None,
        )
        self._queue.append(unit)
        self._queued_rows += unit.rows
        return unit.future

    # dispatching -----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delay = self._flush_at() - self._clock.time()
            if self._queued_rows < self.max_batch_size and delay > 0:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await self._clock.wait_for(self._wakeup.wait(), delay)
                continue
            await self._slots.acquire()
            batch = self._take_batch()
            task = asyncio.create_task(self._dispatch(batch, holds_slot=True))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _flush_at(self) -> float:
        """When the head unit must leave: its wait budget, or sooner for a near deadline."""
        oldest = self._queue[0]
        flush_at = oldest.enqueued + self.max_wait_s
        deadlines = [u.earliest_deadline - self._deadline_margin_s for u in self._queue if u.earliest_deadline is not None]
        return min([flush_at, *deadlines])

    def _take_batch(self) -> list[_Unit[T]]:
        """Whole units, oldest first, up to ``max_batch_size`` rows (a larger unit goes alone)."""
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            unit = self._queue.popleft()
            batch.append(unit)
            rows += unit.rows
        self._queued_rows -= rows
        return batch

    async def _dispatch(self, units: list[_Unit[T]], holds_slot: bool = False) -> None:
        try:
            now = self._clock.time()
            results: dict[int, object] = {}
            live: list[tuple[int, T]] = []
            flat = [item for unit in units for item in unit.items]
            for index, item in enumerate(flat):
                deadline = self._deadline_of(item)
                if deadline is not None and deadline <= now:
                    results[index] = self._expired(item)
                else:
                    live.append((index, item))
            if live:
                self.batch_sizes.append(len(live))
                outcomes = await self._run_isolating([item for _, item in live])
                results.update({index: outcome for (index, _), outcome in zip(live, outcomes)})
            self._resolve(units, [results[i] for i in range(len(flat))])
        except BaseException as exc:  # a bug or cancellation: no waiter may hang
            for unit in units:
                if not unit.future.done():
                    unit.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if holds_slot and self._slots is not None:
                self._slots.release()

    async def _run_isolating(self, items: list[T]) -> list[object]:
        try:
            values: list[object] = list(await self._run_batch(items))
        except self._split_on as exc:
            if len(items) == 1:
                return [exc]
            mid = len(items) // 2
            return await self._run_isolating(items[:mid]) + await self._run_isolating(items[mid:])
        except Exception as exc:  # noqa: BLE001 - whatever failed the batch is every waiter's result
            return [exc] * len(items)
        if len(values) != len(items):
            error = ValueError(f"batch of {len(items)} items returned {len(values)} results")
            return [error] * len(items)
        return values

    @staticmethod
    def _resolve(units: list[_Unit[T]], results: list[object]) -> None:
        start = 0
        for unit in units:
            stop = start + len(unit.items)
            if not unit.future.done():
                unit.future.set_result(results[start:stop])
            start = stop
