"""The feature store end to end: the real pipeline answers requests that name entities, the
feature worker (a real process: Faust app and Feast sink) turns requests and predictions into
per-entity features in a Feast repository, and the pipeline enriches a model's requests from it.

Every scenario runs on the SQLite and on the Redis online store; the basic one also on Apache
Kafka. Requests carry event times spread over eight minutes, so the windows move, and are keyed
by request id, so an entity's requests reach the aggregate through several partitions, out of
order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streaminfer.demo.model import INPUT_NAME, demo_data
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import decode_prediction, request_body
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.streams.features.online import OnlineFeatures
from streaminfer.streams.features.records import score_of
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import init_repository, stats_features, window_spec
from streaminfer.streams.features.training import prediction_log, training_frame
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.support.features import (
    FeatureWorker,
    RedisServer,
    feature_settings,
    features_as_of,
    read_topic,
)
from tests.support.harness import app_settings, send, started
from tests.support.models import ENRICHED_MODEL, write_enriched_model

ENTITIES = [f"customer-{n}" for n in range(8)]
REQUESTS = 320
STEP_MS = 1_500  # 320 requests over 8 minutes of event time
ENRICHED_FEATURES = ["entity_stats:requests_60s", "entity_stats:mean_score_60s"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """Fails, naming the package, where redis-server is missing: it is installable everywhere."""
    server = RedisServer()
    yield server
    server.stop()


@dataclass
class Sent:
    request_id: str
    entity: str
    ts_ms: int
    row: list[float]


@dataclass
class Outcome:
    sent: list[Sent]
    scores: dict[str, float]
    online: dict[str, dict[str, Any]]
    training: Any
    log: Any
    settings: FeatureSettings
    enriched: dict[str, float] = field(default_factory=dict)
    enrichment_dead_letters: dict[str, str] = field(default_factory=dict)
    online_at_enrichment: dict[str, dict[str, Any]] = field(default_factory=dict)

    def events(self, entity: str) -> list[tuple[int, float]]:
        return [(s.ts_ms, self.scores[s.request_id]) for s in self.sent if s.entity == entity]


def entity_requests(run: str, count: int, base_ms: int) -> tuple[list[Sent], list[tuple[bytes, bytes, list, int]]]:
    rows = demo_data().x_test
    sent, records = [], []
    for n in range(count):
        request_id, entity = f"{run}-{n}", ENTITIES[(n * 7 + n // 5) % len(ENTITIES)]
        row = rows[n % len(rows)]
        ts = base_ms + n * STEP_MS
        body = request_body(request_id, INPUT_NAME, row[np.newaxis, :], parameters={"entity_id": entity})
        sent.append(Sent(request_id, entity, ts, [float(v) for v in row]))
        records.append((request_id.encode(), body, [(h.REQUEST_ID, request_id.encode())], ts))
    return sent, records


async def produce_at(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list, int]]) -> None:
    """Requests with their own event times (the record timestamp), as an application replaying
    history or a clock-skewed producer would send them."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k, headers=hs, timestamp_ms=ts) for k, v, hs, ts in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def prediction_scores(bootstrap: str, topics: TopicSettings, count: int, timeout_s: float = 120) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    scores: dict[str, float] = {}
    while len(scores) < count:
        assert time.monotonic() < deadline, f"only {len(scores)} of {count} predictions arrived"
        for record in await read_topic(bootstrap, topics.predictions, idle_s=0.5):
            prediction = decode_prediction(record.value)
            if prediction.model_name != ENRICHED_MODEL:
                scores[prediction.id] = score_of(prediction)
    return scores


def expected_online(outcome_sent: list[Sent], scores: dict[str, float], settings: FeatureSettings) -> dict[str, dict[str, Any]]:
    spec = window_spec(settings)
    expected = {}
    for entity in ENTITIES:
        events = [(s.ts_ms, scores[s.request_id]) for s in outcome_sent if s.entity == entity]
        expected[entity] = features_as_of(events, spec, max(ts for ts, _ in events))
    return expected


