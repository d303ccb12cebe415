"""Monitoring against real parts: a real Prometheus scraping the running system (metrics from
inside the Ray actors included), the monitor on a real broker, restarted mid-stream, and the
label join through Kafka."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pandas as pd
import pytest
import ray
from prometheus_client import CollectorRegistry
from sklearn.metrics import accuracy_score

from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME
from streaminfer.loadgen import Payload, demo_payloads, label_payloads, send_all
from streaminfer.monitoring.drift.model_watch import reference_frame
from streaminfer.monitoring.drift.simulate import Shift, drifting_stream
from streaminfer.monitoring.observability.metrics import MonitorMetrics
from streaminfer.monitoring.settings import MonitorSettings, MonitorTopics
from streaminfer.schemas.codec import decode_prediction
from streaminfer.schemas.monitoring_events import decode_drift_event, decode_metric_event
from streaminfer.streams.clients import ensure_topic_names, make_consumer, make_producer, start_client
from streaminfer.streams.monitor import Monitor
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.support.harness import Collector, app_settings, started
from tests.support.prometheus import PrometheusServer

SHIFTED = ("mean radius", "mean texture", "worst area")


def monitor_settings(tmp_path, **overrides) -> MonitorSettings:
    suffix = uuid.uuid4().hex[:8]
    return MonitorSettings(
        topics=MonitorTopics(labels=f"labels-{suffix}", drift=f"drift-{suffix}", metrics=f"metrics-{suffix}"),
        group_id=f"monitor-{suffix}",
        checkpoint_dir=tmp_path / "checkpoint",
        reports_dir=tmp_path / "reports",
        checkpoint_interval_s=0.5,
        **overrides,
    )


async def produce(bootstrap: str, topic: str, payloads) -> None:
    producer = make_producer(KafkaSettings(bootstrap=bootstrap, linger_ms=5))
    await start_client(producer, bootstrap)
    try:
        await send_all(producer, topic, payloads)
    finally:
        await producer.stop()


async def eventually(probe, expected, timeout_s: float = 60.0):
    """Poll a blocking probe (a Prometheus query) off the event loop until it returns ``expected``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = await asyncio.to_thread(probe)
        if value == expected:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"expected {expected}, last value {value}")


async def test_prometheus_scrapes_every_process_and_counts_exactly_the_requests_sent(
    kafka_settings, topics, model_repo, ray_dashboard, tmp_path
):
    count = 1200
    monitor = monitor_settings(tmp_path)
    targets = tmp_path / "targets" / "streaminfer.json"
    settings = app_settings(
        kafka_settings, topics, model_repo, monitor=monitor,
        metrics={"port": 0, "targets_file": targets},
    )
    reference = reference_frame(model_repo.resolve(DEMO_MODEL))
    rows, picks = drifting_stream(reference, count, None, seed=3)
    labels = pd.read_parquet(model_repo.resolve(DEMO_MODEL).reference_path)["target"].to_numpy()[picks]
    labelled = count - count // 10  # a tenth of the labels never come

    with PrometheusServer(tmp_path / "prometheus", targets) as prometheus:
        app = await started(settings)
        try:
            async with Collector(kafka_settings.bootstrap, topics) as collector:
                await produce(kafka_settings.bootstrap, topics.requests, demo_payloads(rows, count, DEMO_MODEL, INPUT_NAME, "m"))
                ids = [f"m-{n}" for n in range(count)]
                await produce(kafka_settings.bootstrap, monitor.topics.labels, label_payloads(ids[:labelled], labels[:labelled]))
                collected = await collector.until(lambda c: c.total >= count)

            def value(expr: str):
                return prometheus.value(expr)

            await eventually(lambda: value("sum(streaminfer_requests_total)"), count)
            await eventually(lambda: value('sum(streaminfer_requests_total{outcome="predicted"})'), count)
            # metrics from inside the consumer actors and the monitor actor, found through file_sd
            await eventually(lambda: value('count(up{job="streaminfer",component="consumer"} == 1)'), 2)
            await eventually(lambda: value('count(up{component="monitor"} == 1)'), 1)
            await eventually(lambda: value('sum(streaminfer_actors{role="consumer"})'), 2)
            await eventually(lambda: value('sum(streaminfer_monitor_records_total{stream="requests"})'), count)
            await eventually(lambda: value('sum(streaminfer_labels_total{outcome="joined"})'), labelled)
            assert await asyncio.to_thread(value, 'count(streaminfer_drift_score{detector="adwin"})') == 31
            await eventually(lambda: value("count(streaminfer_consumer_lag_records)"), topics.partitions)
            await eventually(lambda: value("sum(streaminfer_consumer_lag_records)"), 0)

            # online accuracy equals the offline figure on the same joined pairs
            predicted = {decode_prediction(r.value).id: decode_prediction(r.value) for r in collected.predictions}
            offline = accuracy_score(labels[:labelled], [predicted[i].outputs[0].data[0] for i in ids[:labelled]])
            online = await asyncio.to_thread(value, "streaminfer_online_accuracy_ratio")
            assert online == pytest.approx(offline, abs=1e-12)
            quality = await read_topic(kafka_settings, monitor.topics.metrics, decode_metric_event)
            accuracy = [e for e in quality if e.metric == "accuracy"]
            assert accuracy and accuracy[-1].samples <= labelled and accuracy[-1].version == "1.0.0"

            # a consumer actor killed: Ray restarts it, the supervisor counts it, Prometheus sees it
            consumer = ray.get_actor(app.names[0], namespace=settings.pool.namespace)  # type: ignore[attr-defined]
            ray.kill(consumer, no_restart=False)
            await eventually(lambda: value('sum(streaminfer_actor_restarts_total{role="consumer"})'), 1, 90)
            await eventually(lambda: value('count(up{component="consumer"} == 1)'), 2, 60)
        finally:
            await app.stop()


