"""The fuzz stream through every other reader of requests and predictions: the monitor, the
experiment controller and the feature app's record decoding. None stops; each counts what it
passed over. The single readers run on the in-memory Kafka (``tests.support.fake_kafka``), with
the fuzzed values written to every topic they read."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streaminfer.demo.model import DEMO_MODEL, demo_data
from streaminfer.monitoring.observability.metrics import ExperimentMetrics, MonitorMetrics
from streaminfer.monitoring.settings import ExperimentSettings, MonitorSettings
from streaminfer.streams.experiment_controller import ExperimentController
from streaminfer.streams.features import records as feature_records
from streaminfer.streams.monitor import Monitor
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.support.fake_kafka import FakeBroker, FakeClients
from tests.support.fuzz import FuzzStream

SEED = 41
COUNT = 2_000
TOPICS = TopicSettings(health_reports=False)
GUARD_S = 60


@pytest.fixture(scope="module")
def fuzzed():
    return FuzzStream(SEED, demo_data().x_test, DEMO_MODEL, oversized_bytes=20_000).records(COUNT)


def fill(broker: FakeBroker, topic: str, fuzzed) -> None:
    if topic not in broker.partitions:
        broker.create(topic)
    for record in fuzzed:
        broker.append(topic, record.value, record.key, headers=record.headers)


async def until(condition, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_the_monitor_reads_fuzzed_requests_predictions_and_labels_and_counts_what_it_skipped(
    fuzzed, model_repo, tmp_path
):
    broker = FakeBroker()
    settings = MonitorSettings(checkpoint_dir=tmp_path / "checkpoint", reports_dir=tmp_path / "reports")
    for topic in (TOPICS.requests, TOPICS.predictions, settings.topics.labels):
        fill(broker, topic, fuzzed)
    registry = CollectorRegistry()
    monitor = Monitor(KafkaSettings(), TOPICS, settings, model_repo, DEMO_MODEL, MonitorMetrics(registry),
                      clients=FakeClients(broker))
    await monitor.start()
    try:
        await until(lambda: sum(monitor.describe()["records"].values()) >= 3 * COUNT  # type: ignore[attr-defined]
                    or monitor.describe()["failed"], "the monitor to read every record")
        described = monitor.describe()
    finally:
        await monitor.stop()
    assert described["failed"] is None
    read = described["records"]
    assert read["requests"] + read["skipped"] + read.get("predictions", 0) + read.get("labels", 0) == 3 * COUNT
    valid = sum(1 for r in fuzzed if r.kind == "valid")
    assert read["requests"] >= valid and read["skipped"] >= 2 * COUNT - read.get("labels", 0), read
    assert registry.get_sample_value("streaminfer_monitor_records_total", {"model": "", "stream": "skipped"}) == read["skipped"]


async def test_the_experiment_controller_reads_fuzzed_records_and_counts_what_it_skipped(fuzzed, model_repo, tmp_path):
    broker = FakeBroker()
    settings = ExperimentSettings(look_interval_s=0.05, snapshots_dir=tmp_path / "snapshots")
    monitor_topics = MonitorSettings().topics
    reads = (TOPICS.predictions, TOPICS.deadletter, TOPICS.shadow, monitor_topics.labels)
    for topic in reads:
        fill(broker, topic, fuzzed)
    registry = CollectorRegistry()
    controller = ExperimentController(KafkaSettings(), TOPICS, monitor_topics, settings, model_repo,
                                      ExperimentMetrics(registry), clients=FakeClients(broker))
    await controller.start()
    try:
        done = lambda: all(  # noqa: E731
            broker.committed.get((settings.group_id, TopicPartition(topic, 0))) == COUNT for topic in reads
        )
        await until(lambda: done() or controller.describe()["failed"], "the controller to read every record")
        assert controller.describe()["failed"] is None
    finally:
        await controller.stop()
    skipped = registry.get_sample_value("streaminfer_experiment_records_skipped_total", {"topic": monitor_topics.labels})
    assert skipped == COUNT, "no fuzzed value is a label: each is counted as skipped"


def test_the_feature_app_s_record_decoding_never_raises_and_counts_what_it_passes_over(fuzzed):
    before = dict(feature_records.SKIPPED)
    requests = [feature_records.request_part(r.value, dict(r.headers), 0, "customer") for r in fuzzed]
    predictions = [feature_records.prediction_part(r.value, 0) for r in fuzzed]
    letters = [feature_records.dead_letter_part([*r.headers, ("__streaminfer.errors.partition", b"x")], 0) for r in fuzzed]
    skipped = {k: feature_records.SKIPPED[k] - before.get(k, 0) for k in ("request", "prediction", "dead_letter")}
    valid = sum(1 for r in fuzzed if r.kind == "valid")
    assert sum(part is not None for part in requests) >= valid
    assert skipped["request"] == sum(part is None for part in requests) > 0
    assert skipped["prediction"] == COUNT and predictions == [None] * COUNT, "no fuzzed value is a prediction"
    assert skipped["dead_letter"] == COUNT and letters == [None] * COUNT
