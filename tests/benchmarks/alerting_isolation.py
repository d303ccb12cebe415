"""Does a slow webhook receiver slow the pipeline down? Side by side, alternating, medians of 3.

    python tests/benchmarks/alerting_isolation.py [REQUESTS]

Each round sends REQUESTS demo requests to the running pipeline (two consumer actors, monitor
off) and times them until every prediction is back, twice: once with nothing else running, and
once while the alerting consumer and the webhook delivery run with a receiver that sleeps 30 s
per request, fed a new drift alert every 50 ms (so notifications pile up behind it the whole
time). Not part of the test suite: a figure for the closing notes, taken with nothing else
running on the machine.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from monitoring.alerting.config import load_config
from monitoring.alerting.receivers import DeliverySettings
from monitoring.settings import AlertingSettings, AlertTopics, MonitorSettings, MonitorTopics
from schemas.monitoring import DriftEvent, DriftKind, encode_event
from streaminfer.app import start_app, start_ray
from streaminfer.broker import EmbeddedBroker, free_port
from streaminfer.demo_model import DEMO_MODEL, INPUT_NAME, build_demo_model, demo_data
from streaminfer.loadgen import demo_payloads, send_all
from streaminfer.settings import AppSettings
from streams.alerting import AlertingService
from streams.clients import make_consumer, make_producer, start_client
from streams.settings import KafkaSettings, TopicSettings
from streams.webhooks import WebhookDelivery
from tests.support.receiver import WebhookReceiver
from workers.repository import ModelRepository
from workers.settings import RaySettings

SECRET = "bench-secret"


async def time_requests(settings: AppSettings, count: int) -> float:
    """Seconds from the first request sent to the last prediction read."""
    run = uuid.uuid4().hex[:6]
    payloads = demo_payloads(demo_data().x_test, count, DEMO_MODEL, INPUT_NAME, run)
    reader = make_consumer(settings.kafka, settings.topics.predictions, group_id=None)
    await start_client(reader, settings.kafka.bootstrap)
    await reader.seek_to_end()
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka.bootstrap)
    started = time.perf_counter()
    sender = asyncio.create_task(send_all(producer, settings.topics.requests, payloads))
    seen = 0
    while seen < count:
        batches = await reader.getmany(timeout_ms=100)
        seen += sum(1 for records in batches.values() for r in records if r.key and r.key.startswith(run.encode()))
    elapsed = time.perf_counter() - started
    await sender
    await producer.stop()
    await reader.stop()
    return elapsed


async def drift_forever(kafka: KafkaSettings, topic: str, stop: asyncio.Event) -> None:
    producer = make_producer(kafka)
    await start_client(producer, kafka.bootstrap)
    n = 0
    while not stop.is_set():
        now = int(time.time() * 1000)
        event = DriftEvent(model=DEMO_MODEL, version="1.0.0", feature=f"f{n}", detector="adwin",
                           kind=DriftKind.SAMPLE, statistic=1.0, threshold=0.002, window_start_ms=now,
                           window_end_ms=now, samples=n, detected_at_ms=now)
        await producer.send(topic, encode_event(event), key=DEMO_MODEL.encode())
        n += 1
        await asyncio.sleep(0.05)
    await producer.stop()


class SlowAlerting:
    def __init__(self, kafka: KafkaSettings, scratch: Path) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.kafka = kafka
        self.monitor_topics = MonitorTopics(labels=f"lb-{suffix}", drift=f"dr-{suffix}", metrics=f"mt-{suffix}")
        self.settings = AlertingSettings(
            group_id=f"al-{suffix}", delivery_group_id=f"dv-{suffix}", checkpoint_dir=scratch / f"al-{suffix}",
            topics=AlertTopics(silences=f"si-{suffix}", outbox=f"ob-{suffix}", deadletter=f"adl-{suffix}"),
        )
        self.scratch = scratch
        self.receiver = WebhookReceiver(SECRET)

    async def __aenter__(self) -> "SlowAlerting":
        await self.receiver.start()
        self.receiver.delay(30)
        rules = self.scratch / "rules.yml"
        rules.write_text(textwrap.dedent(f"""
            receivers: [{{name: slow, url: "{self.receiver.url}", secret_env: BENCH_SECRET, timeout_s: 60}}]
            route: {{receiver: slow, group_by: [alertname, feature], group_wait_s: 0, group_interval_s: 1}}
            evaluation_interval_s: 0.25
            rules: [{{name: Drift, signal: drift, reduce: count, window_s: 60, op: ">=", value: 1}}]
        """))
        config, receivers = load_config(rules, {"BENCH_SECRET": SECRET})
        self.service = AlertingService(self.kafka, config, self.monitor_topics, self.settings)
        self.delivery = WebhookDelivery(self.kafka, self.settings.topics.outbox, self.settings.topics.deadletter,
                                        self.settings.delivery_group_id, receivers, DeliverySettings())
        await self.service.start()
        await self.delivery.start()
        self.stop = asyncio.Event()
        self.feeder = asyncio.create_task(drift_forever(self.kafka, self.monitor_topics.drift, self.stop))
        await asyncio.sleep(2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.feeder
        self.notifications = self.service.state.notifications
        await self.service.stop()
        await asyncio.wait_for(self.delivery.stop(), 60)
        await self.receiver.stop()


async def main(bootstrap: str, count: int) -> None:
    scratch = Path(tempfile.mkdtemp())
    repository = ModelRepository(scratch / "models")
    build_demo_model(repository)
    suffix = uuid.uuid4().hex[:6]
    settings = AppSettings(
        model_repository=repository.root,
        kafka=KafkaSettings(bootstrap=bootstrap, group_id=f"g-{suffix}"),
        topics=TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}"),
        monitor=MonitorSettings(enabled=False), metrics={"port": None, "targets_file": None},
    )
    start_ray(RaySettings(num_cpus=2, dashboard_port=free_port(), temp_dir=str(Path("/tmp") / f"ray-{suffix}")),
              log_to_driver=False)
    app = await start_app(settings)
    try:
        await time_requests(settings, count)  # warm-up
        alone, beside = [], []
        for _ in range(3):
            alone.append(await time_requests(settings, count))
            async with SlowAlerting(settings.kafka, scratch) as slow:
                beside.append(await time_requests(settings, count))
            pending = slow.notifications - len(slow.receiver.received)
            print(f"round: alone {count / alone[-1]:,.0f}/s, beside a 30 s receiver {count / beside[-1]:,.0f}/s "
                  f"({slow.notifications} notifications, {pending} still waiting for the receiver)", flush=True)
    finally:
        await app.stop()
    a, b = count / statistics.median(alone), count / statistics.median(beside)
    print(f"median: alone {a:,.0f} req/s, beside a slow receiver {b:,.0f} req/s, ratio {b / a:.2f}")


if __name__ == "__main__":
    broker = EmbeddedBroker().start()
    try:
        asyncio.run(main(broker.bootstrap, int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
    finally:
        broker.stop()
