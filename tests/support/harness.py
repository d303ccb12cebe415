"""Drive a real pipeline in tests: build settings, send records, collect what comes out.

"Nothing more came" is a fact to wait for, not a quiet time: ``send`` returns where each partition
of the requests ends, ``committed_through`` waits until the pipelines' group has committed that
far, and ``Collector.caught_up`` then reads the outputs to their end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from streaminfer.app import RunningApp, start_app
from streaminfer.monitoring.settings import ExperimentSettings, MonitorSettings
from streaminfer.schemas import headers as h
from streaminfer.schemas.deadletter import headers_dict
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import KafkaClients, partition_counts
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import PoolSettings

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]
Ends = dict[TopicPartition, int]
"""Per partition, the offset after the last record sent there."""


def app_settings(
    kafka: KafkaSettings,
    topics: TopicSettings,
    repository: ModelRepository,
    *,
    models: tuple[str, ...] = (),
    pool_size: int = 2,
    consumers: int = 2,
    pipeline: PipelineSettings | None = None,
    monitor: MonitorSettings | None = None,
    experiments: ExperimentSettings | None = None,
    metrics: dict | None = None,
) -> AppSettings:
    """``consumers=2`` is the default shape (consuming actors); 0 is driver + worker pool. The
    monitor, the experiment controller and the metrics endpoints are off unless a test asks."""
    pipeline = (pipeline or PipelineSettings()).model_copy(update={"consumers": consumers})
    return AppSettings(
        model_repository=repository.root,
        models=list(models),
        kafka=kafka,
        topics=topics,
        pipeline=pipeline,
        pool=PoolSettings(size=pool_size, namespace=f"test-{uuid.uuid4().hex[:8]}", retry_timeout_s=60),
        metrics=metrics or {"port": None, "targets_file": None},
        monitor=monitor or MonitorSettings(enabled=False),
        experiments=experiments or ExperimentSettings(enabled=False),
    )


async def send(bootstrap: str | KafkaSettings, topic: str, records: list[Record]) -> Ends:
    """Produce ``records``; returns where each partition they went to ends now. Given settings
    rather than an address, the producer is built from them (a secured broker's, say)."""
    if isinstance(bootstrap, KafkaSettings):
        producer = KafkaClients(bootstrap).producer(linger_ms=5)
    else:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k, headers=hs) for k, v, hs in records]
        placed: list[RecordMetadata] = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ends(*({meta.topic_partition: meta.offset + 1} for meta in placed))


def ends(*sent: Mapping[TopicPartition, int]) -> Ends:
    """The furthest end per partition of several ``send``s."""
    out: Ends = {}
    for part in sent:
        for tp, end in part.items():
            out[tp] = max(out.get(tp, 0), end)
    return out


async def committed_through(kafka: KafkaSettings, sent: Mapping[TopicPartition, int], timeout_s: float = 120.0) -> None:
    """Wait until the group ``kafka.group_id`` has committed each partition of ``sent`` up to its
    end: every request sent there ended as an acknowledged prediction or dead letter, and none is
    left for the group to read again.

    The ends are what was produced, not the broker's end offsets: Tansu reports the last batch's
    base offset + 1 there. Its OffsetFetch answers only for partitions named explicitly, so they are.
    """
    admin = KafkaClients(kafka).admin()
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            offsets = await admin.list_consumer_group_offsets(kafka.group_id, partitions=list(sent))
            committed = {tp: offsets[tp].offset if tp in offsets else -1 for tp in sent}
            if all(committed[tp] >= end for tp, end in sent.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"group {kafka.group_id} committed {committed} within {timeout_s} s; sent up to {dict(sent)}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@dataclass
class Collected:
    predictions: list[ConsumerRecord] = field(default_factory=list)
    dead_letters: list[ConsumerRecord] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.predictions) + len(self.dead_letters)

    def ids(self, records: list[ConsumerRecord]) -> Counter[str]:
        return Counter(headers_dict(r.headers)[h.REQUEST_ID].decode() for r in records)

    def unique_ids(self) -> set[str]:
        return set(self.ids(self.predictions)) | set(self.ids(self.dead_letters))


class Collector:
    """Reads predictions and dead letters from the start of their topics, without a group;
    ``isolation_level="read_committed"`` reads them as a downstream consumer of exactly-once does."""

    def __init__(self, bootstrap: str | KafkaSettings, topics: TopicSettings, isolation_level: str = "read_uncommitted") -> None:
        self._topics = topics
        if isinstance(bootstrap, KafkaSettings):  # a secured broker's settings, say
            self._consumer = KafkaClients(bootstrap).consumer(
                topics.predictions, topics.deadletter, group_id=None, fetch_max_wait_ms=20,
                isolation_level=isolation_level)
        else:
            self._consumer = AIOKafkaConsumer(
                topics.predictions, topics.deadletter, bootstrap_servers=bootstrap,
                group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=20, isolation_level=isolation_level,
            )
        self.collected = Collected()

    async def __aenter__(self) -> Collector:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, predicate, timeout_s: float = 120.0) -> Collected:
        """Read until ``predicate(collected)`` holds; fail the test with what arrived if it never does."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.collected):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out: {len(self.collected.predictions)} predictions, "
                    f"{len(self.collected.dead_letters)} dead letters"
                )
            await self.poll(200)
        return self.collected

    async def poll(self, timeout_ms: int) -> None:
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms)
        for tp, records in fetched.items():
            target = self.collected.dead_letters if tp.topic == self._topics.deadletter else self.collected.predictions
            target.extend(records)

    async def caught_up(self, kafka: KafkaSettings, sent: Mapping[TopicPartition, int], timeout_s: float = 120.0) -> Collected:
        """Everything the pipelines will ever answer for the requests in ``sent``, repeats included.

        Once the group has committed through ``sent``, nothing is read again, and every answer was
        acknowledged before its commit; so reading the outputs to their end now reads them all.
        """
        await committed_through(kafka, sent, timeout_s)
        return await self.read_to_end(kafka, timeout_s)

    async def read_to_end(self, kafka: KafkaSettings, timeout_s: float = 60.0) -> Collected:
        """Read the predictions and dead letters up to the end every partition has now.

        A fetch hands over whole record batches, so reading past a partition's end offset means its
        last batch was read entirely, also on Tansu, whose end offset is that batch's base offset + 1.
        """
        names = [self._topics.predictions, self._topics.deadletter]
        counts = await partition_counts(kafka, names)
        wanted = {TopicPartition(name, p) for name in names for p in range(counts[name])}
        deadline = time.monotonic() + timeout_s
        while not wanted <= self._consumer.assignment():
            self._before(deadline, f"partitions {sorted(wanted - self._consumer.assignment())} not assigned")
            await self.poll(100)
        end_offsets = await self._consumer.end_offsets(list(wanted))
        while behind := [tp for tp, end in end_offsets.items() if await self._consumer.position(tp) < end]:
            self._before(deadline, f"{behind} not read to {end_offsets}")
            await self.poll(200)
        return self.collected

    def _before(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")

    async def settle(self, quiet_s: float = 1.5) -> Collected:
        """Keep reading until nothing new arrives for ``quiet_s``: catches late duplicates."""
        last = -1
        while last != self.collected.total:
            last = self.collected.total
            await asyncio.sleep(quiet_s)
            await self.poll(100)
        return self.collected


async def started(settings: AppSettings) -> RunningApp:
    return await start_app(settings)
