"""Webhook delivery: outbox topic → one HTTP lane per receiver → committed offsets.

Guarantees, in order of importance:

1. Nothing accepted is lost. An outbox offset is committed only once it, and everything before it
   in its partition, has ended: delivered (a 2xx answer) or dead-lettered with the broker's
   acknowledgement (``streams.offsets``). A notification written while its receiver is down is
   delivered when the receiver comes back, also after the worker restarts, because the
   uncommitted records are read again. Repeats are possible (a crash between the 2xx and the
   commit, a partition moving to another worker mid-attempt); every call carries the
   notification's id in ``Idempotency-Key`` so receivers can drop them.
2. Receivers are isolated. Each has its own lane (a queue and a task), so a slow or dead
   receiver holds up only its own notifications. The consumer loop never waits on HTTP; it only
   pauses the partitions feeding a lane that holds ``max_inflight_per_receiver`` notifications,
   so a dead receiver's backlog waits in Kafka, not in memory.
3. Order per receiver. A lane delivers one notification at a time, oldest first, and the outbox
   is keyed by receiver, so one receiver's notifications sit in one partition, in order, also
   when they are read again after a restart.

What one attempt's answer means:

- 2xx: delivered.
- 5xx, 408, 429, connection errors and timeouts: tried again after an exponential backoff with
  full jitter (``initial_backoff_s`` doubling up to the receiver's ``max_backoff_s``; a
  ``Retry-After`` on 429 or 503 is obeyed, within the same cap), for as long as it takes.
- Any other answer (4xx, and 3xx: redirects are not followed, a POST must not turn into a GET):
  the receiver refuses this body and would refuse it again, so it becomes a ``DeliveryFailure``
  (reason ``rejected``) on the dead-letter topic after one attempt.

A notification for a receiver missing from the config is dead-lettered as ``unknown_receiver``.
Outbox bytes that are not a ``Notification`` at all have no receiver or id to put in a
``DeliveryFailure``: they are logged, counted as ``invalid_record`` (``receiver=""``) and ended,
so they never block the partition. That is a bug of the outbox's writer, visible in the metric.

If the broker does not acknowledge a dead letter, or a bug surfaces, the worker stops without
committing what has not ended (``wait()`` re-raises the error).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timezone

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from monitoring.alerting.delivery_metrics import (
    DELIVERED,
    INVALID_RECORD,
    REJECTED,
    RETRIED,
    UNKNOWN_RECEIVER,
    DeliveryMetrics,
)
from monitoring.alerting.receivers import DeliverySettings, ReceiverConfig
from monitoring.alerting.signing import sign
from schemas.alerts import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    DeliveryFailure,
    Notification,
    decode_notification,
    encode_alerting,
)
from schemas.errors import StreamInferError
from streams.clients import make_consumer, make_producer, start_client
from streams.errors import DeliveryFailed
from streams.offsets import OffsetTracker
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

#: 4xx answers that mean "not now" rather than "never": retried like 5xx.
RETRIED_CLIENT_STATUSES = frozenset({408, 429})
#: Answers whose ``Retry-After`` header is obeyed.
RETRY_AFTER_STATUSES = frozenset({429, 503})


class DuplicateReceiver(StreamInferError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"webhook receiver {name!r} is configured twice: give each receiver its own name")


# one attempt -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one POST came back with; ``status`` is None when no answer came (refused, timeout)."""

    status: int | None
    text: str = ""
    retry_after_s: float | None = None
    error: str = ""


def verdict(status: int | None) -> str:
    """``delivered``, ``retried`` or ``rejected`` for an answer's status (None: no answer)."""
    if status is None or status >= 500 or status in RETRIED_CLIENT_STATUSES:
        return RETRIED
    if 200 <= status < 300:
        return DELIVERED
    return REJECTED


def retry_after_s(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def backoff_s(
    attempts: int,
    initial_s: float,
    cap_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Wait before attempt ``attempts + 1``: uniform below ``min(cap, initial * 2**(attempts-1))``
    (full jitter, so workers do not return in step), or the receiver's ``Retry-After``, capped."""
    if retry_after is not None:
        return min(retry_after, cap_s)
    ceiling = min(cap_s, initial_s * 2 ** min(max(attempts - 1, 0), 30))
    return (rng or random).uniform(0, ceiling)


def request_headers(receiver: ReceiverConfig, notification_id: str, body: bytes) -> dict[str, str]:
    """The receiver's extra headers, then ours, which win: a configured header must not be able
    to break the signature, the idempotency key or the content type."""
    ours = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, receiver.secret.get_secret_value()),
        IDEMPOTENCY_HEADER: notification_id,
    }
    taken = {name.lower() for name in ours}
    extra = {name: value for name, value in receiver.headers.items() if name.lower() not in taken}
    return extra | ours


