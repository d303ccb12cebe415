"""When a feature worker counts as stuck (behind, idle and not rebalancing, for long enough),
and how far behind a partition it never fetched is."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from streaminfer.streams.features.stall import StallWatch, source_offsets, waiting_tasks


def test_a_partition_behind_whose_commits_do_not_move_for_long_enough_restarts_the_worker():
    watch = StallWatch(stall_after_s=10)
    stuck = ({"a": 5}, {"a": 20})
    assert not watch.check(0, *stuck, busy=False)
    assert not watch.check(9, *stuck, busy=False)
    assert watch.check(10, *stuck, busy=False)
    assert watch.restarts == 1


def test_one_stuck_partition_counts_even_while_others_flow():
    watch = StallWatch(stall_after_s=10)
    watch.check(0, {"a": 5, "b": 0}, {"a": 20, "b": 20}, busy=False)
    assert not watch.check(5, {"a": 5, "b": 10}, {"a": 20, "b": 15}, busy=False)
    assert watch.check(10, {"a": 5, "b": 20}, {"a": 20, "b": 5}, busy=False)


def test_moving_commits_caught_up_partitions_or_a_rebalance_each_restart_the_wait():
    watch = StallWatch(stall_after_s=10)
    watch.check(0, {"a": 1}, {"a": 5}, busy=False)
    assert not watch.check(8, {"a": 2}, {"a": 5}, busy=False)  # committed moved
    assert not watch.check(17, {"a": 2}, {"a": 0}, busy=False)  # caught up
    assert not watch.check(26, {"a": 2}, {"a": 5}, busy=True)  # rebalancing or recovering
    assert not watch.check(35, {"a": 2}, {"a": 5}, busy=False)
    assert watch.check(36, {"a": 2}, {"a": 5}, busy=False)


def test_the_stuck_report_says_where_each_task_waits():
    async def inner() -> None:
        await asyncio.sleep(10)

    async def outer() -> None:
        await inner()

    async def main() -> str:
        task = asyncio.create_task(outer(), name="probe")
        await asyncio.sleep(0.01)
        report = waiting_tasks()
        task.cancel()
        return report

    line = next(line for line in asyncio.run(main()).splitlines() if "probe" in line)
    assert "sleep@" in line and "inner@" in line and "outer@" in line


def tp(topic: str) -> TP:
    return TP(topic, 0)


CHANGELOG = tp("app-pending-changelog")


class _Consumer:
    """What ``source_offsets`` reads of Faust's consumer."""

    def __init__(self, fetched: dict[TP, int], committed: dict[TP, int | None], broker: dict[TP, int] | None) -> None:
        self._fetched, self._committed_offset, self._broker = fetched, committed, broker
        self.asked: list[set[TP]] = []

    def assignment(self) -> set[TP]:
        return {*self._committed_offset, CHANGELOG}

    def highwater(self, partition: TP) -> int | None:
        return self._fetched.get(partition)

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        self.asked.append(set(partitions))
        if self._broker is None:
            await asyncio.sleep(60)  # a consumer thread that never answers
        return {p: self._broker[p] for p in partitions}


def app_with(consumer: _Consumer) -> object:
    tables = SimpleNamespace(changelog_topics={CHANGELOG.topic})
    return SimpleNamespace(consumer=consumer, tables=tables)


def test_a_partition_the_restarted_consumer_never_fetched_is_measured_against_the_broker():
    a, b, c = tp("a"), tp("b"), tp("c")
    consumer = _Consumer(fetched={a: 10}, committed={a: 10, b: 3, c: None}, broker={b: 40, c: 7})
    committed, behind = asyncio.run(source_offsets(app_with(consumer), {}))
    assert consumer.asked == [{b, c}]
    assert committed == {a: 10, b: 3, c: 0} and behind == {a: 0, b: 37, c: 7}


def test_a_consumer_too_wedged_to_ask_the_broker_counts_as_behind():
    a = tp("a")
    consumer = _Consumer(fetched={}, committed={a: 5}, broker=None)
    committed, behind = asyncio.run(source_offsets(app_with(consumer), {}, timeout_s=0.05))
    assert committed == {a: 5} and behind == {a: 1}