def matches(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> bool:
    return all(
        got.get(e, {}).get(k) is not None and got[e][k] == pytest.approx(v, rel=1e-6)
        for e, values in want.items() for k, v in values.items()
    )


async def read_online(settings: FeatureSettings) -> dict:
    """The online features now; an error while a (re)starting worker registers the feature views
    again (``feast apply`` rewrites the registry file in place) is returned as ``{"error": ...}``."""
    try:
        return await asyncio.to_thread(OnlineFeatures(settings).read, ENTITIES, stats_features(settings))
    except Exception as exc:  # noqa: BLE001 - Feast's registry errors share no base; the caller retries
        return {"error": repr(exc)}


async def wait_until_online_matches(settings: FeatureSettings, want: dict, worker: FeatureWorker,
                                    timeout_s: float = 150) -> dict:
    deadline = time.monotonic() + timeout_s
    got: dict = {}
    while time.monotonic() < deadline:
        got = await read_online(settings)
        if matches(got, want):
            return got
        await asyncio.sleep(1)
    raise AssertionError(f"online features never matched the stream:\n got {got}\nwant {want}\n{worker.log_tail()}")


async def logged(settings: FeatureSettings, count: int, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError, ValueError):  # the file is replaced atomically; retry on a bad read
            log = prediction_log(settings)
            if len(log) >= count:
                return log
        assert time.monotonic() < deadline, "the prediction log never held every prediction"
        await asyncio.sleep(1)


async def run_scenario(bootstrap: str, kafka: KafkaSettings, repo: Any, settings: FeatureSettings, tmp: Path,
                       kill_mid_stream: bool = False) -> Outcome:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}")
    app_config = app_settings(kafka, topics, repo, models=(ENRICHED_MODEL,), consumers=1)
    app_config = app_config.model_copy(update={"features": settings})
    base_ms = int(time.time() * 1000) - 10 * 60_000
    sent, records = entity_requests(suffix, REQUESTS, base_ms)
    app = await started(app_config)
    worker = FeatureWorker(kafka, topics, settings, tmp / f"worker-{suffix}.log").start()
    try:
        if kill_mid_stream:
            half = REQUESTS // 2
            await produce_at(bootstrap, topics.requests, records[:half])
            await prediction_scores(bootstrap, topics, half)
            await wait_for_some_rows(settings)
            worker.kill()
            await produce_at(bootstrap, topics.requests, records[half:])
            worker.start()
        else:
            await produce_at(bootstrap, topics.requests, records)
        scores = await prediction_scores(bootstrap, topics, REQUESTS)
        want = expected_online(sent, scores, settings)
        online = await wait_until_online_matches(settings, want, worker)
        log = await logged(settings, REQUESTS)
        training = training_frame(settings)
        outcome = Outcome(sent, scores, online, training, log, settings)
        await enrich(bootstrap, topics, outcome, suffix)
        return outcome
    finally:
        worker.stop()
        await app.stop()


