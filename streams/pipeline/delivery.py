"""The commit path: send a batch's outgoing records, then let offsets move past them.

The pipeline talks to a ``Delivery`` through ``deliver(batch)`` and ``commit()``, and tells it
when partitions are ``assigned``, ``revoking`` and ``revoked`` and when it ``close``s, and asks
whether it ``owns`` a fetched record's partition. The at-least-once
implementation sends, waits for the broker's acknowledgements, marks the source offsets finished
and commits them later; it has nothing to do on the other three. The exactly-once one
(``streams.pipeline.transactional``) holds outputs in ``deliver`` and sends them with their
offsets in one transaction per partition in ``commit``; it opens a transactional producer per
assigned partition, which is what fences a former owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError

from streaminfer.streams.errors import DeliveryFailed
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.outgoing import Outgoing
from streaminfer.streams.pipeline.sending import BatchSender


class Delivery(Protocol):
    async def deliver(self, batch: Sequence[Outgoing]) -> None: ...

    async def commit(self) -> None: ...

    def owns(self, tp: TopicPartition) -> bool: ...

    def revoking(self, partitions: Sequence[TopicPartition]) -> None: ...

    async def assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    async def revoked(self, partitions: Sequence[TopicPartition]) -> None: ...

    async def close(self) -> None: ...


log = logging.getLogger(__name__)
_T = TypeVar("_T")
RETRY_BACKOFF_S = (0.1, 5.0)
"""First and longest wait between two tries of a send or a commit the broker could not take."""


def is_retriable(exc: KafkaError) -> bool:
    """A broker away or electing leaders: the same send or commit can succeed later. A batch that
    outlived ``request_timeout_ms`` (``KafkaTimeoutError``) is one of those, whatever aiokafka says."""
    return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)


class AtLeastOnceDelivery:
    """Every offset is committed only after its prediction or dead letter is acknowledged.

    A send or commit that fails with a retriable Kafka error (the broker is away, however long)
    is tried again with backoff: the whole batch is sent again (duplicates are possible, loss is
    not) and offsets move only after acknowledgement. ``connected`` hears ``False`` on the first
    such failure and ``True`` once a try succeeds again. Once ``stopping`` is set, the error is
    raised instead, so a stop does not wait for a broker that is gone: what was not committed is
    read again after a restart. A commit refused because the group rebalanced without this member
    (it was away past its session timeout) is dropped: the next owner reads those records again.
    Other Kafka errors end the pipeline as ``DeliveryFailed``.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        tracker: OffsetTracker,
        connected: Callable[[bool], None] = lambda up: None,
        stopping: asyncio.Event | None = None,
        backoff_s: tuple[float, float] = RETRY_BACKOFF_S,
        patience_s: float = 30.0,
    ) -> None:
        self._sender = BatchSender(producer)
        self._consumer = consumer
        self._tracker = tracker
        self._commit_lock = asyncio.Lock()
        self._connected = connected
        self._stopping = stopping
        self._backoff_s = backoff_s
        self._patience_s = patience_s

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        async def send() -> None:
            await asyncio.gather(*await self._sender.send(batch))

        try:
            await self._until_acknowledged(send)
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
            try:
                await self._until_acknowledged(lambda: self._consumer.commit(offsets))
            except CommitFailedError as exc:  # expelled from the group while the broker was away
                log.warning("commit refused, the group moved on without this member (%s); the records "
                            "are answered again by the partitions' next owner", type(exc).__name__)
                return
            self._tracker.mark_committed(offsets)

    async def _until_acknowledged(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Try until the broker takes it. aiokafka also waits for a broker that is down without
        raising (a commit looks for its coordinator, a send for its leader): a try that takes
        over ``patience_s`` counts as disconnected as well."""
        backoff, longest = self._backoff_s
        away = False
        while True:
            task = asyncio.ensure_future(attempt())
            try:
                done, _ = await asyncio.wait({task}, timeout=self._patience_s)
                if not done and not away:
                    away = True
                    self._connected(False)
                result = await task
            except KafkaError as exc:
                if not is_retriable(exc):
                    if away:  # refused, but answered: the broker is back
                        self._connected(True)
                    raise
                if self._stopping is not None and self._stopping.is_set():
                    raise
                if not away:
                    away = True
                    self._connected(False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, longest)
                continue
            finally:
                task.cancel()
            if away:
                self._connected(True)
            return result

    def owns(self, tp: TopicPartition) -> bool:
        return True

    def revoking(self, partitions: Sequence[TopicPartition]) -> None:
        return None

    async def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        return None

    async def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        return None

    async def close(self) -> None:
        return None
