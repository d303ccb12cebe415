"""Alerting end to end on real brokers: the demo's drift fires, the rules consumer notifies, the
delivery worker posts signed Alertmanager bodies to a real HTTP receiver; restarts lose nothing
and repeat nothing."""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME
from streaminfer.loadgen import demo_payloads, send_all
from streaminfer.monitoring.alerting.config import load_config
from streaminfer.monitoring.alerting.receivers import DeliverySettings
from streaminfer.monitoring.drift.simulate import Shift, drifting_stream
from streaminfer.monitoring.observability.metrics import MonitorMetrics
from streaminfer.monitoring.settings import AlertingSettings, AlertTopics, MonitorSettings, MonitorTopics
from streaminfer.streams.alerting.rules_consumer import AlertingService
from streaminfer.streams.alerting.webhooks import WebhookDelivery
from streaminfer.streams.clients import ensure_topic_names, make_producer, start_client
from streaminfer.streams.monitor import Monitor
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.support.receiver import WebhookReceiver

SHIFTED = ("mean radius", "mean texture", "worst area")
SCHEMA = json.loads((Path(__file__).parents[1] / "support" / "alertmanager_webhook.schema.json").read_text())
SECRET = "test-secret-" + uuid.uuid4().hex


def rules_file(tmp_path, receiver_url: str, group_by: str = "[alertname, model, feature]") -> object:
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(f"""
        receivers:
          - name: team
            url: {receiver_url}
            secret_env: TEST_TEAM_SECRET
            max_backoff_s: 2
        route:
          receiver: team
          group_by: {group_by}
          group_wait_s: 0
          group_interval_s: 1
          repeat_interval_s: 3600
        evaluation_interval_s: 0.25
        rules:
          - name: FeatureDrift
            signal: drift
            where: ["detector=adwin", "feature!=__prediction__"]
            by: [model, version, feature]
            reduce: count
            window_s: 8
            op: ">="
            value: 1
            annotations:
              summary: "{{feature}} drifted"
    """))
    return path