async def post(
    session: aiohttp.ClientSession,
    receiver: ReceiverConfig,
    body: bytes,
    headers: dict[str, str],
    excerpt_chars: int,
) -> Attempt:
    """One POST, its failures turned into an ``Attempt``; reads at most what the excerpt needs."""
    timeout = aiohttp.ClientTimeout(total=receiver.timeout_s)
    try:
        async with session.post(
            receiver.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            raw = await response.content.read(4 * excerpt_chars) if excerpt_chars else b""
            wait = (
                retry_after_s(response.headers.get("Retry-After"))
                if response.status in RETRY_AFTER_STATUSES
                else None
            )
            return Attempt(response.status, raw.decode(errors="replace")[:excerpt_chars], wait)
    except asyncio.TimeoutError:
        return Attempt(None, error=f"no answer within {receiver.timeout_s} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Attempt(None, error=repr(exc))


# what happens when a notification ends ---------------------------------------------------------


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
    ) -> None:
        self._producer = producer
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
        waited_s = max(0.0, time.time() - item.notification.created_ms / 1000)
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
            failed_ms=int(time.time() * 1000),
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


# one receiver's lane ---------------------------------------------------------------------------


class ReceiverLane:
    """One receiver's notifications, delivered one at a time, oldest first, each until it ends.

    The lane's queue is filled by the consumer loop without waiting; its length is what the loop
    checks for backpressure. Closing stops it between attempts (waits in backoff end at once);
    the caller decides how long an attempt in progress may still run."""

    def __init__(
        self,
        receiver: ReceiverConfig,
        session: aiohttp.ClientSession,
        settings: DeliverySettings,
        endings: Endings,
    ) -> None:
        self.receiver = receiver
        self._session = session
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
                self._session, self.receiver, body, headers, self._settings.response_excerpt_chars
            )
            outcome = verdict(attempt.status)
            if outcome == DELIVERED:
                self._endings.delivered(item)
                return
            if outcome == REJECTED:
                await self._endings.dead_letter(item, REJECTED, attempts, attempt)
                return
            self._endings.retried(item, attempt, attempts)
            await self._pause_before_retry(attempts, attempt)

    async def _pause_before_retry(self, attempts: int, attempt: Attempt) -> None:
        delay = backoff_s(
            attempts, self._settings.initial_backoff_s, self.receiver.max_backoff_s, attempt.retry_after_s
        )
        with contextlib.suppress(asyncio.TimeoutError):  # the wait is over; closing ends it early
            await asyncio.wait_for(self._closing.wait(), delay)


# the worker ------------------------------------------------------------------------------------


