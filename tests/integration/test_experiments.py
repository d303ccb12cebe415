"""Model lifecycle under live traffic on real brokers, Ray and ONNX Runtime: promote and
rollback, a sticky A/B split, a shadow, and canaries gated by the experiment controller (one
rolled back with an alert delivered to a real webhook receiver, one promoted)."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections import Counter

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.experiments.splits import check_split
from streaminfer.monitoring.settings import AlertingSettings, AlertTopics, ExperimentSettings, MonitorTopics
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import decode_prediction, request_body
from streaminfer.schemas.deadletter import headers_dict, read_error_headers
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.registry import PRODUCTION, ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.traffic import Arm, Canary, Shadow, TrafficPolicy, assign, save_policy
from tests.support.harness import Collector, app_settings, send, started
from tests.support.models import EXPERIMENT_MODEL, write_table_model
from tests.support.receiver import WebhookReceiver

SECRET = "experiments-" + uuid.uuid4().hex
POLL_S = 0.2
KEYS = 400


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    """A repository of its own: these tests move aliases and write policies."""
    repository = ModelRepository(tmp_path / "models")
    write_table_model(repository, "1.0.0")
    write_table_model(repository, "1.1.0", flipped=frozenset({1, 2}))  # answers differ on indices 1 and 2
    write_table_model(repository, "1.2.0-broken", size=80)  # fails on indices 80..99: a fifth of them
    registry = ModelRegistry(repository)
    registry.promote(EXPERIMENT_MODEL, "1.0.0", who="test")
    return registry


def settings_for(kafka: KafkaSettings, topics: TopicSettings, registry: ModelRegistry, **extra):
    pipeline = PipelineSettings(default_model=EXPERIMENT_MODEL, routing_poll_s=POLL_S)
    return app_settings(kafka, topics, registry.repository, pipeline=pipeline, **extra)


def index_of(n: int) -> int:
    """The table index request ``n`` asks for: every index equally often, and one key sees many."""
    return (37 * n + n // KEYS) % 100


def requests(start: int, count: int) -> list[tuple[bytes, bytes, list]]:
    """Request ``n`` has key ``user-(n % KEYS)`` and asks for ``index_of(n)``."""
    return [
        (f"user-{n % KEYS}".encode(),
         request_body(f"r-{n}", "input", np.array([[index_of(n), 0]], dtype=np.float32)),
         [(h.MODEL_NAME, EXPERIMENT_MODEL.encode())])
        for n in range(start, start + count)
    ]


async def send_paced(kafka: KafkaSettings, topic: str, start: int, count: int, per_s: float,
                     sent_at: dict[str, float]) -> None:
    chunk = 50
    for first in range(start, start + count, chunk):
        records = requests(first, min(chunk, start + count - first))
        for n in range(first, first + len(records)):
            sent_at[f"r-{n}"] = time.monotonic()
        await send(kafka.bootstrap, topic, records)
        await asyncio.sleep(chunk / per_s)


def answered(collected) -> set[str]:
    """Request ids that ended as a prediction or a dead letter (whose id is in its error headers)."""
    return {header(r, h.REQUEST_ID) for r in collected.predictions} | {
        str(read_error_headers(r.headers).get("request_id")) for r in collected.dead_letters}


def header(record: ConsumerRecord, name: str) -> str:
    value = headers_dict(record.headers).get(name)
    return value.decode() if value is not None else ""


async def read_all(bootstrap: str, topic: str, until, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=20)
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records):
            assert time.monotonic() < deadline, f"timed out with {len(records)} records on {topic}"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.kafka_semantics
async def test_promote_and_rollback_under_live_traffic_lose_and_fail_nothing(kafka_settings, topics, registry, ray_dashboard):
    count, rate = 6000, 1000.0
    sent_at: dict[str, float] = {}
    app = await started(settings_for(kafka_settings, topics, registry))
    try:
        async with Collector(kafka_settings.bootstrap, topics) as collector:
            sender = asyncio.create_task(send_paced(kafka_settings, topics.requests, 0, count, rate, sent_at))
            await asyncio.sleep(2.0)
            promoted_at = time.monotonic()
            registry.promote(EXPERIMENT_MODEL, "1.1.0", who="test", why="live swap")
            await asyncio.sleep(2.0)
            rolled_back_at = time.monotonic()
            registry.rollback(EXPERIMENT_MODEL, who="test", why="live swap back")
            await sender
            collected = await collector.until(lambda c: len(answered(c)) >= count)
            await collector.settle()
    finally:
        await app.stop()

    assert collected.dead_letters == [], "no request failed during a swap"
    versions = {header(r, h.REQUEST_ID): header(r, h.MODEL_VERSION) for r in collected.predictions}
    assert set(versions) == {f"r-{n}" for n in range(count)}, "no request lost"
    settle = 1.0  # the routing poll plus the batches already fetched
    between = [v for rid, v in versions.items() if promoted_at + settle < sent_at[rid] < rolled_back_at]
    after = [v for rid, v in versions.items() if sent_at[rid] > rolled_back_at + settle]
    before = [v for rid, v in versions.items() if sent_at[rid] < promoted_at]
    assert set(before) == {"1.0.0"} and set(between) == {"1.1.0"} and set(after) == {"1.0.0"}
    assert [e.action for e in registry.history(EXPERIMENT_MODEL)] == ["promote", "promote", "rollback"]


@pytest.mark.kafka_semantics
async def test_a_split_is_sticky_per_key_across_processes_and_restarts(kafka_settings, topics, registry, ray_dashboard):
    arms = (Arm("control", PRODUCTION, 50), Arm("b", "1.1.0", 50))
    save_policy(registry.repository.root / EXPERIMENT_MODEL, TrafficPolicy("ab-1", arms=arms))
    collected = []
    for round_ in range(2):  # the second round runs on freshly started actors
        app = await started(settings_for(kafka_settings, topics, registry))
        try:
            async with Collector(kafka_settings.bootstrap, topics) as collector:
                await send(kafka_settings.bootstrap, topics.requests, requests(round_ * 2000, 2000))
                got = await collector.until(lambda c, n=(round_ + 1) * 2000: len(answered(c)) >= n)
        finally:
            await app.stop()
        collected = got.predictions

    arm_of_key: dict[bytes, set[str]] = {}
    for record in collected:
        arm = header(record, h.ARM)
        assert header(record, h.EXPERIMENT) == "ab-1"
        assert arm == assign(arms, record.key, "ab-1").name, "the consumers' hash is the one computed here"
        assert header(record, h.MODEL_VERSION) == {"control": "1.0.0", "b": "1.1.0"}[arm]
        arm_of_key.setdefault(record.key, set()).add(arm)
    assert len(arm_of_key) == KEYS and all(len(a) == 1 for a in arm_of_key.values()), "one arm per key"
    keys_by_arm = Counter(next(iter(arms_)) for arms_ in arm_of_key.values())
    assert not check_split(dict(keys_by_arm), {"control": 50, "b": 50}).mismatch


async def test_shadow_outputs_go_to_the_shadow_topic_and_never_to_clients(kafka_settings, topics, registry, ray_dashboard):
    policy = TrafficPolicy("shadow-1", shadow=Shadow("1.2.0-broken", share=1.0))
    save_policy(registry.repository.root / EXPERIMENT_MODEL, policy)
    count = 1000
    app = await started(settings_for(kafka_settings, topics, registry))
    try:
        async with Collector(kafka_settings.bootstrap, topics) as collector:
            await send(kafka_settings.bootstrap, topics.requests, requests(0, count))
            collected = await collector.until(lambda c: len(answered(c)) >= count)
            shadows = await read_all(kafka_settings.bootstrap, topics.shadow, lambda rs: len(rs) >= count)
            await collector.settle()
    finally:
        await app.stop()

    assert collected.dead_letters == [], "a failing shadow fails no request"
    assert {header(r, h.MODEL_VERSION) for r in collected.predictions} == {"1.0.0"}
    assert {decode_prediction(r.value).model_version for r in collected.predictions} == {"1.0.0"}
    assert {header(r, h.REQUEST_ID) for r in shadows} == {f"r-{n}" for n in range(count)}
    assert {header(r, h.MODEL_VERSION) for r in shadows} == {"1.2.0-broken"}
    assert {header(r, h.ARM) for r in shadows} == {"shadow"}
    failed = [r for r in shadows if header(r, h.SHADOW_ERROR)]
    assert {header(r, h.SHADOW_ERROR) for r in failed} == {"inference_error"}
    assert len(failed) == sum(index_of(n) >= 80 for n in range(count)), "indices 80..99 fail on the broken shadow"


def canary_rules(tmp_path, url: str):
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(f"""
        receivers:
          - name: team
            url: {url}
            secret_env: TEST_TEAM_SECRET
            max_backoff_s: 2
        route:
          receiver: team
          group_by: [alertname, model]
          group_wait_s: 0
          group_interval_s: 1
          repeat_interval_s: 3600
        evaluation_interval_s: 0.25
        rules:
          - name: CanaryRolledBack
            signal: experiment_rollback
            by: [model, version, experiment, gate]
            reduce: count
            window_s: 3600
            op: ">="
            value: 1
            severity: critical
            annotations:
              summary: "canary {{experiment}}: {{model}} {{version}} was rolled back by its {{gate}} gate"
    """))
    return path


def controller_settings(tmp_path, suffix: str) -> dict:
    return {
        "experiments": ExperimentSettings(group_id=f"ex-{suffix}", look_interval_s=0.5, snapshots_dir=tmp_path / "exp"),
    }


async def test_a_canary_failing_a_fifth_of_its_requests_is_rolled_back_and_alerts(
    kafka_settings, topics, registry, ray_dashboard, tmp_path, monkeypatch
):
    suffix = uuid.uuid4().hex[:8]
    canary = Canary(control=PRODUCTION, candidate="1.2.0-broken", steps=(10.0, 50.0, 100.0), min_requests=100)
    save_policy(registry.repository.root / EXPERIMENT_MODEL, TrafficPolicy("canary-bad", canary=canary))
    monkeypatch.setenv("TEST_TEAM_SECRET", SECRET)
    async with WebhookReceiver(SECRET) as receiver:
        settings = settings_for(kafka_settings, topics, registry, **controller_settings(tmp_path, suffix))
        settings = settings.model_copy(update={
            "monitor": settings.monitor.model_copy(update={"topics": MonitorTopics(
                labels=f"lb-{suffix}", drift=f"dr-{suffix}", metrics=f"mt-{suffix}")}),
            "alerting": AlertingSettings(
                rules_file=canary_rules(tmp_path, receiver.url), group_id=f"al-{suffix}", delivery_group_id=f"dv-{suffix}",
                checkpoint_dir=tmp_path / "alerting",
                topics=AlertTopics(silences=f"si-{suffix}", outbox=f"ob-{suffix}", deadletter=f"adl-{suffix}")),
        })
        sent_at: dict[str, float] = {}
        app = await started(settings)
        try:
            async with Collector(kafka_settings.bootstrap, topics) as collector:
                sender = asyncio.create_task(send_paced(kafka_settings, topics.requests, 0, 8000, 1000.0, sent_at))
                await receiver.until(lambda r: any(r.json["alerts"] for r in r.received), timeout_s=60)
                await sender
                await collector.until(lambda c: len(answered(c)) >= 8000)
                await collector.settle()
                actions = (await app.experiments.describe.remote()).detail["actions"]  # type: ignore[union-attr]
        finally:
            await app.stop()

    alert = receiver.received[0].json["alerts"][0]
    assert alert["labels"]["alertname"] == "CanaryRolledBack" and alert["labels"]["gate"] == "error_rate"
    assert alert["labels"]["version"] == "1.2.0-broken"
    assert [(a[2], a[3]) for a in actions] == [("rollback", "error_rate")]
    rolled_back_s = actions[0][0] / 1000
    # once every consumer has polled the new policy, the candidate serves nothing more
    late = [r for r in collector.collected.predictions if header(r, h.MODEL_VERSION) == "1.2.0-broken"] + [
        r for r in collector.collected.dead_letters if read_error_headers(r.headers).get("version") == "1.2.0-broken"]
    assert late, "the candidate served some requests before it was rolled back"
    last_candidate_s = max((r.timestamp for r in late), default=0) / 1000
    assert last_candidate_s < rolled_back_s + 2.0
    policy_text = (registry.repository.root / EXPERIMENT_MODEL / "traffic.json").read_text()
    assert '"rolled-back"' in policy_text and "error_rate" in policy_text
    assert registry.history(EXPERIMENT_MODEL)[-1].action == "canary-rollback"
    assert registry.production(EXPERIMENT_MODEL) == "1.0.0"


async def test_a_healthy_canary_reaches_every_step_and_is_promoted(kafka_settings, topics, registry, ray_dashboard, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    canary = Canary(control=PRODUCTION, candidate="1.1.0", steps=(10.0, 50.0, 100.0), min_requests=100)
    save_policy(registry.repository.root / EXPERIMENT_MODEL, TrafficPolicy("canary-good", canary=canary))
    settings = settings_for(kafka_settings, topics, registry, **controller_settings(tmp_path, suffix))
    settings = settings.model_copy(update={"monitor": settings.monitor.model_copy(update={"topics": MonitorTopics(
        labels=f"lb-{suffix}", drift=f"dr-{suffix}", metrics=f"mt-{suffix}")})})
    sent_at: dict[str, float] = {}
    app = await started(settings)
    try:
        sender = asyncio.create_task(send_paced(kafka_settings, topics.requests, 0, 20_000, 1000.0, sent_at))
        deadline = time.monotonic() + 60
        while registry.production(EXPERIMENT_MODEL) != "1.1.0":
            assert time.monotonic() < deadline, f"canary stuck: {[e.detail for e in registry.history(EXPERIMENT_MODEL)]}"
            await asyncio.sleep(0.5)
        sender.cancel()
        actions = (await app.experiments.describe.remote()).detail["actions"]  # type: ignore[union-attr]
    finally:
        await app.stop()
    assert [a[2] for a in actions] == ["advance", "advance", "complete"]
    trail = [e.action for e in registry.history(EXPERIMENT_MODEL)]
    assert trail[-4:] == ["canary-step", "canary-step", "promote", "canary-complete"]
    assert (tmp_path / "exp" / "canary-good.jsonl").is_file()
