"""The driver's side of the control topic: publish each registry document when it changes.

``RegistryBridge`` scans the repository every ``every_s`` (``documents.RepositoryScan``) and
sends what changed since its last publication, versions first, then tombstones for documents
that are gone; it remembers a document as published only once the broker has acknowledged it,
so a failed send is sent again on the next round. On start it first reads what the topic holds
(from an earlier run), then publishes only what differs, and a tombstone for each document the
topic has and the repository no longer does (a traffic policy stopped while no driver ran).

Its lifecycle is the one the side services share (``streaminfer.actors.service``): ``start()``
and ``stop()`` safe to call twice, one background task whose error lands in ``failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition

from streaminfer.monitoring.observability.metrics import RegistryBridgeMetrics
from streaminfer.streams.clients import KafkaClients, ensure_topics, start_client
from streaminfer.streams.control.documents import Documents, RepositoryScan, publish_order
from streaminfer.streams.errors import ControlTopicBehind
from streaminfer.streams.topics import TopicSpec

log = logging.getLogger(__name__)


class RegistryBridge:
    def __init__(
        self, root: Path, clients: KafkaClients, control: TopicSpec, every_s: float = 0.2,
        metrics: RegistryBridgeMetrics | None = None,
    ) -> None:
        self._scan = RepositoryScan(root)
        self._clients = clients
        self._control = control
        self._every_s = every_s
        self._metrics = metrics
        self._published: Documents = {}
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        """Records sent so far (documents and tombstones)."""
        self.failure: BaseException | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        await ensure_topics(self._clients, [self._control])
        self._published = await read_published(self._clients, self._control.name)
        producer = self._clients.producer()
        await start_client(producer, self._clients.kafka.bootstrap)
        self._producer, self.failure = producer, None
        try:
            await self.publish_changes()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="registry-bridge")
        self._task.add_done_callback(self._done)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> RegistryBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish_changes(self) -> int:
        """Send what changed since the last call; returns how many records that was."""
        assert self._producer is not None, "start() first"
        documents = await asyncio.to_thread(self._scan.documents)
        changed = [key for key, value in documents.items() if self._published.get(key) != value]
        gone = sorted(key for key in self._published if key not in documents)
        if not changed and not gone:
            return 0
        topic = self._control.name
        sending = []
        for key in publish_order(changed):
            sending.append(await self._producer.send(topic, documents[key], key=key.encode()))
        for key in gone:
            sending.append(await self._producer.send(topic, None, key=key.encode()))
        await asyncio.gather(*sending)
        for key in changed:
            self._published[key] = documents[key]
        for key in gone:
            del self._published[key]
        self.sent += len(sending)
        if self._metrics is not None:
            self._metrics.published.labels("document").inc(len(changed))
            self._metrics.published.labels("tombstone").inc(len(gone))
            self._metrics.documents.set(len(self._published))
            self._metrics.last_change.set(time.time())
        log.debug("control topic %s: published %d documents, %d tombstones", topic, len(changed), len(gone))
        return len(sending)

    def describe(self) -> dict[str, object]:
        return {
            "documents": len(self._published), "sent": self.sent,
            "failed": repr(self.failure) if self.failure is not None else None,
        }

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.publish_changes()

    def _done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            if (error := task.exception()) is not None:
                self.failure = error
                log.error("registry bridge stopped: %r", error)


async def read_published(clients: KafkaClients, topic: str, timeout_s: float = 60.0) -> Documents:
    """The documents the control topic holds now: the newest value per key, tombstones dropped."""
    partition = TopicPartition(topic, 0)  # declared with one partition (streams.topics)
    consumer = clients.consumer(group_id=None)
    await start_client(consumer, clients.kafka.bootstrap)
    documents: Documents = {}
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        position = 0

        async def read_to_end() -> None:
            nonlocal position
            while position < end:
                batches = await consumer.getmany(partition, timeout_ms=100)
                for record in batches.get(partition, []):
                    key = record.key.decode() if record.key is not None else ""
                    if record.value is None:
                        documents.pop(key, None)
                    else:
                        documents[key] = record.value
                    position = record.offset + 1

        try:
            await asyncio.wait_for(read_to_end(), timeout_s)
        except asyncio.TimeoutError:
            raise ControlTopicBehind(topic, position, end, timeout_s) from None
    finally:
        await consumer.stop()
    return documents
