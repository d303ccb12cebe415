"""Dead letters replayed once their cause has passed: the online feature store (Redis) goes down,
an enriched model's requests become retriable ``feature_store_unavailable`` dead letters, the
store comes back, and ``streaminfer deadletters replay`` turns each of them into one prediction;
in exactly-once mode (Apache Kafka) none is answered twice as a ``read_committed`` reader sees it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner

from streaminfer.cli.main import app as cli
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.streams.clients import partition_counts
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import (
    CREATED,
    ENTITY_KEY,
    STATS_PUSH,
    TIMESTAMP,
    init_repository,
    open_store,
    stats_schema,
)
from streaminfer.streams.settings import KafkaSettings, PipelineSettings
from tests.support.features import RedisServer, feature_settings
from tests.support.harness import Collector, app_settings, send, started
from tests.support.models import ENRICHED_MODEL, write_enriched_model

FEATURES = ["entity_stats:requests_60s", "entity_stats:mean_score_60s"]
ENTITIES = [f"e{n}" for n in range(5)]
COUNT = 20


def push_features(settings: FeatureSettings) -> None:
    """Every entity's stats row in the online store, as the feature worker would write it."""
    from feast.data_source import PushMode

    now = datetime.now(timezone.utc)
    rows = []
    for n, entity in enumerate(ENTITIES):
        row: dict[str, object] = {ENTITY_KEY: entity, TIMESTAMP: now, CREATED: now}
        for field in stats_schema(settings):
            if field.name not in row:
                row[field.name] = n if field.name.startswith("requests_") else 0.5
        rows.append(row)
    open_store(settings).push(STATS_PUSH, pd.DataFrame(rows), to=PushMode.ONLINE)


def requests(run: str) -> list:
    out = []
    for n in range(COUNT):
        request_id = f"{run}-{n}"
        body = request_body(request_id, "input", np.array([[float(n)]], dtype=np.float32),
                            parameters={"entity_id": ENTITIES[n % len(ENTITIES)]})
        out.append((request_id.encode(), body, [(h.REQUEST_ID, request_id.encode()), (h.MODEL_NAME, ENRICHED_MODEL.encode())]))
    return out


async def request_ends(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Where each partition of the requests topic ends now, replays included (read, not asked:
    the embedded broker's end offsets stop at its last batch's base offset + 1)."""
    counts = await partition_counts_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(counts)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        last: dict[TopicPartition, int] = {}
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                last[tp] = records[-1].offset + 1
        return last
    finally:
        await consumer.stop()


async def partition_counts_of(bootstrap: str, topic: str) -> int:
    from streaminfer.streams.settings import KafkaSettings

    return (await partition_counts(KafkaSettings(bootstrap=bootstrap), [topic]))[topic]


def replay(bootstrap: str, topics, *options: str, guarantee: str = "at_least_once"):
    """The CLI as an operator runs it next to the pipeline: in exactly-once mode it reads the dead
    letters ``read_committed`` (one of an aborted transaction must not be replayed)."""
    env = {"STREAMINFER_TOPICS__REQUESTS": topics.requests, "STREAMINFER_TOPICS__DEADLETTER": topics.deadletter,
           "STREAMINFER_PIPELINE__GUARANTEE": guarantee}
    return CliRunner().invoke(cli, ["deadletters", "replay", "--bootstrap", bootstrap, *options], env=env)


async def test_dead_letters_of_a_store_outage_each_become_one_prediction_when_replayed_and_a_second_replay_is_capped(
    kafka_settings, topics, model_repo, ray_dashboard, tmp_path
):
    await replayed_store_outage(kafka_settings, topics, model_repo, tmp_path, PipelineSettings())


async def test_in_exactly_once_mode_no_replayed_dead_letter_is_answered_twice_for_read_committed_readers(
    apache_kafka, topics, model_repo, ray_dashboard, tmp_path
):
    kafka = KafkaSettings(bootstrap=apache_kafka.bootstrap, group_id=f"test-{uuid.uuid4().hex[:8]}",
                          session_timeout_ms=6000, heartbeat_interval_ms=500, rebalance_timeout_ms=6000)
    await replayed_store_outage(kafka, topics, model_repo, tmp_path,
                                PipelineSettings(guarantee="exactly_once", transaction_interval_ms=100))


async def replayed_store_outage(kafka_settings: KafkaSettings, topics, model_repo, tmp_path, pipeline: PipelineSettings) -> None:
    """The store goes down, its dead letters are replayed once it is back, then replayed again
    with ``--max-replays 1``: each ends as one prediction, the second replay sends nothing."""
    guarantee = pipeline.guarantee
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    redis = RedisServer()
    settings = feature_settings(tmp_path, "redis", redis)
    init_repository(settings)
    await asyncio.to_thread(push_features, settings)
    write_enriched_model(model_repo, FEATURES)
    config = app_settings(kafka_settings, topics, model_repo, models=(ENRICHED_MODEL,), consumers=0, pipeline=pipeline)
    app = await started(config.model_copy(update={"features": settings}))
    run = uuid.uuid4().hex[:8]
    try:
        redis.stop()  # the online store goes down
        await send(kafka_settings.bootstrap, topics.requests, requests(run))
        async with Collector(kafka_settings.bootstrap, topics, isolation_level=isolation) as collector:
            down = await collector.until(lambda c: len(c.dead_letters) >= COUNT)
        reasons = [read_error_headers(d.headers) for d in down.dead_letters]
        assert {(r["reason"], r["retriable"]) for r in reasons} == {("feature_store_unavailable", True)}
        assert down.predictions == []

        redis = RedisServer(port=redis.port)  # the store comes back, restored
        await asyncio.to_thread(push_features, settings)
        result = await asyncio.to_thread(replay, kafka_settings.bootstrap, topics, "--reason", "feature_store_unavailable",
                                         guarantee=guarantee)
        assert result.exit_code == 0, result.output
        assert f"replayed {COUNT} dead letters" in result.output

        sent = await request_ends(kafka_settings.bootstrap, topics.requests)
        async with Collector(kafka_settings.bootstrap, topics, isolation_level=isolation) as collector:
            collected = await collector.caught_up(kafka_settings, sent)

        again = await asyncio.to_thread(replay, kafka_settings.bootstrap, topics, "--reason",
                                        "feature_store_unavailable", "--max-replays", "1", guarantee=guarantee)
        assert again.exit_code == 0, again.output
        assert f"{COUNT} selected dead letters were already replayed 1 times" in again.output
        assert "replayed 0 dead letters" in again.output
        assert await request_ends(kafka_settings.bootstrap, topics.requests) == sent, "nothing sent the second time"
    finally:
        await app.stop()
        redis.stop()

    ids = collected.ids(collected.predictions)
    assert ids == {f"{run}-{n}": 1 for n in range(COUNT)}, "each dead letter became exactly one prediction"
    assert len(collected.dead_letters) == COUNT, "no new dead letters"
