"""A broker outage longer than ``request_timeout_ms`` is ridden out: the pipeline waits, says so,
and answers every request once the broker is back (at-least-once: repeats counted, none missing;
exactly-once: none missing and none repeated as a ``read_committed`` reader sees them).

The broker is an Apache Kafka of this test's own (the session's is shared by other tests), stopped
with SIGTERM (or killed with SIGKILL) and started again on the same port and data directory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from streaminfer.demo.model import demo_data
from streaminfer.streams.clients import ensure_topic_names
from streaminfer.streams.settings import KafkaSettings, PipelineSettings
from tests.integration.test_pipeline import demo_records
from tests.support.harness import Collector, app_settings, ends, started
from tests.support.kafka_jvm import ApacheKafkaBroker

REQUEST_TIMEOUT_MS = 5_000
OUTAGE_S = 20.0
RATE_PER_S = 2_000


class Feed:
    """Requests sent at a steady rate until ``stop``, the way a client keeps sending: the broker goes
    away mid-stream with batches in flight. Only what the broker acknowledged counts as sent."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, request_timeout_ms=REQUEST_TIMEOUT_MS)
        self._topic = topic
        self._rows = demo_data().x_test
        self._stopped = asyncio.Event()
        self._pending: list[asyncio.Future] = []
        self.acknowledged: dict[str, RecordMetadata] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        n = 0
        while not self._stopped.is_set():
            for key, value, headers in demo_records(self._rows, RATE_PER_S // 10, f"outage-{n}"):
                try:
                    future = await self._producer.send(self._topic, value=value, key=key, headers=headers)
                except KafkaError:  # the broker is away: this request was never sent
                    continue
                future.add_done_callback(functools.partial(self._done, key.decode()))
                self._pending.append(future)
            n += 1
            await asyncio.sleep(0.1)

    def _done(self, request_id: str, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.acknowledged[request_id] = future.result()

    async def stop(self) -> dict[TopicPartition, int]:
        """Stop sending, wait for every answer from the broker; where each partition's sent requests end."""
        self._stopped.set()
        if self._task is not None:
            await self._task
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._producer.stop()
        return ends(*({m.topic_partition: m.offset + 1} for m in self.acknowledged.values()))


async def _until(condition, timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.kafka_semantics
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize("end", ["stop", "kill"])
async def test_a_broker_down_longer_than_the_request_timeout_is_waited_out_and_every_request_is_answered(
    end, guarantee, tmp_path, topics, model_repo, ray_dashboard, caplog
):
    """``stop``: SIGTERM, a controlled shutdown; ``kill``: SIGKILL, after which the group has lost
    this member by the time the broker is back, so its next commit is refused (at-least-once) or
    its transactions' offsets land for a member the group no longer has (exactly-once, whose
    offsets carry no generation). Exactly-once transactions that fail while the broker is away are
    aborted and done again; what a ``read_committed`` reader sees holds each answer once."""
    caplog.set_level(logging.WARNING, logger="streaminfer.streams.pipeline.loop")
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    pipeline = PipelineSettings(guarantee=guarantee, transaction_interval_ms=100)
    broker = await asyncio.to_thread(ApacheKafkaBroker(tmp_path / "kafka").start)
    try:
        kafka = KafkaSettings(
            bootstrap=broker.bootstrap, group_id=f"outage-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000,
            heartbeat_interval_ms=500, rebalance_timeout_ms=6000, request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        await ensure_topic_names(kafka, [topics.requests, topics.predictions, topics.deadletter], 4, 1)
        app = await started(app_settings(kafka, topics, model_repo, consumers=0, pipeline=pipeline))
        connected = lambda: app.registry.get_sample_value("streaminfer_broker_connected")  # noqa: E731
        feed = Feed(kafka.bootstrap, topics.requests)
        try:
            await feed.start()
            async with Collector(kafka.bootstrap, topics, isolation_level=isolation) as collector:
                await collector.until(lambda c: c.total >= RATE_PER_S)  # flowing
            await asyncio.to_thread(getattr(broker, end))  # mid-stream: the feed keeps sending into the outage
            await _until(lambda: connected() == 0, OUTAGE_S, "the pipeline to report the broker disconnected")
            await asyncio.sleep(OUTAGE_S)  # the outage itself, well past request_timeout_ms
            assert app.failure is None
            await asyncio.to_thread(broker.start)
            sent = await feed.stop()
            async with Collector(kafka.bootstrap, topics, isolation_level=isolation) as collector:
                collected = await collector.caught_up(kafka, sent, timeout_s=180)
            await _until(lambda: connected() == 1, 30, "the pipeline to report the broker back")
            assert app.failure is None, "the pipeline kept running through the outage"
        finally:
            await feed.stop()
            await app.stop()
    finally:
        await asyncio.to_thread(broker.stop)

    ids = collected.ids(collected.predictions)
    assert collected.dead_letters == []
    assert set(feed.acknowledged) - set(ids) == set(), "no acknowledged request is missing"
    repeats = sum(n - 1 for n in ids.values())
    print(f"{guarantee}: {len(feed.acknowledged)} requests, {repeats} answered more than once")
    if guarantee == "exactly_once":
        assert repeats == 0, "a read_committed reader sees each answer once, outage or not"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("disconnected" in m for m in messages) >= 1
    assert sum("is back after" in m for m in messages) >= 1
