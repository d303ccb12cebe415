"""The dynamic batcher alone, on a manual clock: flush on size and on time, deadlines, failures
kept per item.

The clock moves only when a test advances it, so a batch that leaves on time leaves exactly when
its budget or deadline is due, and one that leaves on size never needs the clock to move. No
timing assertions: ``GUARD_S`` only turns a missing behaviour into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio

import pytest

from streaminfer.streams.clock import ManualClock
from streaminfer.streams.errors import BatcherClosed
from streaminfer.streams.pipeline.batcher import DynamicBatcher

GUARD_S = 10


class Boom(Exception):
    pass


class Recorder:
    def __init__(self, fail_on: set[str] = frozenset(), gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self.gate = gate
        self.entered = asyncio.Event()
        """Set when a batch starts running (before the gate)."""

    async def __call__(self, items: list[str]) -> list[str]:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(list(items))
        if self.fail_on.intersection(items):
            raise Boom(f"bad item in {items}")
        return [item.upper() for item in items]


def batcher(run, clock: ManualClock | None = None, **kwargs) -> DynamicBatcher:
    options = dict(max_batch_size=4, max_wait_ms=60_000, split_on=(Boom,), clock=clock or ManualClock())
    options.update(kwargs)
    return DynamicBatcher(run, **options)


async def test_a_full_batch_leaves_without_waiting_for_the_timer():
    run = Recorder()
    b = batcher(run, max_batch_size=4, max_wait_ms=600_000)
    b.start()
    results = await asyncio.wait_for(b.submit(["a", "b", "c", "d"]), GUARD_S)
    await b.stop()
    assert results == ["A", "B", "C", "D"] and run.batches == [["a", "b", "c", "d"]]


async def test_a_lone_item_leaves_exactly_when_its_wait_budget_is_spent():
    run, clock = Recorder(), ManualClock()
    b = batcher(run, clock, max_batch_size=100, max_wait_ms=5_000)
    b.start()
    pending = asyncio.create_task(b.submit(["x"]))
    assert await asyncio.wait_for(clock.sleeping(), GUARD_S) == 5.0
    clock.advance(4.5)
    assert not pending.done() and run.batches == [] and clock.wakeups == [5.0]
    clock.advance(0.5)
    assert await asyncio.wait_for(pending, GUARD_S) == ["X"]
    await b.stop()


async def test_units_queued_while_the_runner_is_busy_leave_together():
    gate = asyncio.Event()
    run = Recorder(gate=gate)
    b = batcher(run, max_batch_size=10, max_wait_ms=0, max_concurrent=1)
    b.start()
    first = asyncio.create_task(b.submit(["a"]))
    await asyncio.wait_for(run.entered.wait(), GUARD_S)  # "a" is running and holds the only slot
    later = [asyncio.create_task(b.submit([name])) for name in ("b", "c", "d")]
    await asyncio.sleep(0)  # one turn of the loop, not a wait on time: each submission queues its unit at its first step
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), GUARD_S)
    await b.stop()
    assert run.batches == [["a"], ["b", "c", "d"]]


async def test_an_expired_item_fails_with_deadline_and_is_never_run():
    run, clock = Recorder(), ManualClock()
    past = clock.time() - 1
    b = batcher(
        run, clock, max_batch_size=2, deadline_of=lambda item: past if item == "late" else None,
        expired=lambda item: TimeoutError(f"{item} expired"),
    )
    b.start()
    results = await asyncio.wait_for(b.submit(["late", "ok"]), GUARD_S)
    await b.stop()
    assert isinstance(results[0], TimeoutError) and results[1] == "OK"
    assert run.batches == [["ok"]]


async def test_a_near_deadline_flushes_its_margin_before_the_deadline_instead_of_after_the_wait_budget():
    run, clock = Recorder(), ManualClock()
    soon = clock.time() + 1.5
    b = batcher(run, clock, max_batch_size=100, max_wait_ms=600_000, deadline_of=lambda item: soon,
                deadline_margin_ms=500)
    b.start()
    pending = asyncio.create_task(b.submit(["urgent"]))
    assert await asyncio.wait_for(clock.sleeping(), GUARD_S) == 1.0
    clock.advance(1.0)
    assert await asyncio.wait_for(pending, GUARD_S) == ["URGENT"]
    await b.stop()
    assert run.batches == [["urgent"]]


async def test_one_bad_item_fails_alone_and_its_batch_mates_succeed():
    run = Recorder(fail_on={"bad"})
    b = batcher(run, max_batch_size=8)
    b.start()
    results = await asyncio.wait_for(b.submit(["a", "b", "bad", "c", "d", "e", "f", "g"]), GUARD_S)
    await b.stop()
    assert isinstance(results[2], Boom)
    assert [r for i, r in enumerate(results) if i != 2] == ["A", "B", "C", "D", "E", "F", "G"]


async def test_an_error_not_marked_for_splitting_fails_the_whole_batch_without_retries():
    class Down(Exception):
        pass

    calls = []

    async def run(items):
        calls.append(items)
        raise Down("no workers")

    b = batcher(run, max_batch_size=4)
    b.start()
    results = await asyncio.wait_for(b.submit(["a", "b", "c", "d"]), GUARD_S)
    await b.stop()
    assert all(isinstance(r, Down) for r in results) and len(calls) == 1


async def test_a_runner_returning_the_wrong_count_fails_each_item_instead_of_misaligning():
    async def run(items):
        return ["only-one"]

    b = batcher(run, max_batch_size=2)
    b.start()
    results = await asyncio.wait_for(b.submit(["a", "b"]), GUARD_S)
    await b.stop()
    assert all(isinstance(r, ValueError) for r in results)


async def test_submitting_to_a_stopped_batcher_is_refused():
    b = batcher(Recorder())
    with pytest.raises(BatcherClosed):
        await b.submit(["a"])


async def test_stop_runs_what_is_still_queued():
    run, clock = Recorder(), ManualClock()
    b = batcher(run, clock, max_batch_size=100, max_wait_ms=600_000)
    b.start()
    pending = asyncio.create_task(b.submit(["a", "b"]))
    await asyncio.wait_for(clock.sleeping(), GUARD_S)  # queued, waiting for its budget
    await asyncio.wait_for(b.stop(), GUARD_S)
    assert await pending == ["A", "B"]


async def test_a_submission_larger_than_the_batch_limit_is_split_into_full_batches():
    run = Recorder()
    b = batcher(run, max_batch_size=4, max_wait_ms=0)
    b.start()
    items = [f"i{n}" for n in range(10)]
    results = await asyncio.wait_for(b.submit(items), GUARD_S)
    await b.stop()
    assert results == [item.upper() for item in items]
    assert [len(batch) for batch in run.batches] == [4, 4, 2]
