"""Autoscaling on lag against real brokers, real Ray and ONNX Runtime: a backlog burst scales the
consumer group up from one actor, the group drains back to one once idle, and every request is
answered; exactly once on Apache Kafka with ``exactly_once``. The decisions are read from the
driver's ``/metrics``."""

from __future__ import annotations

import uuid

import pytest

from streaminfer.demo.model import demo_data
from streaminfer.running import ConsumerGroupApp
from streaminfer.settings import AppSettings
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from tests.integration.test_pipeline import demo_records
from tests.support.harness import app_settings, started
from tests.support.scaling import FAST_SCALING, ScalingRun, burst_then_idle, driver_samples

#: Small fetches and batches keep one consumer behind the burst (``burst_then_idle`` tops the
#: backlog up until the group has grown, however fast that one consumer turns out to be).
SLOW_CONSUMER = {"max_batch_size": 4, "fetch_max_records": 8, "max_inflight_batches": 1}


def _settings(kafka: KafkaSettings, topics: TopicSettings, model_repo, guarantee: str) -> AppSettings:
    pipeline = PipelineSettings(guarantee=guarantee, **SLOW_CONSUMER)
    settings = app_settings(kafka, topics, model_repo, consumers=1, pipeline=pipeline,
                            metrics={"port": 0, "targets_file": None})
    return settings.model_copy(update={"scaling": FAST_SCALING})


async def _scaled_burst(settings: AppSettings, prefix: str, isolation_level: str) -> tuple[ScalingRun, dict]:
    app = await started(settings)
    assert isinstance(app, ConsumerGroupApp) and app.running == 1
    try:
        rows = demo_data().x_test
        run = await burst_then_idle(app, settings.kafka, settings.topics,
                                    lambda first, count: demo_records(rows, count, prefix, first),
                                    isolation_level=isolation_level)
        assert app.driver_metrics_url is not None
        await app.supervise_once()  # the actor count as of now
        samples = driver_samples(app.driver_metrics_url)
        names = list(app.names)
    finally:
        await app.stop()
    print(f"consumers over time: {run.counts}; a lag spike to a new consumer owning partitions: "
          f"{run.to_new_consumer_s} s; idle to the first drain: {run.idle_to_first_drain_s} s, "
          f"to one consumer: {run.idle_to_min_s} s")
    assert len(names) == 1
    return run, samples


def _decisions(samples: dict, direction: str) -> dict[str, float]:
    return {dict(labels)["reason"]: value for (name, labels), value in samples.items()
            if name == "streaminfer_scaling_decisions_total" and dict(labels)["direction"] == direction}


def _assert_scaled_up_and_back(run: ScalingRun, samples: dict) -> None:
    assert run.peak >= 2, f"the burst added consumers: {run.counts}"
    assert run.to_new_consumer_s is not None, "a consumer added for the burst owned partitions"
    assert run.idle_to_first_drain_s is not None and run.idle_to_first_drain_s >= FAST_SCALING.idle_for_s - 0.5
    up, down = _decisions(samples, "up"), _decisions(samples, "down")
    assert sum(up.get(reason, 0) for reason in ("lag", "growth")) >= 1, up
    assert down.get("idle", 0) == run.peak - 1, down
    assert samples[("streaminfer_consumers_running", ())] == 1
    assert samples[("streaminfer_consumers_desired", ())] == 1
    assert samples[("streaminfer_actors", (("role", "consumer"),))] == 1
    driving = [value for (name, labels), value in samples.items()
               if name == "streaminfer_scaling_decision_lag_records" and dict(labels)["direction"] == "up"]
    assert driving and max(driving) > FAST_SCALING.lag_per_consumer, "the lag that drove the scale up"
    restarts = [value for (name, _), value in samples.items() if name == "streaminfer_actor_restarts_total"]
    assert restarts == [0.0], "drained consumers are forgotten, not counted as restarts; one series left"


@pytest.mark.kafka_semantics
async def test_a_backlog_burst_scales_the_group_up_and_it_drains_back_to_one_answering_every_request(
    kafka_settings, topics, model_repo, ray_dashboard
):
    settings = _settings(kafka_settings, topics, model_repo, "at_least_once")
    run, samples = await _scaled_burst(settings, "a", "read_uncommitted")

    ids = run.collected.ids(run.collected.predictions)
    assert run.collected.dead_letters == []
    assert set(ids) == {f"a-{n}" for n in range(run.sent)}
    duplicates = sum(n - 1 for n in ids.values())
    print(f"duplicates at least once while scaling: {duplicates}")
    assert duplicates == 0, "new members join after revoked partitions were drained; leaving ones commit first"
    _assert_scaled_up_and_back(run, samples)


@pytest.mark.kafka_semantics
async def test_scaling_up_and_draining_back_answers_every_request_exactly_once_for_read_committed_readers(
    apache_kafka, topics: TopicSettings, model_repo, ray_dashboard
):
    kafka = KafkaSettings(bootstrap=apache_kafka.bootstrap, group_id=f"test-{uuid.uuid4().hex[:8]}",
                          session_timeout_ms=6000, heartbeat_interval_ms=500, rebalance_timeout_ms=6000)
    settings = _settings(kafka, topics, model_repo, "exactly_once")
    run, samples = await _scaled_burst(settings, "e", "read_committed")

    ids = run.collected.ids(run.collected.predictions)
    assert run.collected.dead_letters == []
    assert set(ids) == {f"e-{n}" for n in range(run.sent)}
    assert max(ids.values()) == 1, "a read_committed reader sees each answer once while the group scales"
    _assert_scaled_up_and_back(run, samples)
