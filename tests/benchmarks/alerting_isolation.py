"""Does a slow webhook receiver slow the pipeline down? Side by side, rotating the order, medians.

    PYTHONPATH=. python tests/benchmarks/alerting_isolation.py [REQUESTS] [ROUNDS]

Each round sends REQUESTS demo requests to the running pipeline (two consumer actors, monitor
off) and times them until every prediction is back, three times: with nothing else running;
while the alerting consumer and the webhook delivery run, fed a new drift alert every 50 ms,
with a receiver that answers at once; and the same with a receiver that sleeps 30 s per request
(so notifications pile up behind it the whole time). The last two differ only in the receiver. Not part of the test suite: a figure for the closing notes, taken with nothing else
running on the machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

from streaminfer.app import start_app, start_ray
from streaminfer.broker import EmbeddedBroker, free_port
from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, build_demo_model, demo_data
from streaminfer.loadgen import Payload, demo_payloads, send_all
from streaminfer.monitoring.settings import MonitorSettings
from streaminfer.schemas.monitoring_events import DriftEvent, DriftKind, encode_event
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import make_consumer, make_producer, start_client
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import RaySettings
from tests.support.receiver import WebhookReceiver

SECRET = "bench-secret"


def demo_requests(count: int, run: str) -> list[Payload]:
    return demo_payloads(demo_data().x_test, count, DEMO_MODEL, INPUT_NAME, run)


async def time_requests(settings: AppSettings, count: int,
                        make_payloads: Callable[[int, str], list[Payload]] = demo_requests) -> float:
    """Seconds from the first request sent to the last prediction read (requests keyed
    ``<run>-<n>``, as ``make_payloads(count, run)`` builds them)."""
    run = uuid.uuid4().hex[:6]
    payloads = make_payloads(count, run)
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


async def drift_forever(kafka: KafkaSettings, topic: str, stop: asyncio.Event, every_s: float,
                        sent_at: dict[str, float]) -> int:
    """A drift event on a new feature every ``every_s`` (so a new alert each time); records when
    each was sent and returns how many."""
    producer = make_producer(kafka)
    await start_client(producer, kafka.bootstrap)
    n = 0
    while not stop.is_set():
        now = int(time.time() * 1000)
        event = DriftEvent(model=DEMO_MODEL, version="1.0.0", feature=f"f{n}", detector="adwin",
                           kind=DriftKind.SAMPLE, statistic=1.0, threshold=0.002, window_start_ms=now,
                           window_end_ms=now, samples=n, detected_at_ms=now)
        await (await producer.send(topic, encode_event(event), key=DEMO_MODEL.encode()))
        sent_at[event.feature] = now / 1000
        n += 1
        await asyncio.sleep(every_s)
    await producer.stop()
    return n


class AlertingBeside:
    """`streaminfer alerts run` in a process of its own, as deployed, a receiver here (its 30 s
    sleeps cost nothing), and a feeder writing a drift event every 50 ms."""

    def __init__(self, kafka: KafkaSettings, scratch: Path, receiver_delay_s: float, feed_every_s: float = 0.05,
                 evaluation_interval_s: float = 0.25, max_backoff_s: float = 60.0) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.kafka = kafka
        self.drift_topic = f"dr-{suffix}"
        self.env = {
            "STREAMINFER_MONITOR__TOPICS__DRIFT": self.drift_topic,
            "STREAMINFER_MONITOR__TOPICS__METRICS": f"mt-{suffix}",
            "STREAMINFER_ALERTING__TOPICS__SILENCES": f"si-{suffix}",
            "STREAMINFER_ALERTING__TOPICS__OUTBOX": f"ob-{suffix}",
            "STREAMINFER_ALERTING__TOPICS__DEADLETTER": f"adl-{suffix}",
            "STREAMINFER_ALERTING__GROUP_ID": f"al-{suffix}",
            "STREAMINFER_ALERTING__DELIVERY_GROUP_ID": f"dv-{suffix}",
            "STREAMINFER_ALERTING__CHECKPOINT_DIR": str(scratch / f"al-{suffix}"),
            "BENCH_SECRET": SECRET,
        }
        self.scratch = scratch
        self.receiver = WebhookReceiver(SECRET)
        self.receiver_delay_s = receiver_delay_s
        self.feed_every_s = feed_every_s
        self.evaluation_interval_s = evaluation_interval_s
        self.max_backoff_s = max_backoff_s
        self.sent_at: dict[str, float] = {}
        self.notifications = 0

    async def __aenter__(self) -> AlertingBeside:
        await self.receiver.start()
        self.receiver.delay(self.receiver_delay_s)
        rules = self.scratch / f"rules-{uuid.uuid4().hex[:6]}.yml"
        rules.write_text(textwrap.dedent(f"""
            receivers: [{{name: slow, url: "{self.receiver.url}", secret_env: BENCH_SECRET, timeout_s: 60,
                          max_backoff_s: {self.max_backoff_s}}}]
            route: {{receiver: slow, group_by: [alertname, feature], group_wait_s: 0, group_interval_s: 1}}
            evaluation_interval_s: {self.evaluation_interval_s}
            rules: [{{name: Drift, signal: drift, reduce: count, window_s: 60, op: ">=", value: 1}}]
        """))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streaminfer.cli", "alerts", "run", "--rules", str(rules),
            "--bootstrap", self.kafka.bootstrap, env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)  # "alerting: ..." once it runs
        assert line.startswith(b"alerting:"), line
        self.stop = asyncio.Event()
        self.feeder = asyncio.create_task(
            drift_forever(self.kafka, self.drift_topic, self.stop, self.feed_every_s, self.sent_at)
        )
        await asyncio.sleep(2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.notifications = await self.feeder
        times = psutil.Process(self.process.pid).cpu_times()
        self.cpu_s = times.user + times.system
        self.process.send_signal(signal.SIGINT)
        await asyncio.wait_for(self.process.wait(), 60)
        await self.receiver.stop()


async def main(bootstrap: str, count: int, rounds: int) -> None:
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
        runs: dict[str, list[float]] = {"alone": [], "fast": [], "slow": []}
        arms = ["alone", "fast", "slow"]
        for round_ in range(rounds):
            order = arms[round_ % 3:] + arms[:round_ % 3]  # each arm first, second and third in turn
            notes = []
            for arm in order:
                if arm == "alone":
                    runs[arm].append(await time_requests(settings, count))
                    continue
                async with AlertingBeside(settings.kafka, scratch, 30.0 if arm == "slow" else 0.0) as beside:
                    runs[arm].append(await time_requests(settings, count))
                notes.append(f"{arm}: {beside.notifications} alerts, {len(beside.receiver.received)} received, "
                             f"alerting process {beside.cpu_s:.1f} CPU s")
            print("round " + ", ".join(f"{arm} {count / runs[arm][-1]:,.0f}/s" for arm in order)
                  + f" ({'; '.join(notes)})", flush=True)
    finally:
        await app.stop()
    a, f, s = (count / statistics.median(runs[arm]) for arm in ("alone", "fast", "slow"))
    print(f"median req/s: alone {a:,.0f}, alerting + fast receiver {f:,.0f}, alerting + 30 s receiver {s:,.0f}; "
          f"slow/fast {s / f:.2f}, slow/alone {s / a:.2f}")


if __name__ == "__main__":
    broker = EmbeddedBroker().start()
    try:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
        rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
        asyncio.run(main(broker.bootstrap, count, rounds))
    finally:
        broker.stop()
