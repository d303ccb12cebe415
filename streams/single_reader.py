"""The lifecycle of the services that read every partition of their topics themselves: the
monitor, the alerting rules consumer and the experiment controller.

Their state cannot be split by partition, so they assign partitions to themselves instead of
joining a balanced group, and resume from the offsets saved with their state. They still commit
those offsets under a group id, only so that lag tools see how far behind they are.

``SingleReader`` holds what the three share; a service adds only what to do with a fetch
(``_process``), what to restore before it starts (``_prepare``) and what to save when it stops
(``_finish``). The contract:

- ``start()`` creates the topics it reads and writes (laid out as ``streams.topics`` declares
  them), opens a producer and a consumer from its ``KafkaClients``, assigns every partition at
  the saved offsets, and starts one background task. A second call does nothing until
  ``stop()``; if opening fails, whatever was opened is closed again before the error is raised.
- The task fetches and hands each fetch to ``_process`` until stopped. If it ends with an error,
  its done-callback records the error in ``failure`` and logs it: nothing is left unwatched, and
  the actor shell (``streaminfer.actors.service``) replaces a service that failed.
- ``stop()`` lets the task finish the fetch in hand and ``_finish`` (the last checkpoint), then
  closes the clients. It is safe to call twice, concurrently, before ``start()`` and after a
  failure; a stopped reader may be started again.
- ``async with`` starts and stops it. Asyncio objects are created in ``start()``, inside the loop
  that runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from typing import ClassVar, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streaminfer.streams.clients import KafkaClients, ensure_topics, partition_counts, start_client
from streaminfer.streams.settings import KafkaSettings
from streaminfer.streams.topics import TopicSpec

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]
Batches = dict[TopicPartition, list[ConsumerRecord]]
Reader = TypeVar("Reader", bound="SingleReader")


class SingleReader(ABC):
    """One service reading all partitions of ``reads`` and writing to ``writes``.

    ``label`` names the task and the log lines; ``group_id`` is the group its offsets are
    committed under for lag tools. Each fetch takes up to ``max_records`` records and waits up
    to ``poll_timeout_ms`` for them.
    """

    resume_from_group: ClassVar[bool] = True
    """Where a partition without a saved offset starts: at the group's committed offset when
    True, at the beginning when False (or when the group has none)."""

    def __init__(
        self,
        label: str,
        clients: KafkaClients,
        group_id: str,
        reads: list[TopicSpec],
        writes: list[TopicSpec],
        *,
        poll_timeout_ms: int,
        max_records: int,
    ) -> None:
        self._label = label
        self._clients = clients
        self._group_id = group_id
        self._reads, self._writes = reads, writes
        self._poll_timeout_ms, self._max_records = poll_timeout_ms, max_records
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self.failure: BaseException | None = None
        """What ended the background task, when an error did."""

    @property
    def kafka(self) -> KafkaSettings:
        return self._clients.kafka

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self._label} is not started")
        return self._producer

    # what a service supplies -----------------------------------------------------------------

    def _prepare(self) -> Offsets:
        """Before anything opens: restore state. Returns the offsets to resume from."""
        return {}

    @abstractmethod
    async def _process(self, batches: Batches) -> None:
        """One fetch (possibly empty: a fetch that timed out)."""

    async def _finish(self) -> None:  # noqa: B027 - optional: most services checkpoint here
        """After the last fetch, when stopped (not after a failure): the last checkpoint."""

    # the lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        saved = self._prepare()
        await ensure_topics(self._clients, self._reads + self._writes)
        try:
            await self._open(saved)
        except BaseException:
            await self._close_clients()
            raise
        self.failure = None
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self._label)
        self._task.add_done_callback(self._record_failure)

    async def stop(self) -> None:
        """Finish the fetch in hand and ``_finish``, then close the clients. Safe to call twice."""
        if self._stopping is not None:
            self._stopping.set()
        task = self._task
        if task is not None:
            await asyncio.wait({task})  # not gather: a cancelled stop() must not cancel the task
            self._task = None
        await self._close_clients()

    async def wait(self) -> None:
        """Until the task ends: after ``stop()``, or raising the error it failed on. Cancelling
        the wait leaves the task running."""
        if self._task is None:
            raise RuntimeError(f"{self._label} is not started")
        await asyncio.shield(self._task)

    async def __aenter__(self: Reader) -> Reader:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _failed(self) -> str | None:
        """For ``describe()``."""
        return repr(self.failure) if self.failure is not None else None

    async def _commit_for_lag_tools(self, offsets: Offsets) -> None:
        await commit_for_lag_tools(self._consumer, offsets)

    async def _read_positions(self) -> tuple[set[TopicPartition], dict[TopicPartition, float]]:
        """The partitions read, and those of them read up to their last known end (the last
        stable offset under ``read_committed``, else the high watermark), with when that end
        was last seen (Unix ms)."""
        consumer = self._consumer
        if consumer is None:
            return set(), {}
        assigned = set(consumer.assignment())
        at_end: dict[TopicPartition, float] = {}
        for tp in assigned:
            stable = consumer.last_stable_offset(tp)
            end = stable if stable is not None and stable >= 0 else consumer.highwater(tp)
            seen = consumer.last_poll_timestamp(tp)
            if end is not None and seen is not None and await consumer.position(tp) >= end:
                at_end[tp] = seen
        return assigned, at_end

    # inside ----------------------------------------------------------------------------------

    async def _open(self, saved: Offsets) -> None:
        bootstrap = self.kafka.bootstrap
        self._producer = self._clients.producer()
        await start_client(self._producer, bootstrap)
        self._consumer = self._clients.consumer(group_id=self._group_id)
        await start_client(self._consumer, bootstrap)
        names = [spec.name for spec in self._reads]
        await assign_all(self._consumer, self._clients, names, saved, self.resume_from_group)

    async def _run(self) -> None:
        assert self._consumer is not None and self._stopping is not None
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_records)
            await self._process(batches)
        await self._finish()

    def _record_failure(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.failure = error
            log.error("%s stopped", self._label, exc_info=error)

    async def _close_clients(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        for client in (consumer, producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()


def advance(offsets: Offsets, batches: Batches) -> None:
    """Move ``offsets`` past the records of a fetch."""
    for tp, records in batches.items():
        if records:
            offsets[(tp.topic, tp.partition)] = records[-1].offset + 1


def advance_past(offsets: Offsets, records: list[ConsumerRecord]) -> None:
    """Move ``offsets`` past ``records``, which may come from many partitions in any order."""
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)


async def assign_all(
    consumer: AIOKafkaConsumer, clients: KafkaClients, topics: list[str], saved: Offsets, group_fallback: bool
) -> None:
    """Every partition of ``topics``, positioned at the saved offset; without one, at the group's
    committed offset (when ``group_fallback``) or the beginning."""
    counts = await partition_counts(clients, topics)
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
