"""Sending many records at once: one record batch per partition instead of one call per record.

aiokafka's ``send()`` costs about 10 µs of Python per record (a coroutine, a future, size checks);
appending to a ``BatchBuilder`` and sending the builder costs a fraction of that, and this is the
hottest loop of the pipeline. Keys are mapped to partitions with the same murmur2 hash the Java
client uses, so a key lands where any other Kafka client would put it. A send's keys are hashed
together (``murmur2_many``: numpy over keys of one length at a time, 0.24 µs a key in a batch of 240
against 0.82 µs one by one); ``murmur2`` hashes one key, reading its words in one ``struct`` call
(half the time of aiokafka's byte-by-byte version).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import struct
from collections.abc import Callable, Sequence

import numpy as np
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
        for out, partition in zip(records, await self._partitions_of(records)):
            slot = (out.topic, partition)
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

    async def _partitions_of(self, records: Sequence[Outgoing]) -> list[int]:
        """Each record's partition: its key's murmur2 hash, or round robin for records without."""
        keyed = [out.key for out in records if out.key is not None]
        hashes = iter(murmur2_many(keyed))
        chosen = []
        for out in records:
            partitions = self._partitions.get(out.topic)
            if partitions is None:
                partitions = self._partitions[out.topic] = sorted(await self._producer.partitions_for(out.topic))
            index = next(self._round_robin) if out.key is None else next(hashes) & 0x7FFFFFFF
            chosen.append(partitions[index % len(partitions)])
        return chosen


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


_M32 = np.uint32(_M)
_FEW_KEYS = 16
"""Fewer keys than this are hashed one by one: numpy's fixed cost per call outweighs the saving."""


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """``murmur2`` of each key, in order; the same numbers, computed for many keys at once."""
    if len(keys) < _FEW_KEYS:
        return [murmur2(key) for key in keys]
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    hashes = np.empty(len(keys), dtype=np.uint32)
    for length in np.unique(lengths).tolist():
        index = np.flatnonzero(lengths == length)
        group = keys if len(index) == len(keys) else [keys[i] for i in index.tolist()]
        hashes[index] = _murmur2_of_equal_length(group, length)
    return hashes.tolist()


def _murmur2_of_equal_length(keys: Sequence[bytes], length: int) -> np.ndarray:
    """``murmur2`` step by step over a column of keys; uint32 arithmetic wraps as the mask does."""
    h = np.full(len(keys), (0x9747B28C ^ length) & _MASK, dtype=np.uint32)
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    words = length >> 2
    if words:
        columns = np.ascontiguousarray(data[:, : words * 4]).view("<u4")
        for i in range(words):
            k = columns[:, i] * _M32
            k ^= k >> 24
            k *= _M32
            h *= _M32
            h ^= k
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[:, base + 2].astype(np.uint32) << 16
        if tail >= 2:
            h ^= data[:, base + 1].astype(np.uint32) << 8
        h ^= data[:, base]
        h *= _M32
    h ^= h >> 13
    h *= _M32
    h ^= h >> 15
    return h
