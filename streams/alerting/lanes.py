"""One receiver's lane of notifications, and what happens when a notification ends.

A lane delivers its receiver's notifications one at a time, oldest first, each until it ends:
delivered, or dead-lettered once the broker has acknowledged the dead letter. Every ending goes
through ``Endings``, which lets the outbox's commit point move past the notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.alerting.delivery_metrics import (
    DELIVERED,
    INVALID_RECORD,
    RETRIED,
    DeliveryMetrics,
)
from streaminfer.monitoring.alerting.receivers import DeliverySettings, ReceiverConfig
from streaminfer.schemas.notifications import DeliveryFailure, Notification, encode_alerting
from streaminfer.streams.alerting.attempts import Attempt, backoff_s, post, request_headers
from streaminfer.streams.alerting.transport import Transport
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock
from streaminfer.streams.errors import DeliveryFailed
from streaminfer.streams.offsets import OffsetTracker

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A notification read from the outbox, from the fetch until it ends."""

    notification: Notification
    source: TopicPartition
    offset: int
    abandoned: bool = False
    """Its partition moved to another worker, which reads it again: stop trying it here."""


@dataclass
class ReceiverCounts:
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0


class Endings:
    """Records each ending: counts, metrics, dead letters (acknowledged by the broker first),
    and the offset tracker, which lets the commit point move past the notification."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        deadletter_topic: str,
        tracker: OffsetTracker,
        metrics: DeliveryMetrics,
        excerpt_chars: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._producer = producer
        self._clock = clock
        self._topic = deadletter_topic
        self._tracker = tracker
        self._metrics = metrics
        self._excerpt_chars = excerpt_chars
        self.counts: dict[str, ReceiverCounts] = {}
        self.invalid_records = 0

    def delivered(self, item: Pending) -> None:
        receiver = item.notification.receiver
        self._tracker.finish(item.source, item.offset)
        self._count(receiver).delivered += 1
        self._metrics.notifications.labels(receiver, DELIVERED).inc()
        waited_s = max(0.0, self._clock.time() - item.notification.created_ms / 1000)
        self._metrics.delivery_seconds.labels(receiver).observe(waited_s)

    def retried(self, item: Pending, attempt: Attempt, attempts: int) -> None:
        receiver = item.notification.receiver
        self._count(receiver).retried += 1
        self._metrics.notifications.labels(receiver, RETRIED).inc()
        log.debug(
            "webhook %s attempt %d for %s: %s",
            receiver,
            attempts,
            item.notification.id,
            attempt.status or attempt.error,
        )

    async def dead_letter(
        self, item: Pending, reason: str, attempts: int, attempt: Attempt | None = None
    ) -> None:
        notification = item.notification
        failure = DeliveryFailure(
            notification=notification,
            reason=reason,
            status=attempt.status if attempt else None,
            response=attempt.text[: self._excerpt_chars] if attempt else "",
            attempts=attempts,
            failed_ms=int(self._clock.time() * 1000),
        )
        try:
            await self._producer.send_and_wait(
                self._topic, encode_alerting(failure), key=notification.receiver.encode()
            )
        except KafkaError as exc:
            raise DeliveryFailed(
                f"the broker did not acknowledge the dead letter of notification {notification.id} "
                f"({notification.receiver}) on {self._topic}: {exc!r}. The worker stops without committing "
                "it; a restart tries again"
            ) from exc
        self._tracker.finish(item.source, item.offset)
        self._count(notification.receiver).dead_lettered += 1
        self._metrics.notifications.labels(notification.receiver, reason).inc()

    def invalid(self, record: ConsumerRecord) -> None:
        """An outbox record that is not a notification: logged, counted, ended (see module doc)."""
        self._tracker.finish(TopicPartition(record.topic, record.partition), record.offset)
        self.invalid_records += 1
        self._metrics.notifications.labels("", INVALID_RECORD).inc()
        log.warning(
            "outbox record %s-%d@%d is not a notification and is skipped: %r",
            record.topic,
            record.partition,
            record.offset,
            (record.value or b"")[:200],
        )

    def _count(self, receiver: str) -> ReceiverCounts:
        return self.counts.setdefault(receiver, ReceiverCounts())


class ReceiverLane:
    """One receiver's notifications, delivered one at a time, oldest first, each until it ends.

    The lane's queue is filled by the consumer loop without waiting; its length is what the loop
    checks for backpressure. Closing stops it between attempts (waits in backoff end at once);
    the caller decides how long an attempt in progress may still run. Calls go through
    ``transport``; backoffs are waited for on ``clock``."""

    def __init__(
        self,
        receiver: ReceiverConfig,
        transport: Transport,
        settings: DeliverySettings,
        endings: Endings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.receiver = receiver
        self._transport = transport
        self._clock = clock
        self._settings = settings
        self._endings = endings
        self._queue: deque[Pending] = deque()
        self._current: Pending | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"webhook-lane-{self.receiver.name}")
        return self._task

    def put(self, item: Pending) -> None:
        self._queue.append(item)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue) + (self._current is not None)

    def sources(self) -> set[TopicPartition]:
        """Partitions the lane holds notifications of (those to pause when it is full)."""
        held = {item.source for item in self._queue}
        return held | ({self._current.source} if self._current is not None else set())

    def drop(self, partitions: set[TopicPartition]) -> None:
        """Forget notifications of partitions now owned by another worker (it reads them again);
        the one being tried is abandoned after its current attempt."""
        self._queue = deque(item for item in self._queue if item.source not in partitions)
        if self._current is not None and self._current.source in partitions:
            self._current.abandoned = True

    async def close(self, grace_s: float) -> None:
        """Stop taking notifications; give an attempt in progress ``grace_s``, then cancel it."""
        self._closing.set()
        self._ready.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=grace_s)
        if not done:
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while (item := await self._next()) is not None:
            self._current = item
            try:
                await self._deliver(item)
            finally:
                self._current = None

    async def _next(self) -> Pending | None:
        while not self._closing.is_set():
            if self._queue:
                return self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()
        return None

    async def _deliver(self, item: Pending) -> None:
        body = encode_alerting(item.notification.payload)
        headers = request_headers(self.receiver, item.notification.id, body)
        attempts = 0
        while not (item.abandoned or self._closing.is_set()):
            attempts += 1
            attempt = await post(
                self._transport, self.receiver, body, headers, self._settings.response_excerpt_chars,
                self._settings.ca_file,
            )
            outcome = attempt.outcome
            if outcome == DELIVERED:
                self._endings.delivered(item)
                return
            if outcome != RETRIED:  # rejected, untrusted_certificate
                await self._endings.dead_letter(item, outcome, attempts, attempt)
                return
            self._endings.retried(item, attempt, attempts)
            await self._pause_before_retry(attempts, attempt)

    async def _pause_before_retry(self, attempts: int, attempt: Attempt) -> None:
        delay = backoff_s(
            attempts, self._settings.initial_backoff_s, self.receiver.max_backoff_s, attempt.retry_after_s
        )
        with contextlib.suppress(asyncio.TimeoutError):  # the wait is over; closing ends it early
            await self._clock.wait_for(self._closing.wait(), delay)
