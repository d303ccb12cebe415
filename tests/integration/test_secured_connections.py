"""Connections besides Kafka, secured, against real parts: webhooks to an HTTPS receiver whose
certificate comes from a throwaway CA, and the Redis online store behind a password and TLS.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from tests.integration.test_webhook_delivery import (
    FAST,
    counts,
    delivery,
    eventually,
    fresh_topics,
    notification,
    read_dead_letters,
    write,
)
from tests.support.certificates import CertificateAuthority
from tests.support.receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "https-hook-secret"


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


def https_receiver(authority: CertificateAuthority) -> WebhookReceiver:
    server = authority.issue("receiver", server=True)
    return WebhookReceiver(SECRET, tls=(server.cert, server.key))


def config(receiver: WebhookReceiver, ca_file: Path | None) -> ReceiverConfig:
    return ReceiverConfig(name="ops", url=receiver.url, secret=SecretStr(SECRET), timeout_s=2.0,
                          max_backoff_s=0.5, ca_file=ca_file)


async def test_https_receiver_signed_by_the_configured_ca_gets_every_notification_signed(kafka_settings, authority):
    topics = await fresh_topics(kafka_settings)
    sent = [notification("ops", n) for n in range(4)]
    await write(kafka_settings, topics.outbox, sent)
    async with https_receiver(authority) as receiver:
        assert receiver.url.startswith("https://")
        async with delivery(kafka_settings, topics, [config(receiver, authority.cert)]) as worker:
            await receiver.until(lambda r: len(r.by_idempotency_key()) == len(sent))
            await eventually(lambda: counts(worker, "ops")["delivered"] == len(sent), "delivered counted")
    assert receiver.by_idempotency_key() == {n.id: 1 for n in sent}
    assert all(got.signature_valid for got in receiver.received)


async def test_https_receiver_trusted_through_the_delivery_wide_ca_file(kafka_settings, authority):
    topics = await fresh_topics(kafka_settings)
    sent = [notification("ops", 0)]
    await write(kafka_settings, topics.outbox, sent)
    settings = FAST.model_copy(update={"ca_file": authority.cert})
    async with https_receiver(authority) as receiver:
        async with delivery(kafka_settings, topics, [config(receiver, None)], settings) as worker:
            await receiver.until(lambda r: len(r.by_idempotency_key()) == 1)
            await eventually(lambda: counts(worker, "ops")["delivered"] == 1, "delivered counted")
    assert receiver.received[0].signature_valid


async def test_https_receiver_with_an_untrusted_certificate_is_refused_and_dead_lettered_as_untrusted(
    kafka_settings, authority
):
    topics = await fresh_topics(kafka_settings)
    registry = CollectorRegistry()
    sent = [notification("ops", n) for n in range(2)]
    await write(kafka_settings, topics.outbox, sent)
    async with https_receiver(authority) as receiver:
        worker = delivery(kafka_settings, topics, [config(receiver, None)], metrics=DeliveryMetrics(registry))
        async with worker:
            failures = await read_dead_letters(kafka_settings, topics.deadletter, len(sent))
            await eventually(lambda: counts(worker, "ops")["dead_lettered"] == len(sent), "dead letters counted")
        state = counts(worker, "ops")
    assert receiver.received == []  # the TLS handshake failed: nothing was sent
    assert sorted(f.notification.id for f in failures) == sorted(n.id for n in sent)
    for failure in failures:
        assert failure.reason == "untrusted_certificate"
        assert failure.status is None and failure.attempts == 1
        assert "certificate is not trusted" in failure.response
    assert state["retried"] == 0 and state["delivered"] == 0
    assert registry.get_sample_value(
        "streaminfer_alert_notifications_total", {"receiver": "ops", "outcome": "untrusted_certificate"}
    ) == len(sent)
