"""The feature store's figures: sink throughput, its cost to the inference path, and how soon a
prediction's features can be read back online.

    PYTHONPATH=. python tests/benchmarks/feature_sink.py [REQUESTS] [ROUNDS] [PARTS]

PARTS: any of ``sink,overhead,latency`` (default: all three).

1. Sink throughput: a backlog of feature rows and prediction logs on Kafka, drained by the sink
   into a fresh Feast repository (SQLite, then Redis online store); rows written per second.
2. Overhead on the inference path, side by side: the pipeline (two consumer actors) answers
   REQUESTS requests that name entities, alone and with the feature worker (Faust app and sink,
   its own process) consuming the same stream; arms rotate, medians over ROUNDS.
3. Write-to-online latency: one request for a new entity at a time through the pipeline; time
   from sending it until its features can be read from the online store (SQLite and Redis).

Not part of the test suite: figures for the closing notes, taken with nothing else running.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
from prometheus_client import CollectorRegistry

from streaminfer.app import start_app, start_ray
from streaminfer.broker import EmbeddedBroker, free_port
from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, build_demo_model, demo_data
from streaminfer.loadgen import Payload
from streaminfer.monitoring.observability.metrics import FeatureSinkMetrics
from streaminfer.monitoring.settings import MonitorSettings
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import ensure_topic_names, make_producer, start_client
from streaminfer.streams.features.online import OnlineFeatures
from streaminfer.streams.features.records import FeatureRow, PredictionLog, encode
from streaminfer.streams.features.sink import FeastWriter, FeatureSink
from streaminfer.streams.features.store import init_repository, open_store, stats_features, window_spec
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import RaySettings
from tests.benchmarks.alerting_isolation import time_requests
from tests.support.features import FeatureWorker, RedisServer, feature_settings


def entity_payloads(count: int, run: str, entities: int = 500) -> list[Payload]:
    rows = demo_data().x_test
    payloads = []
    for n in range(count):
        request_id = f"{run}-{n}"
        body = request_body(request_id, INPUT_NAME, rows[n % len(rows)][np.newaxis, :],
                            parameters={"entity_id": f"e{n % entities}"})
        payloads.append(Payload(request_id.encode(), body, [(h.REQUEST_ID, request_id.encode())]))
    return payloads


# 1. sink throughput -----------------------------------------------------------------------------

async def sink_throughput(kafka: KafkaSettings, scratch: Path, store: str, redis: RedisServer | None,
                          rows: int, entities: int = 2_000) -> tuple[float, float]:
    """Rows per second into the feature store: (entity_stats rows, prediction logs)."""
    settings = feature_settings(scratch / uuid.uuid4().hex[:6], store, redis)
    init_repository(settings)
    await ensure_topic_names(kafka, settings.topics.all(), 4, 1)
    names = window_spec(settings).feature_names()
    producer = make_producer(kafka)
    await start_client(producer, kafka.bootstrap)
    now = int(time.time() * 1000)
    sends = []
    for n in range(rows):
        entity = f"e{n % entities}"
        row = FeatureRow(entity, now + n, time.time_ns() // 1000, True, {k: float(n % 7) for k in names})
        log = PredictionLog(f"r{n}", entity, now + n, DEMO_MODEL, "1.0.0", "[]", 0.5)
        sends.append(await producer.send(settings.topics.rows, encode(row), key=entity.encode()))
        sends.append(await producer.send(settings.topics.log, encode(log), key=f"r{n}".encode()))
    await asyncio.gather(*sends)
    await producer.stop()
    sink = FeatureSink(kafka, settings, FeastWriter(open_store(settings), settings), FeatureSinkMetrics(CollectorRegistry()))
    task = asyncio.create_task(sink.run())
    stats_done = logs_done = None
    while stats_done is None or logs_done is None:
        await asyncio.sleep(0.01)
        started = sink.first_fetch_at  # from the first records read: the group join is not the sink's cost
        if started is not None and stats_done is None and sink.written["rows"] >= rows:
            stats_done = time.perf_counter() - started
        if started is not None and logs_done is None and sink.written["logs"] >= rows:
            logs_done = time.perf_counter() - started
    sink.stop()
    await task
    return rows / stats_done, rows / logs_done


# 3. write-to-online latency ----------------------------------------------------------------------

async def online_latency(settings: AppSettings, probes: int) -> list[float]:
    """Seconds from sending a request for a new entity until its features are online."""
    reader = OnlineFeatures(settings.features)
    refs = stats_features(settings.features)[:1]
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka.bootstrap)
    row = demo_data().x_test[0][np.newaxis, :]
    latencies = []
    for _ in range(probes):
        entity = f"probe-{uuid.uuid4().hex[:8]}"
        request_id = f"{entity}-r"
        body = request_body(request_id, INPUT_NAME, row, parameters={"entity_id": entity})
        started = time.perf_counter()
        await (await producer.send(settings.topics.requests, body, key=request_id.encode(),
                                   headers=[(h.REQUEST_ID, request_id.encode())]))
        while (await asyncio.to_thread(reader.read, [entity], refs))[entity][refs[0].split(":")[1]] is None:
            await asyncio.sleep(0.005)
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"features of {entity} never appeared online")
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.2)
    await producer.stop()
    return latencies


def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


async def main(bootstrap: str, count: int, rounds: int, parts: set[str]) -> None:
    scratch = Path(tempfile.mkdtemp())
    redis = RedisServer()
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}")
    try:
        print("1. sink throughput (rows/s into Feast; median of 3)", flush=True)
        for store in ("sqlite", "redis") if "sink" in parts else ():
            runs = [await sink_throughput(kafka, scratch, store, redis if store == "redis" else None, 20_000)
                    for _ in range(3)]
            stats = statistics.median(r[0] for r in runs)
            logs = statistics.median(r[1] for r in runs)
            print(f"   {store}: entity_stats (online + offline) {stats:,.0f} rows/s; prediction_log (offline) "
                  f"{logs:,.0f} rows/s; runs {[(round(a), round(b)) for a, b in runs]}", flush=True)

        repository = ModelRepository(scratch / "models")
        build_demo_model(repository)
        suffix = uuid.uuid4().hex[:6]
        topics = TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}")
        features = feature_settings(scratch / "pipeline", "sqlite", None)
        init_repository(features)
        settings = AppSettings(
            model_repository=repository.root, kafka=kafka, topics=topics, features=features,
            monitor=MonitorSettings(enabled=False), metrics={"port": None, "targets_file": None},
        )
        start_ray(RaySettings(num_cpus=2, dashboard_port=free_port(), temp_dir=str(Path("/tmp") / f"ray-{suffix}")),
                  log_to_driver=False)
        app = await start_app(settings)
        try:
            await time_requests(settings, count, entity_payloads)  # warm-up
            if "overhead" not in parts:
                rounds = 0
            print(f"2. inference path, {count} requests naming entities, alone vs with the feature worker", flush=True)
            runs: dict[str, list[float]] = {"alone": [], "features": []}
            cpu: list[float] = []
            for round_ in range(rounds):
                order = ["alone", "features"] if round_ % 2 == 0 else ["features", "alone"]
                for arm in order:
                    if arm == "alone":
                        runs[arm].append(await time_requests(settings, count, entity_payloads))
                        continue
                    worker = FeatureWorker(kafka, topics, features, scratch / "worker.log").start()
                    await asyncio.sleep(8)  # joined its group and caught up with what came before
                    process = psutil.Process(worker._process.pid)  # type: ignore[union-attr]
                    before = process.cpu_times()
                    runs[arm].append(await time_requests(settings, count, entity_payloads))
                    after = process.cpu_times()
                    cpu.append(after.user + after.system - before.user - before.system)
                    worker.stop()
                print("   round " + ", ".join(f"{arm} {count / runs[arm][-1]:,.0f}/s" for arm in order)
                      + f" (feature worker {cpu[-1]:.1f} CPU s over its arm, client start-up included)", flush=True)
            if rounds:
                alone = count / statistics.median(runs["alone"])
                with_features = count / statistics.median(runs["features"])
                print(f"   median req/s: alone {alone:,.0f}, with feature worker {with_features:,.0f}; "
                      f"ratio {with_features / alone:.2f}", flush=True)
        finally:
            await app.stop()

        print("3. write-to-online latency (request sent → features readable online), 40 probes", flush=True)
        for store in ("sqlite", "redis") if "latency" in parts else ():
            features = feature_settings(scratch / f"latency-{store}", store, redis if store == "redis" else None)
            init_repository(features)
            fresh = uuid.uuid4().hex[:6]
            topics = TopicSettings(requests=f"rq-{fresh}", predictions=f"pr-{fresh}", deadletter=f"dl-{fresh}")
            settings = settings.model_copy(update={"features": features, "topics": topics})
            app = await start_app(settings)
            worker = FeatureWorker(kafka, topics, features, scratch / f"latency-{store}.log").start()
            try:
                await asyncio.sleep(10)
                await online_latency(settings, 3)  # warm-up (the worker catches up with the backlog)
                latencies = await online_latency(settings, 40)
            finally:
                worker.stop()
                await app.stop()
            print(f"   {store}: p50 {quantile(latencies, 0.5) * 1000:.0f} ms, p99 {quantile(latencies, 0.99) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms", flush=True)
    finally:
        redis.stop()


if __name__ == "__main__":
    broker = EmbeddedBroker().start()
    try:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
        rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
        parts = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else {"sink", "overhead", "latency"}
        asyncio.run(main(broker.bootstrap, count, rounds, parts))
    finally:
        broker.stop()
