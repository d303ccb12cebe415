"""At-least-once delivery rides out a broker that is away: retriable errors are retried, not raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaTimeoutError, LeaderNotAvailableError

from streaminfer.streams.errors import DeliveryFailed
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.delivery import AtLeastOnceDelivery
from streaminfer.streams.pipeline.outgoing import Outgoing

SOURCE = TopicPartition("requests", 0)
NO_WAIT = (0.001, 0.001)


class _Builder:
    def append(self, **_: Any) -> object:
        return object()


class FlakyProducer:
    """Fails the first ``failures`` batches with the errors given, then acknowledges."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.batches = 0

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, builder: _Builder, topic: str, partition: int) -> asyncio.Future[object]:
        self.batches += 1
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.errors:
            future.set_exception(self.errors.pop(0))
        else:
            future.set_result(None)
        return future


class FlakyConsumer:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.committed: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.committed.append(dict(offsets))


def outgoing(offset: int) -> Outgoing:
    return Outgoing("predictions", b"k", b"v", [], SOURCE, offset)


def tracked(*offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.track(SOURCE, offset)
    return tracker


async def test_a_batch_the_broker_could_not_take_is_sent_again_until_acknowledged_and_the_outage_is_reported_once():
    producer = FlakyProducer(KafkaTimeoutError(), LeaderNotAvailableError(), LeaderNotAvailableError())
    tracker, heard = tracked(0, 1), []
    delivery = AtLeastOnceDelivery(producer, FlakyConsumer(), tracker, heard.append, backoff_s=NO_WAIT)  # type: ignore[arg-type]
    await delivery.deliver([outgoing(0), outgoing(1)])
    assert producer.batches == 4
    assert heard == [False, True]
    assert tracker.committable() == {SOURCE: 2}


async def test_a_commit_the_broker_could_not_take_is_retried_and_offsets_move_only_once_it_is():
    consumer, heard = FlakyConsumer(LeaderNotAvailableError()), []
    tracker = tracked(0)
    delivery = AtLeastOnceDelivery(FlakyProducer(), consumer, tracker, heard.append, backoff_s=NO_WAIT)  # type: ignore[arg-type]
    await delivery.deliver([outgoing(0)])
    await delivery.commit()
    assert consumer.committed == [{SOURCE: 1}]
    assert heard == [False, True]
    assert tracker.committable() == {}


async def test_an_error_that_no_retry_can_fix_still_stops_delivery():
    producer = FlakyProducer(CommitFailedError())
    with pytest.raises(DeliveryFailed):
        await AtLeastOnceDelivery(producer, FlakyConsumer(), tracked(0), backoff_s=NO_WAIT).deliver([outgoing(0)])  # type: ignore[arg-type]


async def test_once_stopping_a_broker_that_is_away_is_not_waited_for():
    stopping = asyncio.Event()
    stopping.set()
    delivery = AtLeastOnceDelivery(FlakyProducer(LeaderNotAvailableError()), FlakyConsumer(), tracked(0),  # type: ignore[arg-type]
                                   stopping=stopping, backoff_s=NO_WAIT)
    with pytest.raises(DeliveryFailed):
        await delivery.deliver([outgoing(0)])


async def test_a_commit_refused_after_the_group_moved_on_is_dropped_and_its_offsets_stay_uncommitted():
    consumer, tracker = FlakyConsumer(CommitFailedError()), tracked(0)
    delivery = AtLeastOnceDelivery(FlakyProducer(), consumer, tracker, backoff_s=NO_WAIT)  # type: ignore[arg-type]
    await delivery.deliver([outgoing(0)])
    await delivery.commit()
    assert consumer.committed == []
    assert tracker.committable() == {SOURCE: 1}, "read again by the next owner, never marked committed"
