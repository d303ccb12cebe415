"""The commit path: send a batch's outgoing records, then let offsets move past them.

The pipeline talks to a ``Delivery`` only through ``deliver(batch)`` and ``commit()``. The
at-least-once implementation sends, waits for the broker's acknowledgements, marks the source
offsets finished and commits them later. A transactional implementation keeps the same two calls:
``deliver`` would open a transaction, send, add the batch's offsets with
``send_offsets_to_transaction`` and commit the transaction, and ``commit`` would have nothing left
to do. Nothing in the pipeline changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from streaminfer.streams.errors import DeliveryFailed
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.outgoing import Outgoing
from streaminfer.streams.pipeline.sending import BatchSender


class Delivery(Protocol):
    async def deliver(self, batch: Sequence[Outgoing]) -> None: ...

    async def commit(self) -> None: ...


class AtLeastOnceDelivery:
    """Every offset is committed only after its prediction or dead letter is acknowledged."""

    def __init__(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, tracker: OffsetTracker) -> None:
        self._sender = BatchSender(producer)
        self._consumer = consumer
        self._tracker = tracker
        self._commit_lock = asyncio.Lock()

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        try:
            await asyncio.gather(*await self._sender.send(batch))
        except KafkaError as exc:
            raise DeliveryFailed(f"broker did not acknowledge {len(batch)} records: {exc!r}") from exc
        for out in batch:
            if not out.mirror:
                self._tracker.finish(out.source, out.source_offset)

    async def commit(self) -> None:
        async with self._commit_lock:
            offsets = self._tracker.committable()
            if not offsets:
                return
            await self._consumer.commit(offsets)
            self._tracker.mark_committed(offsets)
