"""A privacy policy end to end: the demo model hashes ``entity_id`` and drops ``mean radius``.

The real pipeline (Ray, ONNX Runtime) answers requests that name customers, the feature worker
(a real process) logs them to Feast and aggregates per entity, the monitor computes drift windows
and accuracy, and bad requests become dead letters. Neither a customer id nor the dropped
feature's values reach the offline files, the online store, the drift reports or a dead letter;
the hashed entity still aggregates as the plain one would, and drift and accuracy are computed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, build_demo_model, demo_data
from streaminfer.loadgen import label_payloads
from streaminfer.monitoring.observability.metrics import MonitorMetrics
from streaminfer.monitoring.settings import MonitorSettings, MonitorTopics
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import decode_prediction, request_body
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.schemas.monitoring_events import decode_metric_event
from streaminfer.streams.features.online import OnlineFeatures
from streaminfer.streams.features.records import score_of
from streaminfer.streams.features.store import init_repository, stats_features, window_spec
from streaminfer.streams.features.training import prediction_log
from streaminfer.streams.monitor import Monitor
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.privacy import PrivacyPolicy, PrivacySettings, keyed_hash
from streaminfer.workers.models.repository import ModelRepository
from tests.support.features import FeatureWorker, feature_settings, features_as_of, read_topic
from tests.support.harness import app_settings, started

KEY = SecretStr("privacy-test-key")
DROPPED = "mean radius"
POLICY = PrivacyPolicy(features={DROPPED: "drop"}, parameters={"entity_id": "hash"})
ENTITIES = [f"customer-{n}" for n in range(4)]
REQUESTS = 120
STEP_MS = 2_000
MARK = 98765.4321  # the dropped feature's value in the bad requests: easy to look for


@pytest.fixture
def private_repo(tmp_path: Path) -> ModelRepository:
    repository = ModelRepository(tmp_path / "models", KEY)
    entry = build_demo_model(repository)
    repository.save_metadata(msgspec.structs.replace(entry.metadata, privacy=POLICY))
    return repository


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list, int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k, headers=hs, timestamp_ms=ts) for k, v, hs, ts in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def until(probe, what: str, timeout_s: float = 150):
    deadline = time.monotonic() + timeout_s
    while True:
        got = await probe()
        if got is not None:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(1)


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    return [f"{path}: {needle!r}" for path in root.rglob("*") if path.is_file()
            for needle in needles if needle in path.read_bytes()]


@pytest.mark.parametrize("bootstrap", ["tansu"], indirect=True)
async def test_a_hashed_entity_and_a_dropped_feature_never_reach_storage_while_features_drift_and_accuracy_work(
    bootstrap, kafka_settings: KafkaSettings, private_repo: ModelRepository, ray_dashboard, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}")
    features = feature_settings(tmp_path, "sqlite", None)
    init_repository(features)
    monitor_settings = MonitorSettings(
        topics=MonitorTopics(labels=f"labels-{suffix}", drift=f"drift-{suffix}", metrics=f"metrics-{suffix}"),
        group_id=f"monitor-{suffix}", checkpoint_dir=tmp_path / "checkpoint", reports_dir=tmp_path / "reports",
        checkpoint_interval_s=0.5, window_rows=50, window_min_rows=20,
    )
    config = app_settings(kafka_settings, topics, private_repo, consumers=1).model_copy(
        update={"features": features, "privacy": PrivacySettings(hash_key=KEY)})
    rows = demo_data().x_test
    base_ms = int(time.time() * 1000) - 10 * 60_000
    sent, records = [], []
    for n in range(REQUESTS):
        request_id, entity, ts = f"{suffix}-{n}", ENTITIES[n % len(ENTITIES)], base_ms + n * STEP_MS
        body = request_body(request_id, INPUT_NAME, rows[n % len(rows)][np.newaxis, :], parameters={"entity_id": entity})
        sent.append((request_id, entity, ts, rows[n % len(rows)]))
        records.append((request_id.encode(), body, [(h.REQUEST_ID, request_id.encode())], ts))
    bad_row = [MARK, *[1.0] * 29]
    bad = [  # a row too short for the model, and JSON cut short: both dead letters
        json.dumps({"id": f"{suffix}-bad-0", "parameters": {"entity_id": "customer-secret"},
                    "inputs": [{"name": INPUT_NAME, "shape": [1, 30], "datatype": "FP32", "data": bad_row[:29]}]}).encode(),
        json.dumps({"id": f"{suffix}-bad-1", "parameters": {"entity_id": "customer-secret"},
                    "inputs": [{"name": INPUT_NAME, "shape": [1, 30], "datatype": "FP32", "data": bad_row}]}).encode()[:-5],
    ]
    records += [(f"bad-{n}".encode(), body, [], base_ms + REQUESTS * STEP_MS) for n, body in enumerate(bad)]

    monkeypatch.setenv("STREAMINFER_MODEL_REPOSITORY", str(private_repo.root))
    monkeypatch.setenv("STREAMINFER_PRIVACY__HASH_KEY", KEY.get_secret_value())
    app = await started(config)
    worker = FeatureWorker(kafka_settings, topics, features, tmp_path / "worker.log").start()
    monitor = Monitor(kafka_settings, topics, monitor_settings, ModelRepository(private_repo.root), DEMO_MODEL,
                      MonitorMetrics(CollectorRegistry()))
    await monitor.start()
    try:
        await produce(bootstrap, topics.requests, records)

        async def all_answered():
            predictions = [decode_prediction(r.value) for r in await read_topic(bootstrap, topics.predictions, 0.5)]
            letters = await read_topic(bootstrap, topics.deadletter, 0.5)
            return (predictions, letters) if len(predictions) >= REQUESTS and len(letters) >= 2 else None

        predictions, letters = await until(all_answered, "every prediction and both dead letters")
        scores = {p.id: score_of(p) for p in predictions}
        labels = [n % 2 for n in range(len(sent))]
        await produce(bootstrap, monitor_settings.topics.labels,
                      [(p.key, p.value, p.headers, base_ms) for p in label_payloads([s[0] for s in sent], labels)])

        # dead letters: the masked request, or nothing, and a header saying so
        assert len(letters) == 2
        for letter in letters:
            assert (h.PRIVACY_MASKED, b"true") in letter.headers
            assert b"customer-secret" not in (letter.value or b"") and b"98765" not in (letter.value or b"")
        masked = [json.loads(letter.value) for letter in letters if letter.value is not None]
        assert [m["parameters"] for m in masked] == [{"entity_id": keyed_hash(KEY, "customer-secret")}]
        assert sorted(read_error_headers(letter.headers)["reason"] == "invalid_json" for letter in letters) == [False, True]

        # the hashed entity aggregates as the plain one would
        hashed = {e: keyed_hash(KEY, e) for e in ENTITIES}
        spec = window_spec(features)
        want = {}
        for entity in ENTITIES:
            events = [(ts, scores[rid]) for rid, e, ts, _ in sent if e == entity]
            want[hashed[entity]] = features_as_of(events, spec, max(ts for ts, _ in events))

        async def online_matches():
            try:
                got = await asyncio.to_thread(OnlineFeatures(features).read, list(want), stats_features(features))
            except Exception:  # noqa: BLE001 - the worker may be registering the views still
                return None
            ok = all(got.get(e, {}).get(k) is not None and got[e][k] == pytest.approx(v, rel=1e-6)
                     for e, values in want.items() for k, v in values.items())
            return got if ok else None

        await until(online_matches, f"online features of the hashed entities\n{worker.log_tail()}")
        plain = await asyncio.to_thread(OnlineFeatures(features).read, ENTITIES, stats_features(features))
        assert all(value is None for entity in ENTITIES for value in plain[entity].values())

        # the offline prediction log: hashed entities, inputs without the dropped column
        async def logged():
            try:
                log = prediction_log(features)
            except (OSError, ValueError):
                return None
            return log if len(log) >= REQUESTS else None

        log = (await until(logged, "the prediction log")).set_index("request_id")
        for rid, entity, _ts, row in sent:
            entry = log.loc[rid]
            [tensor] = json.loads(entry["inputs"])
            assert entry["entity_id"] == hashed[entity]
            assert tensor["shape"] == [1, 29] and tensor["data"] == pytest.approx([float(v) for v in row[1:]])

        # drift windows and accuracy are computed, the reports never name the dropped feature
        async def quality():
            events = await read_topic(bootstrap, monitor_settings.topics.metrics, 0.5)
            accuracy = [e for e in (decode_metric_event(r.value) for r in events) if e.metric == "accuracy"]
            reports = sorted((tmp_path / "reports").rglob("window-*.html"))
            return (accuracy, reports) if accuracy and len(reports) >= 2 else None

        accuracy, reports = await until(quality, "accuracy events and two drift reports")
        assert accuracy[-1].model == DEMO_MODEL and 0.0 <= accuracy[-1].value <= 1.0
        for report in reports:
            html = report.read_text(errors="replace")
            assert "mean texture" in html and DROPPED not in html
        await monitor.stop()
        assert files_holding(tmp_path / "reports", [DROPPED.encode()]) == []
        assert files_holding(tmp_path / "checkpoint", [DROPPED.encode()]) == []
        assert files_holding(features.repo_path, [e.encode() for e in ENTITIES] + [b"customer-secret", b"98765"]) == []
    finally:
        await monitor.stop()
        worker.stop()
        await app.stop()
