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

What one attempt's answer means, and how long the next waits: ``streams.alerting.attempts``.
The lanes and what ending a notification does: ``streams.alerting.lanes``. How a call reaches
the receiver (a real HTTP client, or a mock in tests): ``streams.alerting.transport``.

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
import logging
from collections.abc import Iterable

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.alerting.delivery_metrics import UNKNOWN_RECEIVER, DeliveryMetrics
from streaminfer.monitoring.alerting.receivers import DeliverySettings, ReceiverConfig
from streaminfer.schemas.errors import NestingTooDeep, StreamInferError
from streaminfer.schemas.notifications import decode_notification
from streaminfer.streams.alerting.lanes import Endings, Pending, ReceiverCounts, ReceiverLane
from streaminfer.streams.alerting.transport import AiohttpTransport, Transport
from streaminfer.streams.clients import KafkaClients, start_client
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.settings import KafkaSettings

log = logging.getLogger(__name__)


class DuplicateReceiver(StreamInferError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"webhook receiver {name!r} is configured twice: give each receiver its own name")


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
        clients: KafkaClients | None = None,
        transport: Transport | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``metrics``: pass the composition root's; a private registry is used otherwise.
        ``clients`` builds the consumer and the producer (``KafkaClients(kafka)`` unless given);
        ``transport`` makes the HTTP calls (an ``AiohttpTransport`` unless given; closed on
        ``stop()``); backoffs, commit intervals and delivery times are measured on ``clock``."""
        self._kafka = kafka
        self._clients = clients if clients is not None else KafkaClients(kafka)
        self._transport: Transport = (
            transport if transport is not None else AiohttpTransport(4 * settings.response_excerpt_chars)
        )
        self._clock = clock
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
        self._producer = self._clients.producer()
        await start_client(self._producer, self._kafka.bootstrap)
        self._endings = Endings(
            self._producer,
            self._deadletter,
            self._tracker,
            self._metrics,
            self._settings.response_excerpt_chars,
            self._clock,
        )
        self._lanes = {
            name: ReceiverLane(receiver, self._transport, self._settings, self._endings, self._clock)
            for name, receiver in self._receivers.items()
        }
        self._consumer = self._clients.consumer(group_id=self._group_id)
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
        await self._transport.aclose()
        self._consumer = self._producer = None

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
            except (msgspec.DecodeError, NestingTooDeep):
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
                await self._clock.wait_for(self._stopping.wait(), interval)
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
