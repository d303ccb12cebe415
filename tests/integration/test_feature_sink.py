"""The feature sink against a real broker, with a store that fails: a failed write is retried,
and rows the store keeps refusing become dead letters, never a drop."""

from __future__ import annotations

import asyncio
import time
import uuid

import pandas as pd
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import FeatureSinkMetrics
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.streams.clients import ensure_topic_names, make_producer, start_client
from streaminfer.streams.features.records import FeatureRow, PredictionLog, decode_row, encode
from streaminfer.streams.features.settings import FeatureSettings, FeatureTopics
from streaminfer.streams.features.sink import FeatureSink
from streaminfer.streams.settings import KafkaSettings
from tests.support.features import read_topic


class FlakyStore:
    """Refuses the first ``failures`` writes of each kind, then keeps what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = {"stats": failures, "log": failures}
        self.stats: list[pd.DataFrame] = []
        self.logs: list[pd.DataFrame] = []

    def _maybe_fail(self, kind: str) -> None:
        if self.failures[kind] > 0:
            self.failures[kind] -= 1
            raise ConnectionError("redis at 127.0.0.1:6379: connection refused")

    def write_stats(self, frame: pd.DataFrame) -> None:
        self._maybe_fail("stats")
        self.stats.append(frame)

    def write_log(self, frame: pd.DataFrame) -> None:
        self._maybe_fail("log")
        self.logs.append(frame)


def sink_settings() -> FeatureSettings:
    suffix = uuid.uuid4().hex[:8]
    return FeatureSettings(
        sink_group_id=f"sink-{suffix}", sink_retries=2, sink_retry_backoff_s=0.01, sink_batch_wait_ms=50,
        topics=FeatureTopics(**{name: f"{value}-{suffix}" for name, value in FeatureTopics().model_dump().items()}),
    )


async def fill(kafka: KafkaSettings, settings: FeatureSettings, count: int) -> None:
    await ensure_topic_names(kafka, settings.topics.all(), 2, 1)
    producer = make_producer(kafka)
    await start_client(producer, kafka.bootstrap)
    sends = []
    for n in range(count):
        row = FeatureRow(f"e{n % 5}", 1_000 + n, n, True, {"requests_60s": float(n)})
        log = PredictionLog(f"r{n}", f"e{n % 5}", 1_000 + n, "m", "1.0.0", "[]", 0.5)
        sends.append(await producer.send(settings.topics.rows, encode(row), key=row.entity.encode()))
        sends.append(await producer.send(settings.topics.log, encode(log), key=log.request_id.encode()))
    await asyncio.gather(*sends)
    await producer.stop()


async def run_until(sink: FeatureSink, done, timeout_s: float = 60) -> None:
    task = asyncio.create_task(sink.run())
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            assert time.monotonic() < deadline, f"sink wrote {sink.written}"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
    finally:
        sink.stop()
        await task


def kafka_for(tansu) -> KafkaSettings:
    return KafkaSettings(bootstrap=tansu.bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=500,
                         rebalance_timeout_ms=6000)


async def test_a_failed_write_is_retried_and_every_row_is_written_once(tansu):
    kafka, settings = kafka_for(tansu), sink_settings()
    await fill(kafka, settings, 40)
    store, metrics = FlakyStore(failures=2), FeatureSinkMetrics(CollectorRegistry())
    sink = FeatureSink(kafka, settings, store, metrics)
    await run_until(sink, lambda: sink.written["rows"] >= 40 and sink.written["logs"] >= 40)
    rows = pd.concat(store.stats)
    assert sorted(rows["requests_60s"]) == [float(n) for n in range(40)]
    assert sorted(pd.concat(store.logs)["request_id"]) == sorted(f"r{n}" for n in range(40))
    assert metrics.write_retries._value.get() == 4
    assert await read_topic(tansu.bootstrap, settings.topics.deadletter, idle_s=0.5) == []


async def test_rows_the_store_keeps_refusing_become_dead_letters_with_the_error_and_their_bytes(tansu):
    kafka, settings = kafka_for(tansu), sink_settings()
    await fill(kafka, settings, 10)
    store, metrics = FlakyStore(failures=10**6), FeatureSinkMetrics(CollectorRegistry())
    sink = FeatureSink(kafka, settings, store, metrics)
    await run_until(sink, lambda: metrics.dead_letters.labels("entity_stats")._value.get() >= 10
                    and metrics.dead_letters.labels("prediction_log")._value.get() >= 10)
    dead = await read_topic(tansu.bootstrap, settings.topics.deadletter, idle_s=1.0)
    assert len(dead) == 20
    rows = [d for d in dead if read_error_headers(d.headers)["topic"] == settings.topics.rows]
    assert sorted(decode_row(d.value).values["requests_60s"] for d in rows) == [float(n) for n in range(10)]
    errors = read_error_headers(dead[0].headers)
    assert errors["reason"] == "feature_write_failed"
    assert "after 2 retries" in errors["message"] and "connection refused" in errors["message"]
    # dead-lettered records are committed: a new sink in the group reads only what comes after
    await fill(kafka, settings, 1)
    again = FeatureSink(kafka, settings, FlakyStore(failures=0), FeatureSinkMetrics(CollectorRegistry()))
    await run_until(again, lambda: again.written["rows"] >= 1 and again.written["logs"] >= 1)
    assert again.written == {"rows": 1, "logs": 1}
