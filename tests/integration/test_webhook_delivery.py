"""Webhook delivery end to end: a real broker, real HTTP receivers, the delivery worker between.

Each test writes ``Notification`` records to a fresh outbox topic with a plain producer, runs
``WebhookDelivery`` in a consumer group, and checks what the receivers got, what landed on the
dead-letter topic and which offsets the group committed.
"""

from __future__ import annotations

import asyncio
import time

import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.schemas.notifications import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    encode_alerting,
)
from tests.support.receiver import WebhookReceiver
from tests.support.webhook_delivery import (
    FAST,
    SCHEMA,
    committed,
    counts,
    delivery,
    end_offsets,
    eventually,
    fresh_topics,
    notification,
    read_dead_letters,
    receiver_config,
    write,
)

pytestmark = pytest.mark.integration


async def test_every_notification_arrives_once_signed_with_its_key_and_an_alertmanager_body(kafka_settings):
    topics = await fresh_topics(kafka_settings)
    registry = CollectorRegistry()
    sent = [notification("ops", n) for n in range(8)]
    written = await write(kafka_settings, topics.outbox, sent)
    async with WebhookReceiver("s3cret") as receiver:
        async with delivery(
            kafka_settings, topics, [receiver_config("ops", receiver)], metrics=DeliveryMetrics(registry)
        ) as worker:
            await receiver.until(lambda r: len(r.by_idempotency_key()) == len(sent))
            await eventually(lambda: counts(worker, "ops")["delivered"] == len(sent), "delivered counted")
            await asyncio.sleep(0.5)  # room for a wrong second attempt to show up
        state = counts(worker, "ops")

    assert receiver.by_idempotency_key() == {n.id: 1 for n in sent}
    by_key = {n.id: n for n in sent}
    for got in receiver.received:
        assert got.signature_valid, got.headers.get(SIGNATURE_HEADER.lower())
        assert got.headers["content-type"] == "application/json"
        assert got.headers["x-team"] == "ml-platform"
        jsonschema.validate(got.json, SCHEMA, cls=jsonschema.Draft202012Validator)
        assert got.body == encode_alerting(by_key[got.idempotency_key].payload)
        assert IDEMPOTENCY_HEADER.lower() in got.headers
    assert state == {"delivered": 8, "retried": 0, "dead_lettered": 0, "pending": 0}
    assert (
        registry.get_sample_value(
            "streaminfer_alert_notifications_total", {"receiver": "ops", "outcome": "delivered"}
        )
        == 8
    )
    assert registry.get_sample_value("streaminfer_alert_delivery_seconds_count", {"receiver": "ops"}) == 8
    assert registry.get_sample_value("streaminfer_alert_outbox_pending", {"receiver": "ops"}) == 0
    assert await committed(kafka_settings, topics.outbox) == end_offsets(written) | {
        p: 0 for p in range(4) if p not in end_offsets(written)
    }


@pytest.mark.kafka_semantics
async def test_notifications_written_while_the_receiver_is_down_arrive_once_in_order_after_a_worker_restart(
    kafka_settings,
):
    topics = await fresh_topics(kafka_settings)
    async with WebhookReceiver("a-secret") as ops, WebhookReceiver("b-secret") as oncall:
        receivers = [receiver_config("ops", ops), receiver_config("oncall", oncall)]
        before = [notification(name, n) for n in range(3) for name in ("ops", "oncall")]
        await write(kafka_settings, topics.outbox, before)
        first = delivery(kafka_settings, topics, receivers)
        await first.start()
        try:
            await ops.until(lambda r: len(r.by_idempotency_key()) == 3)
            await oncall.until(lambda r: len(r.by_idempotency_key()) == 3)
            await ops.down()
            await oncall.down()
            during = [notification(name, n) for n in range(3, 12) for name in ("ops", "oncall")]
            await write(kafka_settings, topics.outbox, during)
            await eventually(
                lambda: counts(first, "ops")["retried"] >= 1 and counts(first, "oncall")["retried"] >= 1,
                "the first worker tries the receivers while they are down",
            )
        finally:
            await first.stop()

        second = delivery(kafka_settings, topics, receivers)
        await second.start()
        try:
            await eventually(
                lambda: counts(second, "ops")["retried"] >= 1 and counts(second, "oncall")["retried"] >= 1,
                "the restarted worker reads the undelivered notifications again",
            )
            await ops.up()
            await oncall.up()
            await ops.until(lambda r: len(r.by_idempotency_key()) == 12)
            await oncall.until(lambda r: len(r.by_idempotency_key()) == 12)
            await eventually(
                lambda: counts(second, "ops")["pending"] == 0 and counts(second, "oncall")["pending"] == 0,
                "lanes empty",
            )
            await asyncio.sleep(0.5)
        finally:
            await second.stop()

    sent = before + during
    for name, receiver in (("ops", ops), ("oncall", oncall)):
        expected = [n.id for n in sent if n.receiver == name]
        assert receiver.by_idempotency_key() == dict.fromkeys(expected, 1), (
            f"{name} got a notification twice"
        )
        assert receiver.keys_in_arrival_order() == expected, f"{name} got notifications out of order"
        assert all(r.signature_valid for r in receiver.received)
        # the first worker committed what it delivered, so the second one starts after it
        assert counts(second, name)["delivered"] == 9


