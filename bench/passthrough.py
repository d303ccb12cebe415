"""Limit B: the best consume → produce → commit passthrough, with the pipeline's own produce path.

What streaminfer does around inference, and nothing else: it fetches as the pipeline's consumer
does (``KafkaClients.consumer()``: the same fetch settings; ``pipeline.fetch_max_records`` and
``pipeline.poll_timeout_ms`` per fetch), hands every fetched record to the pipeline's
``BatchSender`` (one record batch per partition, key and headers kept, the value unchanged),
waits for the broker's acknowledgements, then commits the fetch's offsets, once per fetch. Run
as one process or as several in one consumer group (streaminfer at defaults runs
``pipeline.consumers`` = 2 consumer actors), it is the bar streaminfer's throughput and latency
are measured against: anything streaminfer costs beyond it is decoding, batching, inference,
encoding and bookkeeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streaminfer.streams.clients import KafkaClients, start_client
from streaminfer.streams.pipeline.outgoing import Outgoing, source_of
from streaminfer.streams.pipeline.sending import BatchSender
from streaminfer.streams.settings import PipelineSettings


def forwarded(sink: str, record: ConsumerRecord) -> Outgoing:
    """``record`` unchanged (key, value, headers) on ``sink``."""
    return Outgoing(topic=sink, key=record.key, value=record.value, headers=list(record.headers),
                    source=source_of(record), source_offset=record.offset)


def next_offsets(fetched: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, OffsetAndMetadata]:
    """What to commit after a fetch: one past the last record of each partition that had any."""
    return {tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in fetched.items() if records}


class BatchPassthrough:
    """``step()`` is one fetch: produce it all, wait for the acknowledgements, commit; returns
    how many records it moved. ``run()`` steps until cancelled. Clients come from ``clients``
    (a ``KafkaClients``: unit tests hand in one with fake client classes)."""

    def __init__(self, clients: KafkaClients, source: str, sink: str, group: str,
                 pipeline: PipelineSettings | None = None) -> None:
        self._clients = clients
        self._source, self._sink, self._group = source, sink, group
        self._pipeline = pipeline or PipelineSettings()
        self._consumer: Any = None
        self._producer: Any = None
        self._sender: BatchSender | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return
        self._producer = self._clients.producer()
        self._consumer = self._clients.consumer(self._source, group_id=self._group)
        await start_client(self._producer, self._clients.kafka.bootstrap)
        await start_client(self._consumer, self._clients.kafka.bootstrap)
        self._sender = BatchSender(self._producer)

    async def stop(self) -> None:
        consumer, producer, self._consumer, self._producer = self._consumer, self._producer, None, None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> BatchPassthrough:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def step(self) -> int:
        assert self._sender is not None, "start() first"
        fetched = await self._consumer.getmany(timeout_ms=self._pipeline.poll_timeout_ms,
                                               max_records=self._pipeline.fetch_max_records)
        records = [forwarded(self._sink, r) for batch in fetched.values() for r in batch]
        if not records:
            return 0
        await asyncio.gather(*await self._sender.send(records))
        await self._consumer.commit(next_offsets(fetched))
        return len(records)

    async def run(self) -> None:
        while True:
            await self.step()
