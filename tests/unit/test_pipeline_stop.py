"""Stopping never hangs on the broker: a group stuck in a rebalance (a member that left and is
still awaited, as the embedded broker sometimes does) holds each stop step at most
``stop_step_timeout_s``; what could not be committed is redelivered later.

The consumer and the producer are fakes handed in through ``KafkaClients``; the stop timeouts run
on a manual clock, so the test advances through each step instead of waiting for it.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.streams.clock import ManualClock
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from tests.support.fake_kafka import GivenClients, RecordBatch

GUARD_S = 10
TOPICS = TopicSettings(health_reports=False)
SOURCE = TopicPartition(TOPICS.requests, 0)


def undecodable_request(offset: int) -> ConsumerRecord:
    """Ends as a dead letter at once (no model needed), so its offset waits to be committed."""
    return ConsumerRecord(SOURCE.topic, SOURCE.partition, offset, 0, 0, b"r", b"{not json", None, 1, 9, [])


def never() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


class ConsumerInEndlessRebalance:
    """Hands out its records, then every fetch, commit and group leave waits forever."""

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self._records = records
        self.commits: list[dict[TopicPartition, int]] = []
        self.stop_called = False

    def subscribe(self, topics: list[str], listener: object = None) -> None:
        return None

    async def start(self) -> None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return {SOURCE}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None  # no fetch response has told it yet

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return None

    async def getmany(self, **_: object) -> dict[TopicPartition, list[ConsumerRecord]]:
        if self._records:
            records, self._records = self._records, []
            return {SOURCE: records}
        await never()
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        await never()

    async def stop(self) -> None:
        self.stop_called = True
        await never()


class ProducerThatAcknowledges:
    """Acknowledges every batch at once."""

    def __init__(self) -> None:
        self.acknowledged = asyncio.Event()
        self.stopped = False

    async def start(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> RecordBatch:
        return RecordBatch()

    async def send_batch(self, batch: RecordBatch, topic: str, partition: int) -> asyncio.Future[None]:
        sent = asyncio.get_running_loop().create_future()
        sent.set_result(None)
        self.acknowledged.set()
        return sent

    async def stop(self) -> None:
        self.stopped = True


async def test_stop_gives_up_on_a_fetch_a_commit_and_a_group_leave_that_never_finish(tmp_path):
    step_s = 5.0
    # the commit and routing loops stay asleep: the only commit tried is the final one
    settings = PipelineSettings(stop_step_timeout_s=step_s, commit_interval_ms=3_600_000, routing_poll_s=3600)
    models = ServedModels(ModelRepository(tmp_path), "none", make_pool=lambda entry: None)  # type: ignore[arg-type,return-value]
    consumer, producer, clock = ConsumerInEndlessRebalance([undecodable_request(0)]), ProducerThatAcknowledges(), ManualClock()
    pipeline = Pipeline(KafkaSettings(), TOPICS, settings, models, PipelineMetrics(CollectorRegistry()),
                        clients=GivenClients(consumer, producer), clock=clock)
    await pipeline.start()
    await asyncio.wait_for(producer.acknowledged.wait(), GUARD_S)  # its dead letter is acknowledged

    stopping = asyncio.create_task(pipeline.stop())
    for step in ("the last fetch", "the final commit", "leaving the group"):
        due = await asyncio.wait_for(clock.sleeping(within_s=step_s), GUARD_S)
        assert due == clock.monotonic() + step_s, f"{step} is given stop_step_timeout_s"
        clock.advance(step_s)
    await asyncio.wait_for(stopping, GUARD_S)

    assert consumer.commits == [{SOURCE: 1}], "the final commit was tried with what had ended"
    assert consumer.stop_called and producer.stopped
    assert clock.monotonic() == 3 * step_s and pipeline.failure is None
