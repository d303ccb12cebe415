"""Exactly-once delivery: outputs and the offsets they answer commit in one Kafka transaction.

``deliver(batch)`` only holds a fetched batch's outputs (predictions, dead letters, shadow
outputs) and marks its records finished. ``commit()``, every ``pipeline.transaction_interval_ms``
and on rebalance and shutdown, takes per partition the contiguous run of finished records
(``streams.offsets``), and in one transaction sends the outputs of exactly those records and
moves the group's offset past them. A ``read_committed`` reader sees the outputs if and only if
the offsets moved: a crash, an abort or a fenced member leaves neither, and the next owner
answers those requests once. Outputs of records after a gap wait for the next transaction.

Fencing. aiokafka 0.14 sends offsets with ``TxnOffsetCommit`` v0, a group id without the
member's generation (KIP-447's group metadata), so the broker cannot tell a zombie's offset
commit from the owner's. Fencing therefore rests on the transactional id, as Kafka Streams did
before KIP-447: one transactional producer per owned input partition, with the id
``<group>-<topic>-<partition>``. Whoever is assigned a partition initialises that id first, which
aborts any transaction a former owner left open and bumps the epoch, so the former owner (paused
past its session, or the previous incarnation of a restarted actor) gets ``ProducerFenced`` or
``InvalidProducerEpoch`` at its next send or commit. That member raises ``ProducerFencedOut`` and
stops without committing anything. The committed offsets are read again after the ids are
initialised (``seek_to_committed``), so an aborted zombie transaction is never read as committed.
Ids derived from a member's whole assignment would not fence (a new owner with a different set of
partitions uses another id); one id per member would not either (the new owner is a different
member). The cost: a producer per owned partition, so size ``topics.partitions`` with that in mind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)

from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.errors import BrokerUnreachable, DeliveryFailed, ProducerFencedOut, TransactionsUnsupported
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.outgoing import Outgoing
from streaminfer.streams.pipeline.sending import BatchSender

FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionalIdAuthorizationFailed)


def transactional_id(group_id: str, tp: TopicPartition) -> str:
    return f"{group_id}-{tp.topic}-{tp.partition}"


class _Partition:
    """The transactional producer of one owned input partition, and its outputs not yet sent."""

    __slots__ = ("held", "producer", "sender", "tid")

    def __init__(self, tid: str, producer: AIOKafkaProducer) -> None:
        self.tid, self.producer, self.sender = tid, producer, BatchSender(producer)
        self.held: list[Outgoing] = []

    def take_before(self, offset: int) -> list[Outgoing]:
        """The held outputs of records before ``offset``, in their records' order."""
        taken = [out for out in self.held if out.source_offset < offset]
        self.held = [out for out in self.held if out.source_offset >= offset]
        taken.sort(key=lambda out: out.source_offset)
        return taken


