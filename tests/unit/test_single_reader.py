"""The lifecycle the monitor, alerting and the experiment controller share, on in-memory clients:
start and stop twice, ``async with``, a failure recorded by the task's done-callback, where each
partition resumes, and clients closed after a failed start."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from streaminfer.streams.errors import BrokerUnreachable
from streaminfer.streams.single_reader import Batches, Offsets, SingleReader, advance
from streaminfer.streams.topics import TopicSpec
from tests.support.fake_kafka import FakeBroker, FakeClients


class Copier(SingleReader):
    """Copies the values of ``in`` to ``out`` and commits its offsets for lag tools; a value
    ``boom`` fails it."""

    def __init__(self, clients: FakeClients, saved: Offsets | None = None, from_group: bool = True) -> None:
        super().__init__("copier", clients, "copier-group", reads=[TopicSpec("in", 2, 1)],
                         writes=[TopicSpec("out", 1, 1)], poll_timeout_ms=5, max_records=3)
        self.resume_from_group = from_group
        self.saved = saved or {}
        self.offsets: Offsets = {}
        self.copied: list[bytes] = []
        self.finished = 0
        self.fetches = 0

    def _prepare(self) -> Offsets:
        return dict(self.saved)

    async def _process(self, batches: Batches) -> None:
        self.fetches += 1
        for records in batches.values():
            for record in records:
                if record.value == b"boom":
                    raise ValueError("boom")
                self.copied.append(record.value)
                await self.producer.send("out", record.value)
        advance(self.offsets, batches)
        await self._commit_for_lag_tools(self.offsets)

    async def _finish(self) -> None:
        self.finished += 1


async def until(predicate, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def broker_with(values: dict[int, list[bytes]]) -> FakeBroker:
    broker = FakeBroker()
    broker.create("in", partitions=2)
    for partition, items in values.items():
        for value in items:
            broker.append("in", value, partition=partition)
    return broker


async def test_start_creates_the_declared_topics_and_reads_every_partition_from_the_beginning():
    broker = broker_with({0: [b"a", b"b", b"c", b"d"], 1: [b"x"]})
    clients = FakeClients(broker)
    async with Copier(clients) as copier:
        await until(lambda: len(copier.copied) == 5)
    assert clients.created() == ["out"]  # "in" existed already
    assert clients.assigned() == {"in"} and len(clients.consumers[0].assigned) == 2
    assert sorted(copier.copied) == [b"a", b"b", b"c", b"d", b"x"]
    assert broker.values("out") == copier.copied
    assert copier.offsets == {("in", 0): 4, ("in", 1): 1}


async def test_start_twice_opens_one_set_of_clients_and_stop_twice_finishes_and_closes_once():
    clients = FakeClients(broker_with({}))
    copier = Copier(clients)
    await copier.stop()  # before start: nothing to do
    await copier.start()
    await copier.start()
    assert copier.running
    assert (len(clients.producers), len(clients.consumers)) == (1, 1)
    await asyncio.gather(copier.stop(), copier.stop())
    await copier.stop()
    assert not copier.running and copier.finished == 1
    assert clients.producers[0].stopped == 1 and clients.consumers[0].stopped == 1
    assert copier.failure is None


async def test_a_failing_fetch_is_recorded_by_the_done_callback_and_stop_still_closes_the_clients():
    clients = FakeClients(broker_with({0: [b"a", b"boom", b"b"]}))
    copier = Copier(clients)
    await copier.start()
    await until(lambda: copier.failure is not None)
    assert isinstance(copier.failure, ValueError) and not copier.running
    with pytest.raises(ValueError, match="boom"):
        await copier.wait()
    await copier.stop()  # no error: the failure is data, already recorded
    assert copier.finished == 0, "no checkpoint after a failure"
    assert clients.producers[0].stopped == 1 and clients.consumers[0].stopped == 1


async def test_a_partition_resumes_at_its_saved_offset_else_at_the_groups_else_at_the_beginning():
    broker = broker_with({0: [b"p0-0", b"p0-1", b"p0-2"], 1: [b"p1-0", b"p1-1", b"p1-2"]})
    broker.committed[("copier-group", TopicPartition("in", 0))] = 1
    broker.committed[("copier-group", TopicPartition("in", 1))] = 1
    async with Copier(FakeClients(broker), saved={("in", 1): 2}) as copier:
        await until(lambda: len(copier.copied) == 3)
    assert sorted(copier.copied) == [b"p0-1", b"p0-2", b"p1-2"]

    async with Copier(FakeClients(broker), saved={("in", 1): 2}, from_group=False) as fresh:
        await until(lambda: len(fresh.copied) == 4)
    assert sorted(fresh.copied) == [b"p0-0", b"p0-1", b"p0-2", b"p1-2"]


async def test_offsets_are_committed_under_the_group_for_lag_tools_only_once_there_are_some():
    broker = broker_with({})
    async with Copier(FakeClients(broker)) as copier:
        await until(lambda: copier.fetches > 2)
        assert broker.committed == {}
        broker.append("in", b"a", partition=1)
        broker.append("in", b"b", partition=1)
        await until(lambda: len(copier.copied) == 2)
    assert broker.committed == {("copier-group", TopicPartition("in", 1)): 2}


async def test_clients_opened_before_a_failed_start_are_closed_and_the_reader_can_start_later():
    broker = broker_with({0: [b"a"]})
    clients = FakeClients(broker, fail_consumer_start=True)
    copier = Copier(clients)
    with pytest.raises(BrokerUnreachable):
        await copier.start()
    assert clients.producers[0].stopped == 1 and not copier.running
    clients.fail_consumer_start = False
    async with copier:
        await until(lambda: copier.copied == [b"a"])


async def test_cancelling_a_wait_leaves_the_reader_running():
    copier = Copier(FakeClients(broker_with({})))
    async with copier:
        waiter = asyncio.create_task(copier.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert copier.running
    assert copier.finished == 1
