"""A consumer that keeps up fetches again once its batch is acknowledged; one with a backlog
overlaps its batches (``pipeline.overlap_from_backlog``).

Overlapping a keeping-up consumer's batches splits what arrives into many small fetches, each
with its own produce request: the CPU that costs is what the tail latency needed. The consumer
and the producer are fakes handed in through ``KafkaClients``; the producer holds every
acknowledgement until the test releases it, so the test sees whether the next fetch waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from tests.support.fake_kafka import GivenClients, RecordBatch

GUARD_S = 10
TOPICS = TopicSettings(health_reports=False)
SOURCE = TopicPartition(TOPICS.requests, 0)


def undecodable_requests(first: int, count: int) -> list[ConsumerRecord]:
    """Each ends as a dead letter at once (no model needed)."""
    return [ConsumerRecord(SOURCE.topic, SOURCE.partition, offset, 0, 0, b"r", b"{not json", None, 1, 9, [])
            for offset in range(first, first + count)]


class ConsumerWithBacklog:
    """Hands out the batches it is given, one per fetch, and reports ``backlog`` more records on
    the broker than it has handed out."""

    def __init__(self, batches: list[list[ConsumerRecord]], backlog: int) -> None:
        self._batches = batches
        self._backlog = backlog
        self._handed_out = 0
        self.fetches = 0

    def subscribe(self, topics: list[str], listener: object = None) -> None:
        return None

    async def start(self) -> None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return {SOURCE}

    def highwater(self, tp: TopicPartition) -> int:
        return self._handed_out + self._backlog

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self.highwater(tp)

    async def getmany(self, timeout_ms: int = 0, **_: object) -> dict[TopicPartition, list[ConsumerRecord]]:
        if not self._batches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.fetches += 1
        batch = self._batches.pop(0)
        self._handed_out = batch[-1].offset + 1
        return {SOURCE: batch}

    def pause(self, *partitions: TopicPartition) -> None:
        return None

    def resume(self, *partitions: TopicPartition) -> None:
        return None

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None

    async def stop(self) -> None:
        return None


class ProducerHoldingAcknowledgements:
    """Every batch sent waits for ``release()`` to be acknowledged."""

    def __init__(self) -> None:
        self.sent = 0
        self._held: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> RecordBatch:
        return RecordBatch()

    async def send_batch(self, batch: RecordBatch, topic: str, partition: int) -> asyncio.Future[None]:
        self.sent += 1
        held = asyncio.get_running_loop().create_future()
        self._held.append(held)
        return held

    def release(self) -> None:
        for held in self._held:
            if not held.done():
                held.set_result(None)

    async def stop(self) -> None:
        self.release()


async def until(condition: Callable[[], bool], what: str) -> None:
    async def polled() -> None:
        while not condition():  # noqa: ASYNC110 - the fakes have no event for each of these
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(polled(), GUARD_S)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


async def fetches_while_the_first_batch_is_unacknowledged(tmp_path, backlog: int) -> int:
    settings = PipelineSettings(overlap_from_backlog=256, max_inflight_batches=4, poll_timeout_ms=5,
                                commit_interval_ms=20, routing_poll_s=0.02)
    models = ServedModels(ModelRepository(tmp_path), "none", make_pool=lambda entry: None)  # type: ignore[arg-type,return-value]
    consumer = ConsumerWithBacklog([undecodable_requests(0, 5), undecodable_requests(5, 5)], backlog)
    producer = ProducerHoldingAcknowledgements()
    pipeline = Pipeline(KafkaSettings(), TOPICS, settings, models, PipelineMetrics(CollectorRegistry()),
                        clients=GivenClients(consumer, producer))
    await pipeline.start()
    try:
        await until(lambda: producer.sent >= 1, "the first batch's dead letters were sent")
        await asyncio.sleep(0.1)  # room for the loop to fetch again, if it would
        fetched = consumer.fetches
        producer.release()
        await until(lambda: consumer.fetches == 2, "the second batch was fetched")
        producer.release()
        await until(lambda: producer.sent >= 2, "the second batch's dead letters were sent")
        producer.release()
    finally:
        await pipeline.stop()
    assert pipeline.failure is None
    return fetched


@pytest.mark.parametrize("backlog", [0, 255])
async def test_a_consumer_that_keeps_up_fetches_again_only_once_its_batch_is_acknowledged(tmp_path, backlog):
    assert await fetches_while_the_first_batch_is_unacknowledged(tmp_path, backlog) == 1


async def test_a_consumer_with_a_backlog_fetches_the_next_batch_while_one_awaits_its_acknowledgement(tmp_path):
    assert await fetches_while_the_first_batch_is_unacknowledged(tmp_path, backlog=256) == 2
