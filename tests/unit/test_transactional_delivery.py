"""The exactly-once delivery on in-memory transactional producers: which outputs and offsets go
into a transaction, and what a fenced or failed transaction leaves behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError, ProducerFenced

from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.errors import DeliveryFailed, ProducerFencedOut
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.outgoing import Outgoing
from streaminfer.streams.pipeline.transactional import TransactionalDelivery
from streaminfer.streams.settings import KafkaSettings

TP = TopicPartition("requests", 0)
OTHER = TopicPartition("requests", 1)


class _Builder:
    def __init__(self) -> None:
        self.values: list[bytes | None] = []

    def append(self, timestamp: Any, key: bytes | None, value: bytes | None, headers: Any) -> object:
        self.values.append(value)
        return object()


class TransactionalProducer:
    """Keeps what each committed transaction held; ``fail`` is raised by the next commit."""

    def __init__(self, transactional_id: str) -> None:
        self.transactional_id = transactional_id
        self.committed: list[tuple[list[bytes | None], dict[TopicPartition, int]]] = []
        self.aborted = 0
        self.fail: Exception | None = None
        self.hang = False
        self._open: tuple[list[bytes | None], dict[TopicPartition, int]] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, builder: _Builder, topic: str, partition: int) -> asyncio.Future[object]:
        assert self._open is not None, "sent outside a transaction"
        self._open[0].extend(builder.values)
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def begin_transaction(self) -> None:
        self._open = ([], {})

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        assert self._open is not None
        self._open[1].update(offsets)

    async def commit_transaction(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        assert self._open is not None
        self.committed.append(self._open)
        self._open = None

    async def abort_transaction(self) -> None:
        self._open = None
        self.aborted += 1


class Clients(KafkaClients):
    def __init__(self) -> None:
        super().__init__(KafkaSettings(group_id="g"))
        self.producers: dict[str, TransactionalProducer] = {}

    def producer(self, **overrides: Any) -> Any:
        producer = self.producers[overrides["transactional_id"]] = TransactionalProducer(overrides["transactional_id"])
        return producer


class Consumer:
    async def seek_to_committed(self, *partitions: TopicPartition) -> None:
        return None


def answer(tp: TopicPartition, offset: int) -> Outgoing:
    return Outgoing("predictions", None, f"{tp.partition}@{offset}".encode(), [], tp, offset)


async def delivery_with(tracker: OffsetTracker, clients: Clients, *partitions: TopicPartition) -> TransactionalDelivery:
    delivery = TransactionalDelivery(clients, Consumer(), tracker, commit_timeout_s=0.05)  # type: ignore[arg-type]
    await delivery.assigned(list(partitions))
    return delivery


async def test_each_owned_partition_has_its_own_transactional_id_named_after_group_topic_and_partition():
    clients = Clients()
    await delivery_with(OffsetTracker(), clients, TP, OTHER)
    assert sorted(clients.producers) == ["g-requests-0", "g-requests-1"]


async def test_outputs_after_a_gap_wait_for_the_transaction_that_commits_their_offsets():
    tracker, clients = OffsetTracker(), Clients()
    delivery = await delivery_with(tracker, clients, TP)
    for offset in range(3):
        tracker.track(TP, offset)
    await delivery.deliver([answer(TP, 0)])
    await delivery.deliver([answer(TP, 2)])
    await delivery.commit()
    await delivery.deliver([answer(TP, 1)])
    await delivery.commit()

    assert clients.producers["g-requests-0"].committed == [
        ([b"0@0"], {TP: 1}),
        ([b"0@1", b"0@2"], {TP: 3}),
    ]


async def test_a_fenced_member_commits_nothing_and_refuses_further_batches():
    tracker, clients = OffsetTracker(), Clients()
    delivery = await delivery_with(tracker, clients, TP)
    producer = clients.producers["g-requests-0"]
    producer.fail = ProducerFenced()
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    with pytest.raises(ProducerFencedOut, match="g-requests-0"):
        await delivery.commit()
    with pytest.raises(ProducerFencedOut):
        await delivery.deliver([answer(TP, 0)])
    assert producer.committed == []
    assert tracker.committable() == {TP: 1}, "the offset was not marked committed"


async def test_a_transaction_the_broker_fails_is_aborted_and_its_offsets_stay_uncommitted():
    tracker, clients = OffsetTracker(), Clients()
    delivery = await delivery_with(tracker, clients, TP)
    producer = clients.producers["g-requests-0"]
    producer.fail = KafkaTimeoutError()
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    with pytest.raises(DeliveryFailed):
        await delivery.commit()
    assert (producer.committed, producer.aborted) == ([], 1)
    assert tracker.committable() == {TP: 1}


async def test_a_transaction_that_never_commits_fails_the_delivery_instead_of_holding_readers_back():
    tracker, clients = OffsetTracker(), Clients()
    delivery = await delivery_with(tracker, clients, TP)
    producer = clients.producers["g-requests-0"]
    producer.hang = True
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    with pytest.raises(DeliveryFailed, match="TimeoutError"):
        await delivery.commit()
    assert (producer.committed, producer.aborted) == ([], 1)
    assert tracker.committable() == {TP: 1}


async def test_records_of_a_partition_being_revoked_are_not_taken():
    delivery = await delivery_with(OffsetTracker(), Clients(), TP, OTHER)
    delivery.revoking([TP])
    assert (delivery.owns(TP), delivery.owns(OTHER)) == (False, True)
