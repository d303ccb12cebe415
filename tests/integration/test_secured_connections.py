"""Connections besides Kafka, secured, against real parts: webhooks to an HTTPS receiver whose
certificate comes from a throwaway CA, a real Prometheus scraping a metrics endpoint that wants
basic auth over TLS, and the Redis online store behind a password and TLS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr

from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from streaminfer.monitoring.observability.discovery import ScrapeTarget, write_targets
from streaminfer.monitoring.observability.endpoint import MetricsAccess, serve_metrics, stop_serving
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
from tests.support.prometheus import PrometheusServer
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
    receiver = https_receiver(authority)
    async with receiver, delivery(kafka_settings, topics, [config(receiver, None)], settings) as worker:
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


# metrics ----------------------------------------------------------------------------------------


def test_prometheus_scrapes_an_endpoint_that_wants_basic_auth_over_tls_and_is_refused_without(tmp_path, authority):
    identity = authority.issue("metrics", server=True)
    registry = CollectorRegistry()
    Counter("demo_things", "Things done.", registry=registry).inc(7)
    access = MetricsAccess(username="prometheus", password=SecretStr("scrape-pa55"), tls_cert_file=identity.cert,
                           tls_key_file=identity.key)
    server, url = serve_metrics(access, 0, registry)
    password_file = tmp_path / "password"
    password_file.write_text("scrape-pa55")
    password_file.chmod(0o600)
    tls = {"scheme": "https", "tls_config": {"ca_file": str(authority.cert)}}
    try:
        targets = tmp_path / "targets.json"
        write_targets(targets, [ScrapeTarget(url, "driver")])
        with PrometheusServer(tmp_path / "with", targets, scrape_options={
            **tls, "basic_auth": {"username": "prometheus", "password_file": str(password_file)},
        }) as prometheus:
            assert prometheus.wait_for_value("sum(demo_things_total)", 7, timeout_s=30) == 7
            assert "scrape-pa55" not in prometheus.config_file.read_text()
        with PrometheusServer(tmp_path / "without", targets, scrape_options=tls) as prometheus:
            prometheus.wait_for_value('sum(up{job="streaminfer"})', 0, timeout_s=30)
            (target,) = prometheus.targets()["activeTargets"]
            assert target["health"] == "down" and "401" in target["lastError"], json.dumps(target)
    finally:
        stop_serving(server)
