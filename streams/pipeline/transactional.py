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
``InvalidProducerEpoch`` at its next send or commit. That member commits nothing more for the
partition: it drops what it held of it (the owner answers those records) and asks to rejoin the
group (``fenced``), as Kafka Streams does with a migrated task; a partition the group gives it again
is taken over afresh. The committed offsets are read after the ids are initialised, so an aborted
zombie transaction is never read as committed, and the partition is positioned there and owned in
one step: ``getmany`` hands out records of a new assignment while the listener still runs, and a
record dropped as "not owned yet" after its partition was positioned would be skipped for good.
Ids derived from a member's whole assignment would not fence (a new owner with a different set of
partitions uses another id); one id per member would not either (the new owner is a different
member). The cost: a producer per owned partition, so size ``topics.partitions`` with that in mind.

A broker outage: a transaction whose sends fail with a retriable error is aborted and done again
with the same outputs and offsets once the broker answers; a commit waits for the broker however
long it is away. ``connected`` hears ``False`` when a try fails or takes over ``patience_s``, and
``True`` once one succeeds. Outputs are acknowledged before the transaction is committed: aiokafka
would otherwise commit a transaction whose batch expired unsent (its leader unknown), with the
offsets but without those outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)

from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.errors import BrokerUnreachable, DeliveryFailed, TransactionsUnsupported
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.delivery import RETRY_BACKOFF_S, is_retriable
from streaminfer.streams.pipeline.outgoing import Outgoing
from streaminfer.streams.pipeline.sending import BatchSender

log = logging.getLogger(__name__)
FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionalIdAuthorizationFailed)


def transactional_id(group_id: str, tp: TopicPartition) -> str:
    return f"{group_id}-{tp.topic}-{tp.partition}"


class _Partition:
    """The transactional producer of one owned input partition, and its outputs not yet committed."""

    __slots__ = ("held", "producer", "sender", "tid")

    def __init__(self, tid: str, producer: AIOKafkaProducer) -> None:
        self.tid, self.producer, self.sender = tid, producer, BatchSender(producer)
        self.held: list[Outgoing] = []

    def before(self, offset: int) -> list[Outgoing]:
        """The held outputs of records before ``offset``, in their records' order."""
        return sorted((out for out in self.held if out.source_offset < offset), key=lambda out: out.source_offset)

    def drop_before(self, offset: int) -> None:
        """Forget what a committed transaction carried."""
        self.held = [out for out in self.held if out.source_offset >= offset]


