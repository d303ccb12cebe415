"""Drive a real pipeline in tests: build settings, send records, collect what comes out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.settings import ExperimentSettings, MonitorSettings
from streaminfer.schemas import headers as h
from streaminfer.schemas.deadletter import headers_dict
from streaminfer.app import RunningApp, start_app
from streaminfer.settings import AppSettings
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import PoolSettings

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


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


async def send(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k, headers=hs) for k, v, hs in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


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
    """Reads predictions and dead letters from the start of their topics, without a group."""

    def __init__(self, bootstrap: str, topics: TopicSettings) -> None:
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            topics.predictions, topics.deadletter, bootstrap_servers=bootstrap,
            group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=20,
        )
        self.collected = Collected()

    async def __aenter__(self) -> "Collector":
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
