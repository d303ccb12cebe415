"""How many requests per second the monitor reads, per detector choice (medians of 3).

    python tests/benchmarks/monitor_throughput.py [ROWS]

Each run sends ROWS demo requests (drawn from the reference, no drift) to a fresh topic on the
embedded broker, then times a fresh monitor reading them all. Not part of the test suite: a
figure for the README and the closing notes, measured with nothing else running.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from streaminfer.broker import EmbeddedBroker
from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, build_demo_model
from streaminfer.loadgen import demo_payloads, send_all
from streaminfer.monitoring.drift.model_watch import reference_frame
from streaminfer.monitoring.drift.simulate import drifting_stream
from streaminfer.monitoring.observability.metrics import MonitorMetrics
from streaminfer.monitoring.settings import DetectorKind, MonitorSettings, MonitorTopics
from streaminfer.streams.clients import ensure_topic_names, make_producer
from streaminfer.streams.monitor import Monitor
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository

CASES = (
    ([DetectorKind.ADWIN], None),
    ([DetectorKind.PAGE_HINKLEY], None),
    ([DetectorKind.ADWIN], 5000),
    ([DetectorKind.ADWIN, DetectorKind.PAGE_HINKLEY], 5000),
)


async def one_run(kafka: KafkaSettings, repository: ModelRepository, rows: int, kinds, window_rows) -> float:
    tag = uuid.uuid4().hex[:6]
    topics = TopicSettings(requests=f"rq-{tag}", predictions=f"pr-{tag}", deadletter=f"dl-{tag}")
    await ensure_topic_names(kafka, [topics.requests], topics.partitions, 1)
    data, _ = drifting_stream(reference_frame(repository.resolve(DEMO_MODEL)), rows, None, seed=1)
    producer = make_producer(kafka)
    await producer.start()
    await send_all(producer, topics.requests, demo_payloads(data, rows, DEMO_MODEL, INPUT_NAME, tag))
    await producer.stop()
    scratch = Path(tempfile.mkdtemp())
    settings = MonitorSettings(
        topics=MonitorTopics(labels=f"l-{tag}", drift=f"d-{tag}", metrics=f"m-{tag}"), group_id=f"g-{tag}",
        checkpoint_dir=scratch / "checkpoint", reports_dir=scratch / "reports", detectors=kinds,
        window_rows=window_rows, window_seconds=10**6,
    )
    monitor = Monitor(kafka, topics, settings, repository, DEMO_MODEL, MonitorMetrics(CollectorRegistry()))
    await monitor.start()
    started = time.perf_counter()
    while monitor.state.records.get("requests", 0) < rows:  # noqa: ASYNC110 - the monitor has no event to await; its counters are polled
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    await monitor.stop()
    return rows / elapsed


async def main(bootstrap: str, rows: int) -> None:
    kafka = KafkaSettings(bootstrap=bootstrap, linger_ms=5)
    repository = ModelRepository(Path(tempfile.mkdtemp()))
    build_demo_model(repository)
    for kinds, window_rows in CASES:
        rates = [await one_run(kafka, repository, rows, kinds, window_rows) for _ in range(3)]
        label = "+".join(k.value for k in kinds)
        windows = f"evidently every {window_rows} rows" if window_rows else "no window closes"
        print(f"{label:20s} {windows:32s} median {statistics.median(rates):8,.0f} rows/s  "
              f"runs {[round(r) for r in rates]}", flush=True)


if __name__ == "__main__":
    broker = EmbeddedBroker().start()
    try:
        asyncio.run(main(broker.bootstrap, int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
    finally:
        broker.stop()
