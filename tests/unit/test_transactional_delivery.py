"""The exactly-once delivery on in-memory transactional producers: which outputs and offsets go
into a transaction, and what a fenced or failed transaction leaves behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, ProducerFenced, UnsupportedVersionError

from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.errors import DeliveryFailed
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
    """Keeps what each committed transaction held; ``fail`` is raised by the next commit, once;
    ``unacknowledged`` fails the next transaction's sends; a commit takes ``delay_s``."""

    def __init__(self, transactional_id: str) -> None:
        self.transactional_id = transactional_id
        self.committed: list[tuple[list[bytes | None], dict[TopicPartition, int]]] = []
        self.aborted = 0
        self.fail: Exception | None = None
        self.unacknowledged: Exception | None = None
        self.delay_s = 0.0
        self.broken: Exception | None = None
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
        if self.unacknowledged is not None:
            done.set_exception(self.unacknowledged)
        else:
            done.set_result(None)
        return done

    async def begin_transaction(self) -> None:
        self._open = ([], {})

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        assert self._open is not None
        self._open[1].update(offsets)

    async def commit_transaction(self) -> None:
        await asyncio.sleep(self.delay_s)
        if self.broken is not None:
            raise self.broken
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure
        assert self._open is not None
        self.committed.append(self._open)
        self._open = None

    async def abort_transaction(self) -> None:
        self._open = None
        self.aborted += 1
        self.unacknowledged = None


class Clients(KafkaClients):
    """The newest producer per transactional id, and every one opened; ``broken`` is raised by
    every commit of every producer opened from then on."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings(group_id="g"))
        self.producers: dict[str, TransactionalProducer] = {}
        self.opened: list[TransactionalProducer] = []
        self.broken: Exception | None = None

    def producer(self, **overrides: Any) -> Any:
        producer = self.producers[overrides["transactional_id"]] = TransactionalProducer(overrides["transactional_id"])
        producer.broken = self.broken
        self.opened.append(producer)
        return producer


class Consumer:
    """The group's committed offsets and the log starts; remembers where partitions were sought."""

    def __init__(self, committed: dict[TopicPartition, int] | None = None) -> None:
        self.offsets = committed or {}
        self.sought: dict[TopicPartition, int] = {}
        self.unreachable = False

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.offsets.get(tp)

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def topics(self) -> set[str]:
        if self.unreachable:
            raise KafkaConnectionError("no broker answers")
        return {"requests"}


def answer(tp: TopicPartition, offset: int) -> Outgoing:
    return Outgoing("predictions", None, f"{tp.partition}@{offset}".encode(), [], tp, offset)


async def delivery_with(tracker: OffsetTracker, clients: Clients, *partitions: TopicPartition,
                        heard: list[object] | None = None, consumer: Consumer | None = None) -> TransactionalDelivery:
    """``heard`` collects what the delivery says: the broker away (False) or back (True), a
    partition fenced (("fenced", rejoin))."""
    heard = heard if heard is not None else []
    delivery = TransactionalDelivery(clients, consumer or Consumer(), tracker, connected=heard.append,  # type: ignore[arg-type]
                                     fenced=lambda rejoin: heard.append(("fenced", rejoin)), backoff_s=(0.001, 0.001), patience_s=0.05)
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


async def test_a_fenced_partition_commits_nothing_is_given_up_and_the_member_asks_to_rejoin():
    tracker, clients, heard = OffsetTracker(), Clients(), []
    delivery = await delivery_with(tracker, clients, TP, OTHER, heard=heard)
    fenced, other = clients.producers["g-requests-0"], clients.producers["g-requests-1"]
    fenced.fail = ProducerFenced()
    for tp in (TP, OTHER):
        tracker.track(tp, 0)
        await delivery.deliver([answer(tp, 0)])

    await delivery.commit()
    await delivery.deliver([answer(TP, 1)])

    assert fenced.committed == [] and other.committed == [([b"1@0"], {OTHER: 1})]
    assert (delivery.owns(TP), delivery.owns(OTHER), delivery.fenced) == (False, True, 1)
    assert heard == [("fenced", True)]
    assert tracker.committable() == {}, "nothing is left to commit for the fenced partition"


async def test_a_partition_fenced_while_it_is_revoked_does_not_ask_for_another_rejoin():
    tracker, clients, heard = OffsetTracker(), Clients(), []
    delivery = await delivery_with(tracker, clients, TP, heard=heard)
    clients.producers["g-requests-0"].fail = ProducerFenced()
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])
    delivery.revoking([TP])

    await delivery.commit()

    assert (delivery.fenced, heard) == (1, [("fenced", False)])


