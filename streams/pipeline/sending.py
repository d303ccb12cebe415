"""Sending many records at once: one record batch per partition instead of one call per record.

aiokafka's ``send()`` costs about 10 µs of Python per record (a coroutine, a future, size checks);
appending to a ``BatchBuilder`` and sending the builder costs a fraction of that, and this is the
hottest loop of the pipeline. Keys are mapped to partitions with the same murmur2 hash the Java
client uses, so a key lands where any other Kafka client would put it (``murmur2`` here reads the
key's words in one ``struct`` call: half the time of aiokafka's byte-by-byte version, per record).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import struct
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from streaminfer.streams.pipeline.outgoing import Outgoing


class BatchSender:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._round_robin = itertools.count()

    async def send(self, records: Sequence[Outgoing]) -> list[asyncio.Future[object]]:
        """Enqueue every record; returns the futures that resolve when the broker acknowledges."""
        builders: dict[tuple[str, int], BatchBuilder] = {}
        futures: list[asyncio.Future[object]] = []
        for out in records:
            slot = (out.topic, await self._partition_for(out.topic, out.key))
            builder = builders.get(slot)
            if builder is None:
                builder = builders[slot] = self._producer.create_batch()
            if builder.append(timestamp=None, key=out.key, value=out.value, headers=out.headers) is None:
                futures.append(await self._producer.send_batch(builder, slot[0], partition=slot[1]))
                builder = builders[slot] = self._producer.create_batch()
                if builder.append(timestamp=None, key=out.key, value=out.value, headers=out.headers) is None:
                    raise ValueError(f"a record for {out.topic} is larger than the producer's max_batch_size")
        for (topic, partition), builder in builders.items():
            futures.append(await self._producer.send_batch(builder, topic, partition=partition))
        return futures

    async def _partition_for(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        if key is None:
            return partitions[next(self._round_robin) % len(partitions)]
        return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


@functools.lru_cache(maxsize=256)
def _words(count: int) -> Callable[[bytes], tuple[int, ...]]:
    return struct.Struct(f"<{count}I").unpack_from


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``) of ``data``."""
    length = len(data)
    h = 0x9747B28C ^ length
    for k in _words(length >> 2)(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)