class TransactionalDelivery:
    """Outputs become visible to ``read_committed`` readers exactly when their offsets commit."""

    def __init__(
        self,
        clients: KafkaClients,
        consumer: AIOKafkaConsumer,
        tracker: OffsetTracker,
        connected: Callable[[bool], None] = lambda up: None,
        stopping: asyncio.Event | None = None,
        fenced: Callable[[bool], None] = lambda rejoin: None,
        init_timeout_s: float = 30.0,
        backoff_s: tuple[float, float] = RETRY_BACKOFF_S,
        patience_s: float | None = None,
    ) -> None:
        """``connected`` and ``stopping`` as in ``AtLeastOnceDelivery``; ``fenced`` hears of each
        partition given up to another member, with ``True`` when this member should rejoin the
        group (not during a revoke: that rebalance is the rejoin); ``patience_s``: how long a try
        may take before the broker counts as away (the request timeout unless given)."""
        self._clients = clients
        self._consumer = consumer
        self._tracker = tracker
        self._connected = connected
        self._stopping = stopping
        self._fenced = fenced
        self._group_id = clients.kafka.group_id
        self._init_timeout_s = init_timeout_s
        self._backoff_s = backoff_s
        self._patience_s = patience_s or clients.kafka.request_timeout_ms / 1000
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._owned: set[TopicPartition] = set()
        self._lock = asyncio.Lock()
        self._away = False
        self._next_probe = 0.0
        self._base: dict[TopicPartition, int | None] = {}  # the group's offset as this member last left it
        self.fenced = 0
        """Partitions this member gave up because another member had taken over their ids."""

    # ownership -----------------------------------------------------------------------------

    async def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Take over each partition's transactional id (fencing any former owner), read the
        committed offsets (a transaction the former owner left open is aborted by now), then
        position the partitions there and own them with no ``await`` in between."""
        taking = [tp for tp in partitions if tp not in self._owned]
        new = [tp for tp in taking if tp not in self._partitions]
        if new:
            opened = await asyncio.gather(*(self._open(tp) for tp in new))
            self._partitions.update(zip(new, opened))
        starts = await self._starts(taking) if taking else {}
        for tp, offset in starts.items():
            self._consumer.seek(tp, offset)
        self._owned.update(partitions)

    async def _starts(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Where the group goes on in each partition: its committed offset, else the beginning
        (the consumers start at the earliest offset)."""
        committed = await asyncio.gather(*(self._consumer.committed(tp) for tp in partitions))
        self._base.update(zip(partitions, committed))
        missing = [tp for tp, offset in zip(partitions, committed) if offset is None or offset < 0]
        beginning = await self._consumer.beginning_offsets(missing) if missing else {}
        return {tp: beginning.get(tp, offset) for tp, offset in zip(partitions, committed)}

    def owns(self, tp: TopicPartition) -> bool:
        """Records of a partition being revoked are not taken: the revoke drains and commits
        what was taken before it began, and a batch taken after would be answered by this member
        in its next generation and by the partition's next reader (its offsets are not committed).
        Records of a partition not owned yet are not taken either: ``assigned`` positions it."""
        return tp in self._owned

    def revoking(self, partitions: Sequence[TopicPartition]) -> None:
        self._owned.difference_update(partitions)

    async def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """After the revoke's commit: close the producers of partitions no longer ours (within the
        patience: aiokafka's ``stop`` waits for batches a broker that is away never takes)."""
        gone = [self._partitions.pop(tp) for tp in partitions if tp in self._partitions]
        await asyncio.gather(*(asyncio.wait_for(part.producer.stop(), self._patience_s) for part in gone),
                             return_exceptions=True)

    async def _open(self, tp: TopicPartition) -> _Partition:
        """Initialise the partition's transactional id, as long as the broker takes to answer (the
        broker's support for transactions was checked at start: no answer now means it is away)."""
        tid = transactional_id(self._group_id, tp)
        backoff, longest = self._backoff_s
        while True:
            producer = self._clients.producer(transactional_id=tid)
            try:
                await init_transactional(producer, self._clients.kafka.bootstrap, self._init_timeout_s)
                break
            except (BrokerUnreachable, TransactionsUnsupported) as exc:
                cause = exc.__cause__
                away = isinstance(cause, asyncio.TimeoutError | KafkaConnectionError) or (
                    isinstance(cause, KafkaError) and is_retriable(cause))
                if not away or (self._stopping is not None and self._stopping.is_set()):
                    raise
                self._broker(up=False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, longest)
        self._broker(up=True)
        return _Partition(tid, producer)

    async def _lose(self, tp: TopicPartition, exc: BaseException) -> None:
        """Fenced: another member initialised this partition's id, so it owns the partition now."""
        part = self._partitions.pop(tp, None)
        owned = tp in self._owned  # not during a revoke: the rebalance under way is the rejoin
        self._owned.discard(tp)
        self._tracker.forget([tp])
        self.fenced += 1
        log.warning("%s-%d fenced (%s): another member took over its transactional id; %d outputs not "
                    "committed are dropped (its owner answers them) and this member rejoins the group",
                    tp.topic, tp.partition, type(exc).__name__, len(part.held) if part else 0)
        if part is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(part.producer.stop(), self._patience_s)
        self._fenced(owned)

    async def close(self) -> None:
        parts, self._partitions = list(self._partitions.values()), {}
        await asyncio.gather(*(part.producer.stop() for part in parts), return_exceptions=True)

    # the Delivery calls --------------------------------------------------------------------

    async def deliver(self, batch: Sequence[Outgoing]) -> None:
        for out in batch:
            part = self._partitions.get(out.source)
            if part is None:  # revoked or fenced while the batch ran: the new owner answers it
                continue
            part.held.append(out)
            if not out.mirror:
                self._tracker.finish(out.source, out.source_offset)

    async def commit(self) -> None:
        async with self._lock:
            offsets = {tp: offset for tp, offset in self._tracker.committable().items() if tp in self._partitions}
            if offsets:
                await self._commit(offsets)
                return
        await self._probe()

    async def _probe(self) -> None:
        """Nothing to commit says nothing about the broker (a rebalance waiting for a coordinator
        that is away holds no records): once per ``patience_s``, ask it for metadata instead."""
        now = asyncio.get_running_loop().time()
        revoking = self._partitions.keys() - self._owned
        if now < self._next_probe or revoking or (self._stopping is not None and self._stopping.is_set()):
            return
        self._next_probe = now + self._patience_s
        try:
            await asyncio.wait_for(self._consumer.topics(), self._patience_s)
        except (KafkaError, asyncio.TimeoutError):
            self._broker(up=False)
            return
        self._broker(up=True)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        results = await asyncio.gather(
            *(self._commit_partition(tp, offset) for tp, offset in offsets.items()), return_exceptions=True
        )
        self._tracker.mark_committed({tp: off for (tp, off), res in zip(offsets.items(), results) if res is True})
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _commit_partition(self, tp: TopicPartition, offset: int) -> bool:
        """True once committed; False if the partition was fenced (and given up)."""
        part = self._partitions[tp]
        records = part.before(offset)
        renewed = False
        while True:
            try:
                await self._until_committed(part, records, tp, offset)
                break
            except FENCED as exc:
                await self._lose(tp, exc)
                return False
            except (KafkaError, AssertionError) as exc:  # aiokafka asserts its transaction states
                if renewed or tp not in self._owned:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(part.producer.abort_transaction(), self._patience_s)
                    raise DeliveryFailed(
                        f"transaction of {len(records)} records and {tp.topic}-{tp.partition}@{offset} failed: {exc!r}"
                    ) from exc
                renewed = True
                log.warning("the transactional producer of %s-%d failed (%r); opening it again", tp.topic, tp.partition, exc)
                renewal = await self._renew(tp, part)
                if renewal is None:
                    return False
                part = renewal
        part.drop_before(offset)
        self._base[tp] = offset
        return True

    async def _renew(self, tp: TopicPartition, old: _Partition) -> _Partition | None:
        """A producer aiokafka gave up on (its sender died, e.g. on a connection lost mid-lookup)
        is replaced under the same id, which aborts its open transaction. If the group's offset
        moved meanwhile, another member owned the partition and committed: give it up instead."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.producer.stop(), self._patience_s)
        part = await self._open(tp)
        part.held = old.held
        self._partitions[tp] = part
        if await self._consumer.committed(tp) != self._base.get(tp):
            await self._lose(tp, ProducerFenced())
            return None
        return part

    async def _until_committed(self, part: _Partition, records: list[Outgoing], tp: TopicPartition, offset: int) -> None:
        """One transaction, done again after an abort while the broker is away or electing leaders."""
        backoff, longest = self._backoff_s
        while True:
            try:
                await self._patiently(self._transact(part, records, tp, offset))
                return
            except FENCED:
                raise
            except KafkaError as exc:
                if not is_retriable(exc) or (self._stopping is not None and self._stopping.is_set()):
                    raise
                self._broker(up=False)
            await self._patiently(part.producer.abort_transaction())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, longest)

    async def _transact(self, part: _Partition, records: list[Outgoing], tp: TopicPartition, offset: int) -> None:
        producer = part.producer
        await producer.begin_transaction()
        futures = await part.sender.send(records) if records else []
        await producer.send_offsets_to_transaction({tp: offset}, self._group_id)
        acks = await asyncio.gather(*futures, return_exceptions=True)
        failed = next((ack for ack in acks if isinstance(ack, BaseException)), None)
        if failed is not None:
            raise failed
        await producer.commit_transaction()

    async def _patiently(self, step: Awaitable[None]) -> None:
        """Await ``step``; one that takes over ``patience_s`` counts as the broker being away."""
        task = asyncio.ensure_future(step)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._patience_s)
            if not done:
                self._broker(up=False)
            await task
        finally:
            task.cancel()
        self._broker(up=True)

    def _broker(self, up: bool) -> None:
        if up == self._away:
            self._away = not up
            self._connected(up)


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
