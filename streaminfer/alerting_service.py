"""Wiring of alerting: the rules consumer and the webhook delivery, and the CLI's silences and
listing (both read and write the topics, so every process sees the same silences)."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import time
import uuid
from collections.abc import Mapping

from pydantic import SecretStr

from streaminfer.monitoring.alerting.config import AlertConfigError, AlertingConfig, load_config, parse_matcher
from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from streaminfer.schemas.notifications import (
    Silence,
    WebhookAlert,
    decode_notification,
    decode_silence,
    encode_alerting,
)
from streaminfer.settings import AppSettings
from streaminfer.streams.alerting.rules_consumer import AlertingService, check_receivers
from streaminfer.streams.alerting.webhooks import WebhookDelivery
from streaminfer.streams.clients import (
    check_reachable,
    ensure_topics,
    make_consumer,
    make_producer,
    start_client,
)
from streaminfer.topology import topology

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class AlertingPair:
    """The rules consumer and the webhook delivery, started and stopped together: what `alerts
    run` and the ``alerting`` actor run. Either one failing fails the pair, so the actor shell
    replaces both (each resumes from its checkpoint or committed offsets)."""

    def __init__(self, settings: AppSettings, metrics: DeliveryMetrics | None = None,
                 secrets: Mapping[str, SecretStr] | None = None) -> None:
        """``secrets``: the receivers' signing keys by variable name, when this process's
        environment does not hold them (the ``alerting`` actor gets them from the driver)."""
        self._settings = settings
        self._metrics = metrics
        self._secrets = secrets
        self.config: AlertingConfig | None = None
        self.receivers: list[ReceiverConfig] = []
        self.service: AlertingService | None = None
        self.delivery: WebhookDelivery | None = None

    async def start(self) -> None:
        """Load and check the rules file, then start the rules consumer and the delivery worker."""
        settings = self._settings
        if settings.alerting.rules_file is None:
            raise AlertConfigError("no alerting rules file: pass --rules FILE (see infra/alerts/rules.yml)")
        environ = None if self._secrets is None else {
            **os.environ, **{name: secret.get_secret_value() for name, secret in self._secrets.items()}}
        self.config, self.receivers = load_config(settings.alerting.rules_file, environ)
        if settings.alerting.check_receivers:
            await check_receivers(self.receivers)
        service = AlertingService(settings.kafka, self.config, settings.monitor.topics, settings.alerting,
                                  topics=settings.topics)
        delivery = WebhookDelivery(
            settings.kafka, settings.alerting.topics.outbox, settings.alerting.topics.deadletter,
            settings.alerting.delivery_group_id, self.receivers, settings.alerting.delivery, self._metrics,
        )
        await service.start()
        try:
            await delivery.start()
        except BaseException:
            await service.stop()
            raise
        self.service, self.delivery = service, delivery

    @property
    def failure(self) -> BaseException | None:
        if self.service is not None and self.service.failure is not None:
            return self.service.failure
        return self.delivery.failure if self.delivery is not None else None

    def describe(self) -> dict[str, object]:
        if self.service is None or self.delivery is None:
            return {}
        return {"delivery": self.delivery.describe(), **self.service.describe()}

    async def wait(self) -> None:
        assert self.service is not None and self.delivery is not None
        await asyncio.gather(self.service.wait(), self.delivery.wait())

    async def stop(self) -> None:
        """Safe to call twice."""
        service, delivery, self.service, self.delivery = self.service, self.delivery, None, None
        if service is not None:
            await service.stop()
        if delivery is not None:
            await delivery.stop()


async def start_alerting(settings: AppSettings, metrics: DeliveryMetrics | None = None) -> AlertingPair:
    pair = AlertingPair(settings, metrics)
    await pair.start()
    return pair


def parse_duration(text: str) -> float:
    found = _DURATION.match(text.strip())
    if not found:
        raise AlertConfigError(f"duration {text!r} is not a number with s, m, h or d (for example 30m or 2h)")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


async def add_silence(settings: AppSettings, matchers: list[str], duration: str, comment: str, author: str) -> Silence:
    try:
        parsed = [parse_matcher(text) for text in matchers]
    except ValueError as exc:
        raise AlertConfigError(str(exc)) from None
    now_ms = int(time.time() * 1000)
    silence = Silence(
        id=uuid.uuid4().hex[:12], matchers=parsed, starts_ms=now_ms,
        ends_ms=now_ms + int(parse_duration(duration) * 1000), created_by=author or getpass.getuser(), comment=comment,
    )
    await _write_silence(settings, silence)
    return silence


async def expire_silence(settings: AppSettings, silence_id: str) -> None:
    _, silences = await current_alerts(settings)
    found = [s for s in silences if s.id == silence_id]
    if not found:
        raise AlertConfigError(f"no active silence {silence_id!r}: `streaminfer alerts list` shows the active ones")
    expired = found[0]
    expired.ends_ms = int(time.time() * 1000)
    await _write_silence(settings, expired)


async def _write_silence(settings: AppSettings, silence: Silence) -> None:
    await check_reachable(settings.kafka)
    topic = settings.alerting.topics.silences
    await ensure_topics(settings.kafka, topology(settings).select([topic]))
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka.bootstrap)
    try:
        await producer.send_and_wait(topic, encode_alerting(silence), key=silence.id.encode())
    finally:
        await producer.stop()


async def current_alerts(settings: AppSettings) -> tuple[list[tuple[WebhookAlert, str]], list[Silence]]:
    """Each alert as last notified (from the outbox) and the silences still active."""
    await check_reachable(settings.kafka)
    topics = settings.alerting.topics
    await ensure_topics(settings.kafka, topology(settings).select([topics.outbox, topics.silences]))
    alerts: dict[str, tuple[WebhookAlert, str]] = {}
    silences: dict[str, Silence] = {}
    consumer = make_consumer(settings.kafka, topics.outbox, topics.silences, group_id=None)
    await start_client(consumer, settings.kafka.bootstrap)
    try:
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=300)
            idle = 0 if batches else idle + 1
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == topics.silences:
                        silence = decode_silence(record.value)
                        silences[silence.id] = silence
                    else:
                        notification = decode_notification(record.value)
                        for alert in notification.payload.alerts:
                            alerts[alert.fingerprint] = (alert, notification.receiver)
    finally:
        await consumer.stop()
    now_ms = int(time.time() * 1000)
    active = [s for s in silences.values() if s.ends_ms > now_ms]
    ordered = sorted(alerts.values(), key=lambda pair: (pair[0].status != "firing", pair[0].labels.get("alertname", "")))
    return ordered, active