async def wait_for_some_rows(settings: FeatureSettings, timeout_s: float = 120) -> None:
    """Mid-stream: the worker has written features for some entities (so it has state to lose)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await read_online(settings)
        if sum(1 for v in got.values() if isinstance(v, dict) and v["requests_300s"] is not None) >= 2:
            return
        await asyncio.sleep(0.3)
    raise AssertionError("the feature worker wrote nothing before it was to be killed")


async def enrich(bootstrap: str, topics: TopicSettings, outcome: Outcome, run: str) -> None:
    """Requests to the enriched model: each known entity, one unknown, one naming none."""
    outcome.online_at_enrichment = await asyncio.to_thread(
        OnlineFeatures(outcome.settings).read, ENTITIES, ENRICHED_FEATURES)
    records = []
    for n, entity in enumerate([*ENTITIES, "nobody", None]):
        request_id = f"{run}-enrich-{n}"
        parameters = {"entity_id": entity} if entity else None
        body = request_body(request_id, "input", np.array([[float(n)]], dtype=np.float32), parameters=parameters)
        records.append((request_id.encode(), body, [(h.REQUEST_ID, request_id.encode()), (h.MODEL_NAME, ENRICHED_MODEL.encode())]))
    await send(bootstrap, topics.requests, records)
    deadline = time.monotonic() + 60
    while len(outcome.enriched) + len(outcome.enrichment_dead_letters) < len(records):
        assert time.monotonic() < deadline, f"enrichment answered {outcome.enriched} {outcome.enrichment_dead_letters}"
        for record in await read_topic(bootstrap, topics.predictions, idle_s=0.3):
            prediction = decode_prediction(record.value)
            if prediction.model_name == ENRICHED_MODEL:
                outcome.enriched[prediction.id] = float(prediction.outputs[0].data[0])
        for record in await read_topic(bootstrap, topics.deadletter, idle_s=0.3):
            errors = read_error_headers(record.headers)
            outcome.enrichment_dead_letters[str(errors.get("request_id"))] = f"{errors['reason']}: {errors['message']}"


SCENARIOS = [("tansu", "sqlite"), ("tansu", "redis"), ("apache_kafka", "sqlite")]
# Restarts run on Apache Kafka: recovering a Faust table reads its changelog up to the end offset
# the broker reports, and the embedded broker reports the start of the last record batch + 1, so
# a worker restarted against it would miss the tail of its changelogs (see the README).
RESTARTS = [("apache_kafka", "sqlite"), ("apache_kafka", "redis")]


def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, kill: bool) -> Outcome:
    broker_name, store = request.param
    broker = request.getfixturevalue(broker_name)
    request.getfixturevalue("ray_dashboard")
    repo = request.getfixturevalue("model_repo")
    write_enriched_model(repo, ENRICHED_FEATURES)
    redis = request.getfixturevalue("redis_server") if store == "redis" else None
    tmp = tmp_path_factory.mktemp(f"features-{store}")
    settings = feature_settings(tmp, store, redis)
    init_repository(settings)
    kafka = KafkaSettings(bootstrap=broker.bootstrap, group_id=f"test-{uuid.uuid4().hex[:8]}",
                          session_timeout_ms=6000, heartbeat_interval_ms=500, rebalance_timeout_ms=6000)
    return asyncio.run(run_scenario(broker.bootstrap, kafka, repo, settings, tmp, kill_mid_stream=kill))


@pytest.fixture(scope="module", params=SCENARIOS, ids=["tansu-sqlite", "tansu-redis", "kafka-sqlite"])
def streamed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return scenario(request, tmp_path_factory, kill=False)


@pytest.fixture(scope="module", params=RESTARTS, ids=["kafka-sqlite", "kafka-redis"])
def restarted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return scenario(request, tmp_path_factory, kill=True)


def assert_point_in_time(outcome: Outcome) -> None:
    """Each logged prediction gets the features as of its entity's latest request before it."""
    spec = window_spec(outcome.settings)
    training = outcome.training
    assert len(training) == REQUESTS
    by_id = {s.request_id: s for s in outcome.sent}
    for row in training.itertuples(index=False):
        sent = by_id[row.request_id]
        earlier = [(ts, score) for ts, score in outcome.events(sent.entity) if ts < sent.ts_ms]
        if not earlier:
            assert np.isnan(row.requests_300s) or row.requests_300s is None, row
            continue
        want = features_as_of(earlier, spec, max(ts for ts, _ in earlier))
        for name, value in want.items():
            assert getattr(row, name) == pytest.approx(value, rel=1e-6), (row.request_id, name)


def test_online_features_equal_the_aggregates_recomputed_from_the_stream(streamed: Outcome):
    assert matches(streamed.online, expected_online(streamed.sent, streamed.scores, streamed.settings))


def test_a_training_join_gives_each_prediction_the_features_as_they_were_when_it_was_made(streamed: Outcome):
    assert_point_in_time(streamed)


def test_the_prediction_log_holds_the_exact_inputs_and_score_of_every_prediction(streamed: Outcome):
    log = streamed.log.set_index("request_id")
    for sent in streamed.sent:
        entry = log.loc[sent.request_id]
        [tensor] = json.loads(entry["inputs"])
        assert tensor["data"] == pytest.approx(sent.row, rel=0, abs=0)
        assert entry["score"] == pytest.approx(streamed.scores[sent.request_id])
        assert entry["entity_id"] == sent.entity and entry["model"] == "breast-cancer"


def test_enrichment_adds_an_entity_s_online_features_and_dead_letters_a_missing_entity(streamed: Outcome):
    run = streamed.sent[0].request_id.rsplit("-", 1)[0]
    for n, entity in enumerate(ENTITIES):
        features = streamed.online_at_enrichment[entity]
        want = np.float32(n) + np.float32(features["requests_60s"]) + np.float32(features["mean_score_60s"])
        assert streamed.enriched[f"{run}-enrich-{n}"] == pytest.approx(float(want), rel=1e-6)
    assert streamed.enrichment_dead_letters == {
        f"{run}-enrich-8": "feature_missing: entity 'nobody' has no entity_stats:requests_60s, "
                           "entity_stats:mean_score_60s in the online feature store",
        f"{run}-enrich-9": "feature_missing: model entity-sum needs an entity: set parameters.entity_id",
    }