class Stack:
    """Monitor, rules consumer and delivery worker on fresh topics, as `run` + `alerts run` would."""

    def __init__(self, kafka: KafkaSettings, tmp_path, repository, rules) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.kafka = kafka
        self.topics = TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}", partitions=1)
        self.monitor_settings = MonitorSettings(
            topics=MonitorTopics(labels=f"lb-{suffix}", drift=f"dr-{suffix}", metrics=f"mt-{suffix}"),
            group_id=f"mon-{suffix}", checkpoint_dir=tmp_path / "monitor", reports_dir=tmp_path / "reports",
            window_rows=10_000, window_seconds=3600,
        )
        self.alerting = AlertingSettings(
            group_id=f"al-{suffix}", delivery_group_id=f"dv-{suffix}", checkpoint_dir=tmp_path / "alerting",
            topics=AlertTopics(silences=f"si-{suffix}", outbox=f"ob-{suffix}", deadletter=f"adl-{suffix}"),
            checkpoint_interval_s=0.5,
        )
        self.config, self.receivers = load_config(rules, {"TEST_TEAM_SECRET": SECRET})
        self.repository = repository
        self.monitor: Monitor | None = None
        self.service: AlertingService | None = None
        self.delivery: WebhookDelivery | None = None

    async def start_monitor(self) -> None:
        self.monitor = Monitor(self.kafka, self.topics, self.monitor_settings, self.repository, DEMO_MODEL,
                               MonitorMetrics(CollectorRegistry()))
        await self.monitor.start()

    async def start_alerting(self) -> None:
        self.service = AlertingService(self.kafka, self.config, self.monitor_settings.topics, self.alerting,
                                       topics=self.topics)
        await self.service.start()

    async def start_delivery(self) -> None:
        self.delivery = WebhookDelivery(
            self.kafka, self.alerting.topics.outbox, self.alerting.topics.deadletter, self.alerting.delivery_group_id,
            self.receivers, DeliverySettings(),
        )
        await self.delivery.start()

    async def stop(self) -> None:
        for part in (self.monitor, self.service, self.delivery):
            if part is not None:
                await part.stop()

    async def send_drifting_requests(self, count: int = 1200) -> None:
        await ensure_topic_names(self.kafka, [self.topics.requests], 1, 1)
        frame = pd.read_parquet(self.repository.resolve(DEMO_MODEL).reference_path)
        features = frame[self.repository.resolve(DEMO_MODEL).metadata.feature_names]
        rows, _ = drifting_stream(features, count, Shift(SHIFTED, count // 2), seed=17)
        producer = make_producer(self.kafka)
        await start_client(producer, self.kafka.bootstrap)
        try:
            await send_all(producer, self.topics.requests, demo_payloads(rows, count, DEMO_MODEL, INPUT_NAME, "a"))
        finally:
            await producer.stop()


def statuses(receiver: WebhookReceiver) -> Counter:
    """(feature, status) per notification that reached the receiver, counted once per id."""
    seen = {}
    for request in receiver.received:
        seen[request.idempotency_key] = request.json
    return Counter((alert["labels"]["feature"], alert["status"]) for body in seen.values() for alert in body["alerts"])


async def test_drift_fires_once_and_resolves_once_per_alert_with_signed_alertmanager_bodies(
    kafka_settings, model_repo, tmp_path
):
    async with WebhookReceiver(SECRET) as receiver:
        stack = Stack(kafka_settings, tmp_path, model_repo, rules_file(tmp_path, receiver.url))
        try:
            await stack.start_monitor()
            await stack.start_alerting()
            await stack.start_delivery()
            await stack.send_drifting_requests()
            expected = {(f, "firing") for f in SHIFTED} | {(f, "resolved") for f in SHIFTED}
            await receiver.until(lambda r: set(statuses(r)) >= expected, timeout_s=60)
            await asyncio.sleep(2)  # anything more would be a duplicate
        finally:
            await stack.stop()

    assert statuses(receiver) == Counter(dict.fromkeys(expected, 1))
    assert all(r.signature_valid for r in receiver.received)
    assert max(receiver.by_idempotency_key().values()) == 1
    for request in receiver.received:
        jsonschema.validate(request.json, SCHEMA)
        assert request.json["receiver"] == "team" and request.json["version"] == "4"
        assert request.json["groupLabels"]["alertname"] == "FeatureDrift"
        firing = [a for a in request.json["alerts"] if a["status"] == "firing"]
        assert all(a["annotations"]["summary"] == f"{a['labels']['feature']} drifted" for a in firing)


@pytest.mark.kafka_semantics
async def test_restarted_alerting_delivers_every_accepted_notification_once_after_a_receiver_outage(
    kafka_settings, model_repo, tmp_path
):
    async with WebhookReceiver(SECRET) as receiver:
        await receiver.down()
        stack = Stack(kafka_settings, tmp_path, model_repo, rules_file(tmp_path, receiver.url))
        try:
            await stack.start_monitor()
            await stack.start_alerting()
            await stack.start_delivery()
            await stack.send_drifting_requests()
            # the alerts fire while the receiver is down: the notifications wait in the outbox
            await _until(lambda: stack.service.state.notifications >= len(SHIFTED), 60)
            await stack.service.stop()
            await stack.delivery.stop()
            await stack.start_alerting()  # both restarted from their checkpoint / committed offsets
            assert stack.service.restored
            await stack.start_delivery()
            await asyncio.sleep(1)
            await receiver.up()
            expected = {(f, "firing") for f in SHIFTED} | {(f, "resolved") for f in SHIFTED}
            await receiver.until(lambda r: set(statuses(r)) >= expected, timeout_s=90)
            await asyncio.sleep(2)
        finally:
            await stack.stop()

    keys = receiver.by_idempotency_key()
    assert statuses(receiver) == Counter(dict.fromkeys(expected, 1)), "every alert once firing, once resolved"
    assert max(keys.values()) == 1, "no notification delivered twice"


async def _until(predicate, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_the_whole_system_with_alerting_turns_demo_drift_into_a_webhook_call(
    kafka_settings, topics, model_repo, ray_dashboard, tmp_path, monkeypatch
):
    """`run --alerts`: pipeline, monitor and alerting actors; drifting demo requests in, a
    signed FeatureDrift notification out at the receiver."""
    from tests.support.harness import app_settings, started

    monkeypatch.setenv("TEST_TEAM_SECRET", SECRET)
    async with WebhookReceiver(SECRET) as receiver:
        stack = Stack(kafka_settings, tmp_path, model_repo, rules_file(tmp_path, receiver.url))
        settings = app_settings(
            kafka_settings, topics.model_copy(update={"partitions": 1}), model_repo,
            monitor=stack.monitor_settings, consumers=1,
        )
        settings = settings.model_copy(update={"alerting": stack.alerting.model_copy(
            update={"rules_file": rules_file(tmp_path, receiver.url)})})
        app = await started(settings)
        try:
            stack.topics = settings.topics
            await stack.send_drifting_requests()
            await receiver.until(lambda r: {f for f, s in statuses(r) if s == "firing"} >= set(SHIFTED), timeout_s=90)
        finally:
            await app.stop()
    assert all(r.signature_valid for r in receiver.received)
