"""Consumers that read every partition of their topics and keep their position in a checkpoint
(the monitor, the alerting rules consumer).

Their state cannot be split by partition, so they assign partitions to themselves instead of
joining a balanced group, and resume from the offsets saved with their state. They still commit
those offsets under a group id, only so that lag tools see how far behind they are.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streaminfer.streams.clients import make_consumer, make_producer, partition_counts, start_client
from streaminfer.streams.settings import KafkaSettings

Offsets = dict[tuple[str, int], int]


async def open_clients(kafka: KafkaSettings, group_id: str) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
    producer = make_producer(kafka)
    await start_client(producer, kafka.bootstrap)
    consumer = make_consumer(kafka, group_id=group_id)
    try:
        await start_client(consumer, kafka.bootstrap)
    except BaseException:
        await producer.stop()
        raise
    return producer, consumer


async def assign_all(
    consumer: AIOKafkaConsumer, kafka: KafkaSettings, topics: list[str], saved: Offsets, group_fallback: bool
) -> None:
    """Every partition of ``topics``, positioned at the saved offset; without one, at the group's
    committed offset (when ``group_fallback``) or the beginning."""
    counts = await partition_counts(kafka, topics)
    partitions = [TopicPartition(topic, p) for topic in topics for p in range(counts[topic])]
    consumer.assign(partitions)
    for tp in partitions:
        offset = saved.get((tp.topic, tp.partition))
        if offset is None and group_fallback:
            offset = await consumer.committed(tp)
        if offset is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)


async def commit_for_lag_tools(consumer: AIOKafkaConsumer | None, offsets: Offsets) -> None:
    """Best effort: the checkpoint, not the group, is what these readers resume from."""
    if consumer is None or not offsets:
        return
    committed = {TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
    with contextlib.suppress(Exception):
        await consumer.commit(committed)


async def stop_task_and_clients(task: asyncio.Task[None] | None, *clients: object) -> None:
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
    for client in clients:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.stop()  # type: ignore[attr-defined]