async def test_a_transaction_the_broker_fails_for_now_is_aborted_and_done_again_with_the_same_outputs():
    tracker, clients, heard = OffsetTracker(), Clients(), []
    delivery = await delivery_with(tracker, clients, TP, heard=heard)
    producer = clients.producers["g-requests-0"]
    producer.fail = KafkaTimeoutError()
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    await delivery.commit()

    assert (producer.committed, producer.aborted) == ([([b"0@0"], {TP: 1})], 1)
    assert heard == [False, True]
    assert tracker.committable() == {}


async def test_outputs_the_broker_did_not_acknowledge_are_never_committed_without_them():
    tracker, clients = OffsetTracker(), Clients()
    delivery = await delivery_with(tracker, clients, TP)
    producer = clients.producers["g-requests-0"]
    producer.unacknowledged = KafkaTimeoutError()  # a batch that expired unsent
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    await delivery.commit()

    assert (producer.committed, producer.aborted) == ([([b"0@0"], {TP: 1})], 1)


async def test_a_producer_that_failed_is_opened_again_under_its_id_and_the_transaction_done_again():
    tracker, clients = OffsetTracker(), Clients()
    delivery = await delivery_with(tracker, clients, TP)
    clients.producers["g-requests-0"].fail = UnsupportedVersionError()
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    await delivery.commit()

    first, second = clients.opened
    assert (first.committed, second.committed) == ([], [([b"0@0"], {TP: 1})])
    assert tracker.committable() == {}


async def test_a_producer_opened_again_finding_the_group_offset_moved_gives_the_partition_up():
    tracker, clients, heard, consumer = OffsetTracker(), Clients(), [], Consumer()
    delivery = await delivery_with(tracker, clients, TP, heard=heard, consumer=consumer)
    clients.producers["g-requests-0"].fail = UnsupportedVersionError()
    consumer.offsets[TP] = 5  # another member committed meanwhile
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    await delivery.commit()

    assert [p.committed for p in clients.opened] == [[], []]
    assert (delivery.owns(TP), heard) == (False, [("fenced", True)])


async def test_a_transaction_failing_for_good_is_aborted_and_its_offsets_stay_uncommitted():
    tracker, clients = OffsetTracker(), Clients()
    delivery = await delivery_with(tracker, clients, TP)
    clients.broken = UnsupportedVersionError()
    clients.producers["g-requests-0"].broken = clients.broken
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    with pytest.raises(DeliveryFailed, match="UnsupportedVersionError"):
        await delivery.commit()
    assert [(p.committed, p.aborted) for p in clients.opened] == [([], 0), ([], 1)], "opened again once, then given up"
    assert tracker.committable() == {TP: 1}


async def test_a_commit_waiting_past_the_patience_reports_the_broker_away_and_back():
    tracker, clients, heard = OffsetTracker(), Clients(), []
    delivery = await delivery_with(tracker, clients, TP, heard=heard)
    producer = clients.producers["g-requests-0"]
    producer.delay_s = 0.2
    tracker.track(TP, 0)
    await delivery.deliver([answer(TP, 0)])

    await delivery.commit()

    assert producer.committed == [([b"0@0"], {TP: 1})]
    assert heard == [False, True]


async def test_assigned_partitions_are_positioned_at_their_committed_offset_or_the_beginning():
    consumer = Consumer(committed={TP: 7})
    delivery = TransactionalDelivery(Clients(), consumer, OffsetTracker())  # type: ignore[arg-type]
    await delivery.assigned([TP, OTHER])
    assert consumer.sought == {TP: 7, OTHER: 0}
    assert delivery.owns(TP) and delivery.owns(OTHER)


async def test_records_of_a_partition_being_revoked_are_not_taken():
    delivery = await delivery_with(OffsetTracker(), Clients(), TP, OTHER)
    delivery.revoking([TP])
    assert (delivery.owns(TP), delivery.owns(OTHER)) == (False, True)


async def test_with_nothing_to_commit_the_broker_is_asked_for_metadata_and_its_absence_reported():
    consumer, heard = Consumer(), []
    delivery = await delivery_with(OffsetTracker(), Clients(), TP, heard=heard, consumer=consumer)
    consumer.unreachable = True
    await delivery.commit()
    await delivery.commit()  # within the patience: not asked again
    await asyncio.sleep(0.06)
    consumer.unreachable = False
    await delivery.commit()
    assert heard == [False, True]