class WebhookDelivery:
    """Reads notifications from the outbox in a consumer group and delivers them to webhooks,
    with the guarantees in the module docstring. ``start()``/``stop()`` are safe to call twice."""

    def __init__(
        self,
        kafka: KafkaSettings,
        outbox_topic: str,
        deadletter_topic: str,
        group_id: str,
        receivers: list[ReceiverConfig],
        settings: DeliverySettings,
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        """``metrics``: pass the composition root's; a private registry is used otherwise."""
        self._kafka = kafka
        self._outbox = outbox_topic
        self._deadletter = deadletter_topic
        self._group_id = group_id
        self._receivers = _by_name(receivers)
        self._settings = settings
        self._metrics = metrics or DeliveryMetrics(CollectorRegistry())
        self._tracker = OffsetTracker()
        self._lanes: dict[str, ReceiverLane] = {}
        self._endings: Endings | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Event | None = None
        self._commit_lock: asyncio.Lock | None = None
        self._failure: BaseException | None = None
        self._started = self._stopped = False
        self.pauses = 0

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping, self._commit_lock = asyncio.Event(), asyncio.Lock()
        try:
            await self._open()
        except BaseException:
            await self.stop()
            raise

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._producer = make_producer(self._kafka)
        await start_client(self._producer, self._kafka.bootstrap)
        self._endings = Endings(
            self._producer,
            self._deadletter,
            self._tracker,
            self._metrics,
            self._settings.response_excerpt_chars,
        )
        self._lanes = {
            name: ReceiverLane(receiver, self._session, self._settings, self._endings)
            for name, receiver in self._receivers.items()
        }
        self._consumer = make_consumer(self._kafka, group_id=self._group_id)
        self._consumer.subscribe([self._outbox], listener=_HandOverOnRevoke(self))
        await start_client(self._consumer, self._kafka.bootstrap)
        for lane in self._lanes.values():
            self._watch(lane.start())
        self._loops = [
            self._watch(asyncio.create_task(self._consume_loop(), name="webhook-outbox")),
            self._watch(asyncio.create_task(self._commit_loop(), name="webhook-commit")),
        ]

    async def stop(self) -> None:
        """Stop fetching, let attempts in progress finish within ``stop_grace_s`` (abandoning the
        rest), commit the offsets of what has ended and close the clients. Notifications still
        undelivered stay uncommitted: the group's next worker delivers them."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        assert self._stopping is not None
        self._stopping.set()
        loops = [task for task in self._loops if task is not asyncio.current_task()]
        await asyncio.gather(*loops, return_exceptions=True)
        await asyncio.gather(*(lane.close(self._settings.stop_grace_s) for lane in self._lanes.values()))
        self._loops = []
        if self._consumer is not None:
            await self._commit()
        self._export_pending()
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except KafkaError as exc:
                    log.warning("webhook delivery: closing a Kafka client failed: %r", exc)
        if self._session is not None:
            await self._session.close()
        self._consumer = self._producer = self._session = None

    async def wait(self) -> None:
        """Until stopped; re-raises the error that stopped the worker, if one did."""
        if self._stopping is None:
            raise RuntimeError("WebhookDelivery.wait() before start(): await start() first")
        await self._stopping.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    async def __aenter__(self) -> WebhookDelivery:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def describe(self) -> dict[str, object]:
        """Counts per receiver (delivered, retried, dead_lettered, pending), records skipped as
        invalid, partition pauses, and the error that stopped the worker, if any."""
        endings = self._endings
        counts = dict(endings.counts) if endings is not None else {}
        names = list(self._receivers) + [name for name in counts if name not in self._receivers]
        receivers = {}
        for name in names:
            count = counts.get(name, ReceiverCounts())
            lane = self._lanes.get(name)
            receivers[name] = {
                "delivered": count.delivered,
                "retried": count.retried,
                "dead_lettered": count.dead_lettered,
                "pending": len(lane) if lane is not None else 0,
            }
        return {
            "receivers": receivers,
            "invalid_records": endings.invalid_records if endings is not None else 0,
            "pauses": self.pauses,
            "failed": repr(self._failure) if self._failure is not None else None,
        }

    def _watch(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        if self._failure is None:
            self._failure = task.exception()
            log.error("webhook delivery stopping: %s failed with %r", task.get_name(), self._failure)
        assert self._stopping is not None
        self._stopping.set()

    # loops -----------------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        assert self._consumer is not None and self._stopping is not None and self._endings is not None
        while not self._stopping.is_set():
            self._apply_backpressure()
            fetched = await self._consumer.getmany(
                timeout_ms=self._settings.poll_timeout_ms, max_records=self._settings.fetch_max_records
            )
            unknown = [item for records in fetched.values() for item in self._dispatch(records)]
            if unknown:
                await asyncio.gather(
                    *(self._endings.dead_letter(item, UNKNOWN_RECEIVER, 0) for item in unknown)
                )

    def _dispatch(self, records: Iterable[ConsumerRecord]) -> list[Pending]:
        """Hand each record to its receiver's lane; returns those for receivers not configured."""
        assert self._endings is not None
        unknown = []
        for record in records:
            source = TopicPartition(record.topic, record.partition)
            self._tracker.track(source, record.offset)
            try:
                notification = decode_notification(record.value if record.value is not None else b"")
            except msgspec.DecodeError:
                self._endings.invalid(record)
                continue
            item = Pending(notification, source, record.offset)
            lane = self._lanes.get(notification.receiver)
            if lane is None:
                unknown.append(item)
            else:
                lane.put(item)
        return unknown

    def _apply_backpressure(self) -> None:
        """Pause the partitions feeding full lanes, resume those whose lanes have room again."""
        assert self._consumer is not None
        limit = self._settings.max_inflight_per_receiver
        wanted: set[TopicPartition] = set()
        for lane in self._lanes.values():
            if len(lane) >= limit:
                wanted |= lane.sources()
        owned, paused = self._consumer.assignment(), self._consumer.paused()
        to_pause, to_resume = (wanted & owned) - paused, paused - wanted
        if to_pause:
            self._consumer.pause(*to_pause)
            self.pauses += 1
        if to_resume:
            self._consumer.resume(*to_resume)

    async def _commit_loop(self) -> None:
        assert self._stopping is not None
        interval = self._settings.commit_interval_ms / 1000
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):  # an interval passed, or stop was asked
                await asyncio.wait_for(self._stopping.wait(), interval)
            await self._commit()
            self._export_pending()

    async def _commit(self) -> None:
        """Commit the ended prefix of each partition. A refused commit (a rebalance under way) is
        not fatal: the next one covers it, or the partition's next owner re-sends a few."""
        assert self._consumer is not None and self._commit_lock is not None
        async with self._commit_lock:
            offsets = self._tracker.committable()
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                log.warning("webhook delivery could not commit outbox offsets %s: %r", offsets, exc)
                return
            self._tracker.mark_committed(offsets)

    def _export_pending(self) -> None:
        for name, lane in self._lanes.items():
            self._metrics.outbox_pending.labels(name).set(len(lane))

    async def _hand_over(self, revoked: set[TopicPartition]) -> None:
        for lane in self._lanes.values():
            lane.drop(revoked)
        if self._consumer is not None:
            await self._commit()
        self._tracker.forget(revoked)


class _HandOverOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another worker: drop their queued notifications (the new owner
    reads them again), commit what has ended, and forget them."""

    def __init__(self, worker: WebhookDelivery) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker._hand_over(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


def _by_name(receivers: list[ReceiverConfig]) -> dict[str, ReceiverConfig]:
    named: dict[str, ReceiverConfig] = {}
    for receiver in receivers:
        if receiver.name in named:
            raise DuplicateReceiver(receiver.name)
        named[receiver.name] = receiver
    return named