def test_a_feature_worker_killed_mid_stream_and_restarted_neither_loses_nor_double_counts(restarted: Outcome):
    assert matches(restarted.online, expected_online(restarted.sent, restarted.scores, restarted.settings))
    assert_point_in_time(restarted)


def same_partition_ids(prefix: str, partitions: int) -> tuple[str, str]:
    """Two request ids the default partitioner puts on one partition: every hop of the app keys
    by request id or by their shared entity, so the first one's records precede the second's
    everywhere, and the second's features being written means the first's were handled before."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner, every = DefaultPartitioner(), list(range(partitions))
    by_partition: dict[int, list[str]] = {}
    for n in range(1000):
        request_id = f"{prefix}-{n}"
        ids = by_partition.setdefault(partitioner(request_id.encode(), every, every), [])
        ids.append(request_id)
        if len(ids) == 2:
            return ids[0], ids[1]
    raise AssertionError("no two ids on one partition")


def synthetic_pair(request_id: str, entity: str, ts_ms: int, score: float) -> list[tuple[str, bytes, bytes, list, int]]:
    """A request naming ``entity`` and its prediction, as (topic kind, key, value, headers, time)."""
    from streaminfer.schemas.codec import Prediction, ResponseTensor, encode

    key = request_id.encode()
    body = request_body(request_id, "input", np.array([[1.0]], dtype=np.float32), parameters={"entity_id": entity})
    prediction = encode(Prediction(request_id, "m", "1", [ResponseTensor("probabilities", [1, 2], "FP64", [1 - score, score])]))
    return [("requests", key, body, [(h.REQUEST_ID, key)], ts_ms), ("predictions", key, prediction, [], ts_ms)]


async def produce_in_transaction(bootstrap: str, topics: TopicSettings, records: list, commit: bool) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        await producer.begin_transaction()
        for kind, key, value, headers, ts in records:
            topic = topics.requests if kind == "requests" else topics.predictions
            await producer.send_and_wait(topic, value=value, key=key, headers=headers, timestamp_ms=ts, partition=0)
        await (producer.commit_transaction() if commit else producer.abort_transaction())
    finally:
        await producer.stop()


def test_a_read_committed_feature_worker_counts_committed_requests_and_not_aborted_ones(apache_kafka, tmp_path):
    """What the pipeline answers in exactly-once mode reaches the worker in transactions: an
    aborted one (a zombie's, a failed commit's) must count for nothing."""
    settings = feature_settings(tmp_path, "sqlite", None)
    init_repository(settings)
    suffix = settings.app_id.rsplit("-", 1)[1]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}")
    kafka = KafkaSettings(bootstrap=apache_kafka.bootstrap, group_id=f"test-{suffix}", isolation_level="read_committed",
                          session_timeout_ms=6000, heartbeat_interval_ms=500, rebalance_timeout_ms=6000)
    aborted, committed = same_partition_ids(suffix, topics.partitions)
    entity, now = f"customer-{suffix}", int(time.time() * 1000)

    async def scenario() -> dict[str, Any]:
        from streaminfer.streams.features.worker import prepare_topics

        await prepare_topics(kafka, topics, settings)
        await produce_in_transaction(apache_kafka.bootstrap, topics, synthetic_pair(aborted, entity, now - 2_000, 0.1), commit=False)
        await produce_in_transaction(apache_kafka.bootstrap, topics, synthetic_pair(committed, entity, now - 1_000, 0.75), commit=True)
        with FeatureWorker(kafka, topics, settings, tmp_path / "worker.log"):
            log = await logged(settings, 1)
            assert set(log["request_id"]) == {committed}
            reader, deadline = OnlineFeatures(settings), time.monotonic() + 60
            while (got := await asyncio.to_thread(reader.read, [entity], stats_features(settings)))[entity]["requests_60s"] is None:
                assert time.monotonic() < deadline, "the committed request's features never reached the online store"
                await asyncio.sleep(0.5)
            return got[entity]

    assert asyncio.run(scenario()) == {"requests_60s": 1, "mean_score_60s": pytest.approx(0.75),
                                       "requests_300s": 1, "mean_score_300s": pytest.approx(0.75)}
