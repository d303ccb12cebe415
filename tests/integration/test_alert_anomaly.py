"""An anomaly rule in the real rules consumer on a real broker: what it learned from the metrics
topic survives a stop and a restart from its checkpoint, so the first spike after the restart
fires (a fresh detector would still be warming up) and reaches the outbox."""

from __future__ import annotations

import asyncio
import random
import textwrap
import time
import uuid

from streaminfer.monitoring.alerting.anomaly import WARMUP_POINTS
from streaminfer.monitoring.alerting.config import load_config
from streaminfer.monitoring.settings import AlertingSettings, AlertTopics, MonitorTopics
from streaminfer.schemas.monitoring_events import MetricEvent, encode_event
from streaminfer.schemas.notifications import decode_notification
from streaminfer.streams.alerting.rules_consumer import AlertingService
from streaminfer.streams.clients import make_consumer, make_producer, start_client
from streaminfer.streams.settings import TopicSettings

LEARNED = 2 * WARMUP_POINTS
STEP_MS = 10_000

RULES = """
receivers:
  - name: team
    url: http://127.0.0.1:9/hook
    secret_env: TEST_TEAM_SECRET
route:
  receiver: team
  group_wait_s: 0
evaluation_interval_s: 0.2
rules:
  - name: LatencyAnomaly
    kind: anomaly
    signal: latency_p99_seconds
    season_s: 0
    direction: up
    window_s: 3600
"""


def event(value: float, at_ms: int) -> MetricEvent:
    return MetricEvent(model="m", version="1", metric="latency_p99_seconds", value=value, samples=100,
                       window_start_ms=at_ms - STEP_MS, window_end_ms=at_ms, emitted_at_ms=at_ms,
                       labels={"consumer": "c0"})


async def until(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_an_anomaly_rule_keeps_what_it_learned_across_a_restart_and_fires_on_the_first_spike(kafka_settings, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(RULES))
    config, _ = load_config(path, {"TEST_TEAM_SECRET": "s3cret"})
    monitor_topics = MonitorTopics(labels=f"lb-{suffix}", drift=f"dr-{suffix}", metrics=f"mt-{suffix}")
    settings = AlertingSettings(group_id=f"al-{suffix}", delivery_group_id=f"dv-{suffix}",
                                checkpoint_dir=tmp_path / "alerting", checkpoint_interval_s=0.5,
                                topics=AlertTopics(silences=f"si-{suffix}", outbox=f"ob-{suffix}", deadletter=f"adl-{suffix}"))
    topics = TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}", partitions=1)

    def service() -> AlertingService:
        return AlertingService(kafka_settings, config, monitor_topics, settings, topics=topics)

    rng = random.Random(3)
    start_ms = int(time.time() * 1000) - LEARNED * STEP_MS
    first = service()
    await first.start()
    producer = make_producer(kafka_settings)
    await start_client(producer, kafka_settings.bootstrap)
    second = None
    try:
        for i in range(LEARNED):
            await producer.send(monitor_topics.metrics, encode_event(event(0.1 + rng.gauss(0, 0.005), start_ms + i * STEP_MS)),
                                timestamp_ms=start_ms + i * STEP_MS)
        await producer.flush()
        await until(lambda: first.state.offsets.get((monitor_topics.metrics, 0)) == LEARNED)
        assert first.state.notifications == 0
        await first.stop()

        second = service()
        await second.start()
        assert second.restored
        (detector,) = second.state.engine.anomalies.detectors.values()
        assert detector.points == LEARNED
        spike_ms = start_ms + LEARNED * STEP_MS
        await producer.send_and_wait(monitor_topics.metrics, encode_event(event(0.3, spike_ms)), timestamp_ms=spike_ms)
        await until(lambda: second.state.notifications >= 1)
    finally:
        await producer.stop()
        if second is not None:
            await second.stop()

    consumer = make_consumer(kafka_settings, settings.topics.outbox, group_id=None)
    await start_client(consumer, kafka_settings.bootstrap)
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    notification = decode_notification(record.value)
    (alert,) = notification.payload.alerts
    assert (alert.status, alert.labels["alertname"], alert.labels["model"]) == ("firing", "LatencyAnomaly", "m")
    assert float(alert.annotations["value"]) > 5
