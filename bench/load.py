"""Requests and answers for the benchmark: pre-encoded payloads, an open-loop sender, a collector.

Payloads are encoded before the clock starts and sent without waiting per message, so the
generator costs as little CPU as it can; where it still falls behind its schedule, that lag is
measured and reported next to the latency it may have distorted.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.streams.clients import KafkaClients, partition_counts, start_client

Payload = tuple[bytes, bytes, list[tuple[str, bytes]]]


def payloads(rows: np.ndarray, prefix: str, count: int, extra_headers: list[tuple[str, bytes]]) -> list[Payload]:
    out = []
    for n in range(count):
        request_id = f"{prefix}-{n}"
        body = request_body(request_id, "input", rows[n % len(rows)][np.newaxis, :])
        out.append((request_id.encode(), body, [(h.REQUEST_ID, request_id.encode()), *extra_headers]))
    return out


async def blast(producer: AIOKafkaProducer, topic: str, batch: list[Payload], sent_at: dict[str, float]) -> None:
    """As fast as the client goes (backlog preloading and closed bursts)."""
    futures = []
    for key, value, headers in batch:
        sent_at[key.decode()] = time.time()
        futures.append(await producer.send(topic, value=value, key=key, headers=headers))
    await asyncio.gather(*futures)


@dataclass
class OpenLoopResult:
    sent: int
    seconds: float
    lag_p99_ms: float
    lag_max_ms: float


async def open_loop(
    producer: AIOKafkaProducer, topic: str, batch: list[Payload], rate: float, sent_at: dict[str, float]
) -> OpenLoopResult:
    """Send ``batch`` at a fixed ``rate`` (a schedule, not a closed loop); measure schedule lag.

    Each tick sends every message that is due as one record batch per partition: a per-message
    ``send()`` costs the generator enough CPU on 2 cores to fall behind its own schedule.
    """
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    lags: list[float] = []
    futures = []
    start = time.perf_counter()
    wall_start = time.time()
    index = 0
    while index < len(batch):
        due = min(len(batch), int((time.perf_counter() - start) * rate) + 1)
        builders: dict[int, Any] = {}  # aiokafka BatchBuilders (aiokafka is untyped)
        now = time.time()
        while index < due:
            key, value, headers = batch[index]
            lags.append(now - (wall_start + index / rate))
            sent_at[key.decode()] = now
            partition = partitioner(key, partitions, partitions)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                futures.append(await producer.send_batch(builder, topic, partition=partition))
                builder = builders[partition] = producer.create_batch()
                builder.append(timestamp=None, key=key, value=value, headers=headers)
            index += 1
        for partition, builder in builders.items():
            futures.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.sleep(0.0005)
    await asyncio.gather(*futures)
    lag_ms = np.asarray(lags) * 1000
    return OpenLoopResult(len(batch), time.perf_counter() - start, float(np.percentile(lag_ms, 99)), float(lag_ms.max()))


@dataclass
class Collector:
    """Reads every answer from the start of the output topic (``from_end``: from its end at
    ``start()``), without a consumer group."""

    clients: KafkaClients
    topic: str
    answer_key: Callable[[bytes | None, bytes], str | None]
    from_end: bool = False
    received_at: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    produced_ms: list[int] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = self.clients.consumer(
            group_id=None, auto_offset_reset="latest" if self.from_end else "earliest",
            fetch_max_wait_ms=5,
            isolation_level="read_committed",  # as exactly-once readers must; the same for plain producers
        )
        await start_client(self._consumer, self.clients.kafka.bootstrap)
        partitions = await partition_counts(self.clients, [self.topic])
        assigned = [TopicPartition(self.topic, p) for p in range(partitions[self.topic])]
        self._consumer.assign(assigned)
        for tp in assigned:
            await self._consumer.position(tp)  # resolved now: nothing answered after start() is missed
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            fetched = await self._consumer.getmany(timeout_ms=50, max_records=4096)
            now = time.time()
            for records in fetched.values():
                for record in records:
                    key = self.answer_key(record.key, record.value)
                    if key is not None:
                        self.received_at[key].append(now)
                        self.produced_ms.append(record.timestamp)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def answered(self, keys: list[str]) -> int:
        return sum(1 for key in keys if key in self.received_at)

    async def wait_for(self, keys: list[str], timeout_s: float, idle_s: float = 15.0) -> int:
        """Until every key is answered, the deadline passes, or nothing new arrives for ``idle_s``."""
        deadline = time.monotonic() + timeout_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self._task is not None and self._task.done():
                self._task.result()  # the reader died: say why instead of waiting out the deadline
            count = self.answered(keys)
            if count >= len(keys):
                return count
            if count != last:
                last, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > idle_s:
                break
            await asyncio.sleep(0.1)
        return self.answered(keys)
