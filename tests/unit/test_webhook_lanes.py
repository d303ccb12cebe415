"""One receiver's lane driven through a mock transport on a manual clock: what a retried answer,
a refused answer and no answer at all end as, and when the next attempt goes out."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.monitoring.alerting.receivers import DeliverySettings, ReceiverConfig
from streaminfer.monitoring.alerting.signing import verify
from streaminfer.schemas.notifications import (
    FIRING,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    Notification,
    WebhookPayload,
    decode_delivery_failure,
    encode_alerting,
)
from streaminfer.streams.alerting.errors import NoAnswer
from streaminfer.streams.alerting.lanes import Endings, Pending, ReceiverCounts, ReceiverLane
from streaminfer.streams.alerting.transport import MockTransport, Request, Response
from streaminfer.streams.clock import ManualClock
from streaminfer.streams.offsets import OffsetTracker

GUARD_S = 10
OUTBOX = TopicPartition("alerts-outbox", 0)
DEADLETTER = "alerts-deadletter"
RECEIVER = ReceiverConfig(name="ops", url="http://ops.invalid/hook", secret="s3cret", max_backoff_s=30.0)


def notification(n: int = 1) -> Notification:
    payload = WebhookPayload(
        version="4", groupKey='{}:{alertname="Drift"}', truncatedAlerts=0, status=FIRING, receiver=RECEIVER.name,
        groupLabels={"alertname": "Drift"}, commonLabels={}, commonAnnotations={}, externalURL="http://x", alerts=[],
    )
    return Notification(id=f"ops-{n}", receiver=RECEIVER.name, created_ms=1_000, payload=payload)


class DeadLetterProducer:
    """Acknowledges every dead letter at once and keeps it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value, key))


class ObservedEndings(Endings):
    """Endings that also tell the test when a notification has ended."""

    def __init__(self, producer: DeadLetterProducer, tracker: OffsetTracker, clock: ManualClock) -> None:
        super().__init__(producer, DEADLETTER, tracker, DeliveryMetrics(CollectorRegistry()), 200, clock)  # type: ignore[arg-type]
        self.ended = asyncio.Event()

    def delivered(self, item: Pending) -> None:
        super().delivered(item)
        self.ended.set()

    async def dead_letter(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        await super().dead_letter(*args, **kwargs)
        self.ended.set()


class Lane:
    """A started lane with one notification from offset 0 of the outbox in it."""

    def __init__(self, handler) -> None:  # type: ignore[no-untyped-def]
        self.clock = ManualClock()
        self.tracker = OffsetTracker()
        self.producer = DeadLetterProducer()
        self.endings = ObservedEndings(self.producer, self.tracker, self.clock)
        self.transport = MockTransport(handler)
        self.sent_at: list[float] = []
        self.lane = ReceiverLane(RECEIVER, self.transport, DeliverySettings(initial_backoff_s=1.0), self.endings, self.clock)

    async def __aenter__(self) -> Lane:
        self.lane.start()
        self.tracker.track(OUTBOX, 0)
        self.lane.put(Pending(notification(), OUTBOX, 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.lane.close(grace_s=GUARD_S)

    def counts(self) -> ReceiverCounts:
        return self.endings.counts[RECEIVER.name]


def answers(*responses: Response | Exception):  # type: ignore[no-untyped-def]
    """A handler giving these answers in turn (an exception is raised instead)."""
    queue = list(responses)

    def handler(request: Request) -> Response:
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


async def test_a_503_is_retried_after_its_retry_after_and_the_200_that_follows_delivers_it_once():
    lane = Lane(answers(Response(503, {"retry-after": "2"}, b"busy"), Response(200)))
    async with lane:
        assert await asyncio.wait_for(lane.clock.sleeping(), GUARD_S) == 2.0, "Retry-After is obeyed"
        assert len(lane.transport.requests) == 1 and not lane.endings.ended.is_set()
        lane.clock.advance(2.0)
        await asyncio.wait_for(lane.endings.ended.wait(), GUARD_S)

    first, second = lane.transport.requests
    assert first == second, "the same body and headers, the same idempotency key"
    assert first.url == RECEIVER.url and first.headers[IDEMPOTENCY_HEADER] == "ops-1"
    assert verify(first.body, "s3cret", first.headers[SIGNATURE_HEADER])
    assert first.body == encode_alerting(notification().payload)
    assert lane.counts() == ReceiverCounts(delivered=1, retried=1, dead_lettered=0)
    assert lane.producer.sent == [] and lane.tracker.committable() == {OUTBOX: 1}


async def test_a_400_is_not_retried_and_ends_as_a_rejected_dead_letter_with_the_answer():
    lane = Lane(answers(Response(400, {}, b"missing field: alerts")))
    async with lane:
        await asyncio.wait_for(lane.endings.ended.wait(), GUARD_S)
        assert lane.clock.wakeups == [], "no retry is waiting"

    assert len(lane.transport.requests) == 1
    assert lane.counts() == ReceiverCounts(delivered=0, retried=0, dead_lettered=1)
    [(topic, value, key)] = lane.producer.sent
    failure = decode_delivery_failure(value)
    assert (topic, key) == (DEADLETTER, b"ops")
    assert (failure.reason, failure.status, failure.attempts) == ("rejected", 400, 1)
    assert failure.response == "missing field: alerts" and failure.notification == notification()
    assert failure.failed_ms == int(lane.clock.time() * 1000)
    assert lane.tracker.committable() == {OUTBOX: 1}, "a dead letter ends the notification too"


async def test_no_answer_is_retried_after_a_jittered_backoff_below_the_initial_ceiling():
    lane = Lane(answers(NoAnswer(RECEIVER.url, "connection refused"), Response(204)))
    async with lane:
        due = await asyncio.wait_for(lane.clock.sleeping(), GUARD_S)
        assert 0 < due <= 1.0, "the first retry waits below initial_backoff_s"
        lane.clock.advance(due)
        await asyncio.wait_for(lane.endings.ended.wait(), GUARD_S)

    assert len(lane.transport.requests) == 2
    assert lane.counts() == ReceiverCounts(delivered=1, retried=1, dead_lettered=0)
