"""Outages of what the system calls out to, each down for ``env.outage_s`` while the stream goes on:

- ``webhook_receiver_outage``: notifications keep arriving on the alert outbox (as the rules
  consumer writes them) while the receiver refuses connections; ledger by notification id, as
  the receiver counted them (every ``Idempotency-Key`` that reached it);
- ``feature_store_outage``: Redis, the Feast online store, stopped under an enriched model's
  requests and started again; each request ends predicted, or dead-lettered as a retriable
  ``feature_store_unavailable`` that ``streaminfer deadletters replay`` then turns into a
  prediction; ledger by request id, predictions only;
- ``feature_sink_store_outage``: the same outage under the feature sink; ledger by feature row,
  as the online store holds them afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import numpy as np
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streaminfer.monitoring.alerting.receivers import DeliverySettings, ReceiverConfig
from streaminfer.monitoring.observability.metrics import FeatureSinkMetrics
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.schemas.notifications import encode_alerting
from streaminfer.streams.alerting.webhooks import WebhookDelivery
from streaminfer.streams.clients import ensure_topic_names
from streaminfer.streams.features.online import OnlineFeatures
from streaminfer.streams.features.records import FeatureRow, encode
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.sink import FeastWriter, FeatureSink
from streaminfer.streams.features.store import STATS_VIEW, init_repository, open_store, window_spec
from tests.integration.faults.ledger import Guarantee, LedgerReport, ledger
from tests.integration.faults.process_env import (
    ProcessEnv,
    answers,
    fresh_topics,
    isolation,
    kafka_for,
    pipeline_for,
    wait_until,
)
from tests.integration.faults.process_redis import PersistentRedis
from tests.integration.faults.process_stream import Feed, LiveAnswers, Recovery, ids_of
from tests.integration.test_deadletter_replay import ENTITIES, FEATURES, push_features, request_ends
from tests.support.features import feature_settings
from tests.support.harness import Collector, Record, app_settings, started
from tests.support.models import ENRICHED_MODEL, write_enriched_model
from tests.support.receiver import WebhookReceiver
from tests.support.webhook_delivery import notification

SECRET = "fault-suite-secret"


def outage_rate(env: ProcessEnv, requests: int) -> int:
    """At most ``env.rate_per_s``, and slow enough that the stream outlasts the outage."""
    return max(1, min(env.rate_per_s, int(requests / (env.lead_s + env.outage_s + 5))))


def at_least_once_only(scenario: str, guarantee: Guarantee) -> None:
    if guarantee != "at_least_once":
        raise ValueError(f"{scenario} is at-least-once whatever the pipeline's guarantee; got {guarantee!r}")


# the webhook receiver ------------------------------------------------------------------------


async def webhook_receiver_outage(env: ProcessEnv, requests: int, guarantee: Guarantee) -> LedgerReport:
    """Notifications for one receiver, written to the outbox at a steady rate by a plain producer
    (as the rules consumer writes them), delivered by the webhook delivery worker; the receiver
    stops listening for ``env.outage_s`` (connection refused) and comes back on the same port."""
    at_least_once_only("webhook_receiver_outage", guarantee)
    kafka = kafka_for(env, "webhook")
    suffix = uuid.uuid4().hex[:8]
    outbox, deadletter = f"alerts-outbox-{suffix}", f"alerts-deadletter-{suffix}"
    await ensure_topic_names(kafka, [outbox, deadletter], 4, 1)
    sent = [notification("ops", n) for n in range(requests)]
    records: list[Record] = [(b"ops", encode_alerting(n), []) for n in sent]
    ids = [n.id for n in sent]
    recovery = Recovery()
    settings = DeliverySettings(initial_backoff_s=0.1, commit_interval_ms=100, stop_grace_s=0.5)
    async with WebhookReceiver(SECRET) as receiver:
        config = ReceiverConfig(name="ops", url=receiver.url, secret=SecretStr(SECRET), timeout_s=2.0, max_backoff_s=1.0)
        async with WebhookDelivery(kafka, outbox, deadletter, kafka.group_id, [config], settings):
            feed = await Feed(kafka.bootstrap, outbox, records, outage_rate(env, requests)).start()
            try:
                await asyncio.sleep(env.lead_s)
                await receiver.down()
                await asyncio.sleep(env.outage_s)
                await receiver.up()
                recovery.fault_ended(feed.sent_count())
                await feed.finish()
            finally:
                await feed.close()
            await wait_until(lambda: len(receiver.by_idempotency_key()) >= requests, env.answer_timeout_s)
            await asyncio.sleep(0.5)  # a repeat in flight shows up within this
    first: dict[str, float] = {}
    for got in receiver.received:
        if got.idempotency_key is not None:
            first.setdefault(got.idempotency_key, got.arrived)
    return ledger(f"webhook receiver down {env.outage_s:g} s", guarantee, ids,
                  Counter(receiver.by_idempotency_key()), recovery.seconds(ids, first))


# the online store under the pipeline ---------------------------------------------------------


def enriched_stream(requests: int) -> list[Record]:
    run = uuid.uuid4().hex[:6]
    out: list[Record] = []
    for n in range(requests):
        request_id = f"fs-{run}-{n}"
        body = request_body(request_id, "input", np.array([[float(n % 1000)]], dtype=np.float32),
                            parameters={"entity_id": ENTITIES[n % len(ENTITIES)]})
        out.append((request_id.encode(), body, [(h.REQUEST_ID, request_id.encode()), (h.MODEL_NAME, ENRICHED_MODEL.encode())]))
    return out


def replay(bootstrap: str, requests_topic: str, deadletter_topic: str, guarantee: Guarantee, reason: str) -> str:
    """``streaminfer deadletters replay --reason <reason>`` as its own process, as an operator runs
    it; its output. In exactly-once mode it reads the dead letters ``read_committed``."""
    env = {
        **os.environ, "STREAMINFER_TOPICS__REQUESTS": requests_topic, "STREAMINFER_TOPICS__DEADLETTER": deadletter_topic,
        "STREAMINFER_PIPELINE__GUARANTEE": guarantee,
    }
    done = subprocess.run(
        [sys.executable, "-m", "streaminfer.cli", "deadletters", "replay", "--bootstrap", bootstrap, "--reason", reason],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"deadletters replay exited {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


async def feature_store_outage(env: ProcessEnv, requests: int, guarantee: Guarantee) -> LedgerReport:
    """Requests for a model enriched from the online store; Redis stopped for ``env.outage_s`` and
    started again with its data. Afterwards the ``feature_store_unavailable`` dead letters are
    replayed once; a request counts as answered by its prediction only (a dead letter with another
    reason, or one replay does not fix, leaves it missing)."""
    redis = PersistentRedis(env.workdir / f"redis-{uuid.uuid4().hex[:6]}").start()
    kafka, topics = kafka_for(env, "store"), fresh_topics()
    try:
        features = feature_settings(env.workdir / f"store-{uuid.uuid4().hex[:6]}", "redis", redis)  # type: ignore[arg-type]
        await asyncio.to_thread(init_repository, features)
        await asyncio.to_thread(push_features, features)
        write_enriched_model(env.repository, FEATURES)
        settings = app_settings(kafka, topics, env.repository, models=(ENRICHED_MODEL,), pipeline=pipeline_for(guarantee))
        records = enriched_stream(requests)
        app = await started(settings.model_copy(update={"features": features}))
        recovery = Recovery()
        try:
            async with Collector(kafka.bootstrap, topics, isolation_level=isolation(guarantee)) as collector:
                live = LiveAnswers(collector).start()
                feed = await Feed(kafka.bootstrap, topics.requests, records, outage_rate(env, requests)).start()
                try:
                    await asyncio.sleep(env.lead_s)
                    await asyncio.to_thread(redis.stop)
                    await asyncio.sleep(env.outage_s)
                    await asyncio.to_thread(redis.start)
                    recovery.fault_ended(feed.sent_count())
                    sent = await feed.finish()
                    first = await answers(env, live, collector, kafka, sent, requests)
                finally:
                    await feed.close()
                    await live.close()
            output = await asyncio.to_thread(replay, kafka.bootstrap, topics.requests, topics.deadletter, guarantee,
                                             "feature_store_unavailable")
            ends = await request_ends(kafka.bootstrap, topics.requests)
            async with Collector(kafka.bootstrap, topics, isolation_level=isolation(guarantee)) as collector:
                collected = await collector.caught_up(kafka, ends, timeout_s=max(60.0, env.answer_timeout_s))
        finally:
            await app.stop()
    finally:
        redis.stop()
    dead = [read_error_headers(d.headers) for d in first.dead_letters]
    not_retriable = [d for d in dead if (d["reason"], d.get("retriable")) != ("feature_store_unavailable", True)]
    ids = ids_of(records)
    predicted = collected.ids(collected.predictions)
    report = ledger(f"feature store (Redis) down {env.outage_s:g} s, then deadletters replay", guarantee, ids,
                    predicted, recovery.seconds(ids, live.first_answer))
    print(f"{report.scenario}: {len(dead)} dead letters before the replay ({len(not_retriable)} not retriable "
          f"feature_store_unavailable: {Counter(d['reason'] for d in not_retriable)}); replay: {output.strip().splitlines()[-1]}")
    return dataclasses.replace(report, dead_lettered=len({d.key for d in first.dead_letters}))


# the online store under the feature sink -----------------------------------------------------


def feature_rows(settings: FeatureSettings, count: int) -> list[Record]:
    """One row per entity ``row-<run>-<n>`` whose ``requests_<step>s`` is ``n``: the online store
    afterwards shows exactly which rows were written."""
    run, now_ms = uuid.uuid4().hex[:6], int(time.time() * 1000)
    first = window_spec(settings).feature_names()[0]
    out: list[Record] = []
    for n in range(count):
        row = FeatureRow(f"row-{run}-{n}", now_ms, now_ms * 1000 + n, True, {first: float(n)})
        out.append((row.entity.encode(), encode(row), []))
    return out


async def feature_sink_store_outage(env: ProcessEnv, requests: int, guarantee: Guarantee) -> LedgerReport:
    """Feature rows streamed to the sink (as the feature app produces them) while Redis is down for
    ``env.outage_s``; rows the sink gave up on (``feature_write_failed`` dead letters) are replayed
    to its rows topic once with ``deadletters replay``. A row counts as answered when the online
    store holds it; as duplicated when the sink wrote it more than once. Time to recover: from the
    store's return until the sink has written (or dead-lettered) as many rows as had been sent then:
    it reads each partition in order, so that is the backlog the outage left."""
    at_least_once_only("feature_sink_store_outage", guarantee)
    redis = PersistentRedis(env.workdir / f"redis-{uuid.uuid4().hex[:6]}").start()
    kafka = kafka_for(env, "sink")
    try:
        settings = feature_settings(env.workdir / f"sink-{uuid.uuid4().hex[:6]}", "redis", redis)  # type: ignore[arg-type]
        await asyncio.to_thread(init_repository, settings)
        await ensure_topic_names(kafka, settings.topics.all(), 4, 1)
        registry = CollectorRegistry()
        store = await asyncio.to_thread(open_store, settings)
        sink = FeatureSink(kafka, settings, FeastWriter(store, settings), FeatureSinkMetrics(registry))
        records = feature_rows(settings, requests)
        dead = lambda: int(registry.get_sample_value("streaminfer_feature_dead_letters_total", {"view": STATS_VIEW}) or 0)  # noqa: E731
        task = asyncio.create_task(sink.run(), name="feature-sink")
        try:
            feed = await Feed(kafka.bootstrap, settings.topics.rows, records, outage_rate(env, requests)).start()
            try:
                await asyncio.sleep(env.lead_s)
                await asyncio.to_thread(redis.stop)
                await asyncio.sleep(env.outage_s)
                await asyncio.to_thread(redis.start)
                back, backlog = time.monotonic(), feed.sent_count()
                handled = lambda: sink.written["rows"] + dead() >= backlog or task.done()  # noqa: E731
                recover_s = time.monotonic() - back if await wait_until(handled, env.answer_timeout_s) else None
                await feed.finish()
            finally:
                await feed.close()
            await wait_until(lambda: sink.written["rows"] + dead() >= requests or task.done(), env.answer_timeout_s)
            gave_up = dead()
            if gave_up:
                await asyncio.to_thread(replay, kafka.bootstrap, settings.topics.rows, settings.topics.deadletter,
                                        guarantee, "feature_write_failed")
                await wait_until(lambda: sink.written["rows"] >= requests or task.done(), env.answer_timeout_s)
        finally:
            sink.stop()
            await task
        entities = ids_of(records)
        online = await asyncio.to_thread(_online_values, settings, entities)
    finally:
        redis.stop()
    first = window_spec(settings).feature_names()[0]
    held = Counter({entity: 1 for n, entity in enumerate(entities) if online.get(entity, {}).get(first) == n})
    report = ledger(f"feature sink, Redis down {env.outage_s:g} s", guarantee, entities, held, recover_s)
    return dataclasses.replace(report, duplicated=max(0, sink.written["rows"] - report.answered),
                               dead_lettered=gave_up)


def _online_values(settings: FeatureSettings, entities: list[str]) -> dict[str, dict[str, object]]:
    reader, first = OnlineFeatures(settings), window_spec(settings).feature_names()[0]
    values: dict[str, dict[str, object]] = {}
    for start in range(0, len(entities), 1000):
        values |= reader.read(entities[start : start + 1000], [f"{STATS_VIEW}:{first}"])
    return values