class TransactionalDelivery:
    """Outputs become visible to ``read_committed`` readers exactly when their offsets commit."""

    def __init__(self, clients: KafkaClients, consumer: AIOKafkaConsumer, tracker: OffsetTracker,
                 init_timeout_s: float = 30.0, commit_timeout_s: float | None = None) -> None:
        """``commit_timeout_s``: the longest one transaction may take to commit (twice the
        request timeout unless given); past it the member stops as on a failed transaction,
        instead of holding back what ``read_committed`` readers see for ever."""
        self._clients = clients
        self._consumer = consumer
        self._tracker = tracker
        self._group_id = clients.kafka.group_id
        self._init_timeout_s = init_timeout_s
        self._commit_timeout_s = commit_timeout_s or 2 * clients.kafka.request_timeout_ms / 1000
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._owned: set[TopicPartition] = set()
        self._lock = asyncio.Lock()
        self._fenced: ProducerFencedOut | None = None

    # ownership -----------------------------------------------------------------------------

    async def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Take over each partition's transactional id (fencing any former owner), then read the
        committed offsets again: a transaction the former owner left open is aborted by now."""
        new = [tp for tp in partitions if tp not in self._partitions]
        if new:
            opened = await asyncio.gather(*(self._open(tp) for tp in new))
            self._partitions.update(zip(new, opened))
            await self._consumer.seek_to_committed(*new)
        self._owned.update(partitions)

    def owns(self, tp: TopicPartition) -> bool:
        """Records of a partition being revoked are not taken: the revoke drains and commits
        what was taken before it began, and a batch taken after would be answered by this member
        in its next generation and by the partition's next reader (its offsets are not committed)."""
        return tp in self._owned

    def revoking(self, partitions: Sequence[TopicPartition]) -> None:
        self._owned.difference_update(partitions)

    async def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """After the revoke's commit: close the producers of partitions no longer ours."""
        gone = [self._partitions.pop(tp) for tp in partitions if tp in self._partitions]
        await asyncio.gather(*(part.producer.stop() for part in gone), return_exceptions=True)

    async def _open(self, tp: TopicPartition) -> _Partition:
        tid = transactional_id(self._group_id, tp)
        producer = self._clients.producer(transactional_id=tid)
        await init_transactional(producer, self._clients.kafka.bootstrap, self._init_timeout_s)
        return _Partition(tid, producer)

    async def close(self) -> None:
        parts, self._partitions = list(self._partitions.values()), {}
        await asyncio.gather(*(part.producer.stop() for part in parts), return_exceptions=True)

    # the Delivery calls --------------------------------------------------------------------

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        if self._fenced is not None:
            raise self._fenced
        for out in batch:
            part = self._partitions.get(out.source)
            if part is None:  # revoked while the batch ran: the new owner answers it
                continue
            part.held.append(out)
            if not out.mirror:
                self._tracker.finish(out.source, out.source_offset)

    async def commit(self) -> None:
        async with self._lock:
            if self._fenced is not None:
                raise self._fenced
            offsets = {tp: offset for tp, offset in self._tracker.committable().items() if tp in self._partitions}
            if not offsets:
                return
            results = await asyncio.gather(
                *(self._commit_partition(self._partitions[tp], tp, offset) for tp, offset in offsets.items()),
                return_exceptions=True,
            )
            self._tracker.mark_committed({tp: off for (tp, off), res in zip(offsets.items(), results) if res is None})
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _commit_partition(self, part: _Partition, tp: TopicPartition, offset: int) -> None:
        records = part.take_before(offset)
        producer = part.producer
        try:
            await asyncio.wait_for(self._transact(part, records, tp, offset), self._commit_timeout_s)
        except FENCED as exc:
            self._fenced = ProducerFencedOut(part.tid)
            raise self._fenced from exc
        except (KafkaError, asyncio.TimeoutError) as exc:
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await asyncio.wait_for(producer.abort_transaction(), self._commit_timeout_s)
            raise DeliveryFailed(
                f"transaction of {len(records)} records and {tp.topic}-{tp.partition}@{offset} aborted: {exc!r}"
            ) from exc

    async def _transact(self, part: _Partition, records: list[Outgoing], tp: TopicPartition, offset: int) -> None:
        producer = part.producer
        await producer.begin_transaction()
        futures = await part.sender.send(records) if records else []
        await producer.send_offsets_to_transaction({tp: offset}, self._group_id)
        await producer.commit_transaction()
        await asyncio.gather(*futures)


async def init_transactional(producer: AIOKafkaProducer, bootstrap: str, timeout_s: float) -> None:
    """Start a transactional producer (aiokafka initialises its transactional id on start). A
    broker without transactions answers InitProducerId with an error (the embedded one: an
    unknown error) or not at all: ``TransactionsUnsupported``."""
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
    except KafkaConnectionError as exc:
        await producer.stop()
        raise BrokerUnreachable(bootstrap) from exc
    except (asyncio.TimeoutError, KafkaError) as exc:
        await producer.stop()
        raise TransactionsUnsupported(bootstrap, f"{type(exc).__name__} on InitProducerId") from exc


async def check_transactions(clients: KafkaClients, timeout_s: float = 10.0) -> None:
    """Refuse exactly-once at start on a broker without transactions (the embedded one)."""
    producer = clients.producer(transactional_id=f"{clients.kafka.group_id}-probe", request_timeout_ms=int(timeout_s * 1000))
    await init_transactional(producer, clients.kafka.bootstrap, timeout_s)
    await producer.stop()