async def test_a_receiver_answering_400_is_tried_once_and_the_refusal_goes_to_dead_letters(kafka_settings):
    topics = await fresh_topics(kafka_settings)
    refusal = "unknown label 'severity': " + "x" * 3000
    sent = [notification("ops", n) for n in range(3)]
    written = await write(kafka_settings, topics.outbox, sent)
    async with WebhookReceiver("s3cret") as receiver:
        receiver.respond_with(400, refusal)
        async with delivery(kafka_settings, topics, [receiver_config("ops", receiver)]) as worker:
            failures = await read_dead_letters(kafka_settings, topics.deadletter, len(sent))
            await asyncio.sleep(0.5)  # a retry would arrive within this (backoff at most 0.1 s)
        state = counts(worker, "ops")

    assert receiver.by_idempotency_key() == {n.id: 1 for n in sent}
    assert {f.notification.id: f.notification for f in failures} == {n.id: n for n in sent}
    for failure in failures:
        assert (failure.reason, failure.status, failure.attempts) == ("rejected", 400, 1)
        assert failure.response == refusal[:2000]
        assert failure.failed_ms > 0
    assert state == {"delivered": 0, "retried": 0, "dead_lettered": 3, "pending": 0}
    offsets = await committed(kafka_settings, topics.outbox)
    assert {p: offsets[p] for p in end_offsets(written)} == end_offsets(written), (
        "offsets move on past dead letters"
    )


async def test_unconfigured_receivers_go_to_dead_letters_and_unreadable_records_are_skipped_without_blocking(
    kafka_settings,
):
    topics = await fresh_topics(kafka_settings)
    registry = CollectorRegistry()
    stranger = notification("nobody", 0)
    sent = [notification("ops", 0), stranger, (b"ops", b"{not a notification"), notification("ops", 1)]
    written = await write(kafka_settings, topics.outbox, sent)
    async with WebhookReceiver("s3cret") as receiver:
        receivers = [receiver_config("ops", receiver)]
        async with delivery(kafka_settings, topics, receivers, metrics=DeliveryMetrics(registry)) as worker:
            failures = await read_dead_letters(kafka_settings, topics.deadletter, 1)
            await receiver.until(lambda r: len(r.by_idempotency_key()) == 2)
            await eventually(lambda: worker.describe()["invalid_records"] == 1, "invalid record counted")
        state = worker.describe()

    assert [(f.notification, f.reason, f.attempts) for f in failures] == [(stranger, "unknown_receiver", 0)]
    assert state["receivers"]["nobody"]["dead_lettered"] == 1  # type: ignore[index]
    assert receiver.keys_in_arrival_order() == [sent[0].id, sent[3].id]  # type: ignore[union-attr]
    assert (
        registry.get_sample_value(
            "streaminfer_alert_notifications_total", {"receiver": "", "outcome": "invalid_record"}
        )
        == 1
    )
    offsets = await committed(kafka_settings, topics.outbox)
    assert {p: offsets[p] for p in end_offsets(written)} == end_offsets(written)


async def test_a_receiver_slower_than_its_timeout_does_not_delay_another_receiver(kafka_settings):
    topics = await fresh_topics(kafka_settings)
    async with WebhookReceiver("slow-secret") as slow, WebhookReceiver("fast-secret") as healthy:
        slow.delay(30)
        receivers = [receiver_config("slow", slow, timeout_s=0.5), receiver_config("healthy", healthy)]
        sent = [notification(name, n) for n in range(10) for name in ("slow", "healthy")]
        written = await write(kafka_settings, topics.outbox, sent)
        worker = delivery(kafka_settings, topics, receivers)
        await worker.start()
        try:
            await healthy.until(lambda r: len(r.by_idempotency_key()) == 10, timeout_s=15)
            await eventually(lambda: counts(worker, "slow")["retried"] >= 2, "slow receiver retried")
        finally:
            stop_started = time.monotonic()
            await worker.stop()
            stop_took = time.monotonic() - stop_started

    assert healthy.keys_in_arrival_order() == [n.id for n in sent if n.receiver == "healthy"]
    assert all(r.status == 200 for r in healthy.received)
    # from the first request the worker made (to either receiver) to the healthy one's last
    first_request = min(r.arrived for r in slow.received + healthy.received)
    took = max(r.arrived for r in healthy.received) - first_request
    assert took < 2, f"the healthy receiver's notifications took {took:.1f} s after the first request"
    assert stop_took < 3, f"stop took {stop_took:.1f} s with a hanging receiver"
    # nothing of the slow receiver's is committed: each partition stops at its first slow record
    first_slow = {}
    for w in reversed(written):
        if w.notification is not None and w.notification.receiver == "slow":
            first_slow[w.partition] = w.offset
    ends = end_offsets(written)
    offsets = await committed(kafka_settings, topics.outbox)
    assert {p: offsets[p] for p in ends} == {p: first_slow.get(p, end) for p, end in ends.items()}


@pytest.mark.kafka_semantics
async def test_a_dead_receivers_backlog_waits_in_kafka_and_is_delivered_in_order_when_it_returns(
    kafka_settings,
):
    topics = await fresh_topics(kafka_settings)
    settings = FAST.model_copy(update={"max_inflight_per_receiver": 3, "fetch_max_records": 2})
    sent = [notification("ops", n) for n in range(30)]
    await write(kafka_settings, topics.outbox, sent)
    async with WebhookReceiver("s3cret") as receiver:
        await receiver.down()
        async with delivery(kafka_settings, topics, [receiver_config("ops", receiver)], settings) as worker:
            await eventually(lambda: counts(worker, "ops")["retried"] >= 3, "retries while down")
            most = 0
            for _ in range(20):
                most = max(most, counts(worker, "ops")["pending"])
                await asyncio.sleep(0.05)
            pauses = worker.pauses
            await receiver.up()
            await receiver.until(lambda r: len(r.by_idempotency_key()) == len(sent))
            await asyncio.sleep(0.3)

    assert 3 <= most <= 3 + 2, f"lane held {most} notifications"
    assert pauses >= 1
    assert receiver.by_idempotency_key() == {n.id: 1 for n in sent}
    assert receiver.keys_in_arrival_order() == [n.id for n in sent]