async def run_monitor(kafka, topics, settings, repository, until_requests: int) -> Monitor:
    monitor = Monitor(kafka, topics, settings, repository, DEMO_MODEL, MonitorMetrics(CollectorRegistry()))
    await monitor.start()
    deadline = asyncio.get_running_loop().time() + 120
    while monitor.state.records.get("requests", 0) < until_requests:
        assert monitor.failure is None, monitor.failure
        assert asyncio.get_running_loop().time() < deadline, monitor.state.records
        await asyncio.sleep(0.1)
    return monitor


async def read_topic(kafka, topic: str, decode) -> list:
    """Everything on a topic, read until it has been quiet for a second."""
    consumer = make_consumer(kafka, topic, group_id=None)
    await start_client(consumer, kafka.bootstrap)
    values = []
    try:
        idle = 0
        while idle < 4:
            batches = await consumer.getmany(timeout_ms=300)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                values += [decode(r.value) for r in records]
    finally:
        await consumer.stop()
    return values


async def drift_events(kafka, topic: str) -> list[tuple]:
    events = await read_topic(kafka, topic, decode_drift_event)
    return [(e.feature, e.detector, e.kind, e.samples, e.window_start_ms, e.window_end_ms) for e in events]


@pytest.mark.kafka_semantics
async def test_restarted_monitor_keeps_its_detector_state_and_fires_at_the_same_point(
    kafka_settings, model_repo, tmp_path
):
    """One partition, so the order the detectors see is the order produced: the run stopped
    and resumed half-way must emit exactly the events of the run that went through."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}",
                           deadletter=f"deadletter-{suffix}", partitions=1)
    count, shift_at = 1600, 800
    reference = reference_frame(model_repo.resolve(DEMO_MODEL))
    rows, _ = drifting_stream(reference, count, Shift(SHIFTED, shift_at), seed=9)
    payloads = demo_payloads(rows, count, DEMO_MODEL, INPUT_NAME, "d")
    detectors = dict(detectors=["adwin", "page_hinkley"], window_rows=200, fetch_max_records=100)

    whole_settings = monitor_settings(tmp_path / "whole", **detectors)
    await ensure_topic_names(kafka_settings, [topics.requests], partitions=1, replication_factor=1)
    await produce(kafka_settings.bootstrap, topics.requests, payloads)
    whole = await run_monitor(kafka_settings, topics, whole_settings, model_repo, count)
    await whole.stop()
    expected = await drift_events(kafka_settings, whole_settings.topics.drift)

    halves_settings = monitor_settings(tmp_path / "halves", **detectors)
    first = await run_monitor(kafka_settings, topics, halves_settings, model_repo, 600)
    await first.stop()
    seen_before_restart = first.state.records["requests"]
    second = await run_monitor(kafka_settings, topics, halves_settings, model_repo, count)
    assert second.restored
    await second.stop()
    got = await drift_events(kafka_settings, halves_settings.topics.drift)

    assert seen_before_restart < count
    assert {e[0] for e in expected if e[2] == "window"} == set(SHIFTED)
    assert any(e[2] == "sample" and e[3] > shift_at for e in expected)
    assert sorted(got) == sorted(expected)


@pytest.mark.kafka_semantics
async def test_a_backlog_on_four_partitions_drifts_in_exactly_the_windows_after_the_shift(
    kafka_settings, model_repo, tmp_path
):
    """The monitor started behind a backlog, fetching 100 records at a time, gets the four
    partitions' data in whatever order the fetches return it; windows of 150 rows must still
    hold the rows produced together: the four before the shift clean, the four after it drifted."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}",
                           deadletter=f"deadletter-{suffix}", partitions=4)
    count = 1200
    reference = reference_frame(model_repo.resolve(DEMO_MODEL))
    rows, _ = drifting_stream(reference, count, Shift(SHIFTED, count // 2), seed=17)
    await ensure_topic_names(kafka_settings, [topics.requests], partitions=4, replication_factor=1)
    await produce(kafka_settings.bootstrap, topics.requests, demo_payloads(rows, count, DEMO_MODEL, INPUT_NAME, "w"))

    settings = monitor_settings(tmp_path, window_rows=150, fetch_max_records=100)
    monitor = await run_monitor(kafka_settings, topics, settings, model_repo, count)
    await monitor.stop()
    events = await read_topic(kafka_settings, settings.topics.drift, decode_drift_event)
    drifted = {(e.window_start_ms, e.window_end_ms) for e in events if e.kind == "window"}
    # every window leaves a report named after its event-time span
    reports = (tmp_path / "reports").rglob("window-*.html")
    spans = sorted(tuple(int(t) for t in path.stem.split("-")[1:]) for path in reports)
    assert len(spans) == 8 and monitor.state.records["windows"] == 8
    assert all(end <= following[0] for (_, end), following in itertools.pairwise(spans)), spans
    assert drifted == set(spans[4:])
    assert {e.feature for e in events if e.kind == "window"} == set(SHIFTED)


async def test_monitor_counts_a_deeply_nested_request_as_skipped_and_goes_on(kafka_settings, model_repo, tmp_path):
    """A request nested past msgspec's recursion limit once crashed the monitor on every restart."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}",
                           deadletter=f"deadletter-{suffix}", partitions=1)
    reference = reference_frame(model_repo.resolve(DEMO_MODEL))
    rows, _ = drifting_stream(reference, 200, None, seed=5)
    payloads = list(demo_payloads(rows, 200, DEMO_MODEL, INPUT_NAME, "n"))
    deep = b'{"id": "deep", "parameters": {"x": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b'}, "inputs": []}'
    poisoned = payloads[:100] + [Payload(b"deep", deep, payloads[0].headers)] * 2 + payloads[100:]
    await ensure_topic_names(kafka_settings, [topics.requests], partitions=1, replication_factor=1)
    await produce(kafka_settings.bootstrap, topics.requests, poisoned)

    monitor = await run_monitor(kafka_settings, topics, monitor_settings(tmp_path), model_repo, 200)
    await monitor.stop()
    assert monitor.failure is None
    assert monitor.state.records == {"requests": 200, "skipped": 2}


async def test_drift_report_from_the_topic_flags_exactly_the_shifted_features(tansu, model_repo, tmp_path):
    """`drift report --bootstrap`: the newest requests as one window against the reference."""
    from streaminfer.reports.drift import report_from_topic
    from streaminfer.settings import AppSettings

    suffix = uuid.uuid4().hex[:8]
    settings = AppSettings(
        model_repository=model_repo.root, kafka=KafkaSettings(bootstrap=tansu.bootstrap),
        topics=TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}"),
        monitor=monitor_settings(tmp_path),
    )
    reference = reference_frame(model_repo.resolve(DEMO_MODEL))
    rows, _ = drifting_stream(reference, 600, Shift(SHIFTED, 0), seed=4)
    await ensure_topic_names(settings.kafka, [settings.topics.requests], partitions=1, replication_factor=1)
    await produce(tansu.bootstrap, settings.topics.requests, demo_payloads(rows, 600, DEMO_MODEL, INPUT_NAME, "r"))

    path, drifted = await report_from_topic(settings, DEMO_MODEL, rows=500)
    assert path.is_file() and path.suffix == ".html"
    assert set(drifted) == set(SHIFTED)
