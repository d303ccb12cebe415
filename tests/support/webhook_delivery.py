"""What the webhook delivery tests share: fresh outbox topics, notifications written to them,
delivery workers wired to real receivers, and readers of what was committed and dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr

from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.monitoring.alerting.receivers import DeliverySettings, ReceiverConfig
from streaminfer.schemas.notifications import (
    FIRING,
    ZERO_TIME,
    DeliveryFailure,
    Notification,
    WebhookAlert,
    WebhookPayload,
    decode_delivery_failure,
    encode_alerting,
)
from streaminfer.streams.alerting.webhooks import WebhookDelivery
from streaminfer.streams.clients import ensure_topic_names, partition_counts
from streaminfer.streams.settings import KafkaSettings
from tests.support.receiver import WebhookReceiver

SCHEMA = json.loads((Path(__file__).parent / "alertmanager_webhook.schema.json").read_text())
FAST = DeliverySettings(initial_backoff_s=0.1, commit_interval_ms=100, stop_grace_s=0.5, poll_timeout_ms=50)


@dataclass(frozen=True)
class Topics:
    outbox: str
    deadletter: str


@dataclass(frozen=True)
class Written:
    notification: Notification | None
    partition: int
    offset: int


async def fresh_topics(kafka: KafkaSettings) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(outbox=f"alerts-outbox-{suffix}", deadletter=f"alerts-deadletter-{suffix}")
    await ensure_topic_names(kafka, [topics.outbox, topics.deadletter], 4, 1)
    await partition_counts(kafka, [topics.outbox, topics.deadletter])
    return topics


def notification(receiver: str, n: int) -> Notification:
    labels = {"alertname": "PredictionDrift", "model": "breast-cancer", "severity": "page", "n": str(n)}
    annotations = {"summary": f"drift #{n} on mean radius"}
    alert = WebhookAlert(
        status=FIRING,
        labels=labels,
        annotations=annotations,
        startsAt="2025-01-02T03:04:05.678Z",
        endsAt=ZERO_TIME,
        generatorURL="http://streaminfer.local/rules#drift",
        fingerprint=f"{n:016x}",
    )
    payload = WebhookPayload(
        version="4",
        groupKey='{}:{alertname="PredictionDrift"}',
        truncatedAlerts=0,
        status=FIRING,
        receiver=receiver,
        groupLabels={"alertname": "PredictionDrift"},
        commonLabels=labels,
        commonAnnotations=annotations,
        externalURL="http://streaminfer.local",
        alerts=[alert],
        notification_reason="first notification",
    )
    return Notification(
        id=f"{receiver}-{n}-{uuid.uuid4().hex[:8]}",
        receiver=receiver,
        created_ms=int(time.time() * 1000),
        payload=payload,
    )


async def write(
    kafka: KafkaSettings, topic: str, items: list[Notification | tuple[bytes, bytes]]
) -> list[Written]:
    """Notifications keyed by receiver, or raw ``(key, value)`` records; returns where each went."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for item in items:
            key, value = (
                (item.receiver.encode(), encode_alerting(item)) if isinstance(item, Notification) else item
            )
            futures.append(await producer.send(topic, value, key=key))
        placed = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        Written(item if isinstance(item, Notification) else None, meta.partition, meta.offset)
        for item, meta in zip(items, placed)
    ]


def receiver_config(name: str, receiver: WebhookReceiver, timeout_s: float = 2.0) -> ReceiverConfig:
    return ReceiverConfig(
        name=name,
        url=receiver.url,
        secret=SecretStr(receiver.secret),
        timeout_s=timeout_s,
        max_backoff_s=0.5,
        headers={"X-Team": "ml-platform"},
    )


def delivery(
    kafka: KafkaSettings,
    topics: Topics,
    receivers: list[ReceiverConfig],
    settings: DeliverySettings = FAST,
    metrics: DeliveryMetrics | None = None,
) -> WebhookDelivery:
    return WebhookDelivery(
        kafka, topics.outbox, topics.deadletter, kafka.group_id, receivers, settings, metrics
    )


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


def counts(worker: WebhookDelivery, receiver: str) -> dict[str, int]:
    return worker.describe()["receivers"][receiver]  # type: ignore[index]


async def committed(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (0 where none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=kafka.group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        count = (await partition_counts(kafka, [topic]))[topic]
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(count)}
    finally:
        await consumer.stop()


def end_offsets(written: list[Written]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for w in written:
        ends[w.partition] = max(ends.get(w.partition, 0), w.offset + 1)
    return ends


async def read_dead_letters(
    kafka: KafkaSettings, topic: str, count: int, timeout_s: float = 20.0
) -> list[DeliveryFailure]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        partitions = (await partition_counts(kafka, [topic]))[topic]
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        failures: list[DeliveryFailure] = []
        deadline = time.monotonic() + timeout_s
        while len(failures) < count:
            assert time.monotonic() < deadline, (
                f"{len(failures)} of {count} dead letters within {timeout_s} s"
            )
            batches = await consumer.getmany(timeout_ms=200)
            failures += [decode_delivery_failure(r.value) for records in batches.values() for r in records]
        return failures
    finally:
        await consumer.stop()


# tests -----------------------------------------------------------------------------------------
