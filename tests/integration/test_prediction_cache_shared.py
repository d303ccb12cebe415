"""The shared prediction cache on a real Redis: one consumer's answer serves another's request,
entries expire with the policy's TTL, and a Redis that goes away only turns hits into misses.

Why: sharing is only worth having if a second consumer really finds the first one's answers; and
a cache must never be the reason a request fails.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry
from redis import asyncio as aioredis

from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.schemas.codec import Prediction, ResponseTensor
from streaminfer.schemas.headers import RequestHeaders
from streaminfer.streams.clock import ManualClock
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.pipeline.cache import CachedPrediction, VersionCache
from streaminfer.streams.pipeline.cache_shared import RedisStore, redis_options, shared_store
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.workers.models.caching import CachePolicy
from streaminfer.workers.routing.served import Route
from tests.support.features import RedisServer

pytestmark = pytest.mark.integration

POLICY = CachePolicy(ttl_s=1.0, shared=True)
ENTRY = SimpleNamespace(name="m", version=f"v{os.getpid()}")


def request(value: float, request_id: str) -> Decoded:
    record = ConsumerRecord("requests", 0, 0, 0, 0, b"k", b"{}", None, 1, 2, [])
    route = Route(SimpleNamespace(entry=ENTRY))  # type: ignore[arg-type]
    return Decoded(record, request_id, RequestHeaders(), route, {"x": np.array([[value]], np.float32)}, 1)


class Model:
    def __init__(self) -> None:
        self.rows = 0

    async def run(self, items: list[Decoded]) -> list[Prediction | BaseException]:
        self.rows += len(items)
        return [Prediction(i.request_id, "m", ENTRY.version, [ResponseTensor("y", [1], "FP32", [2.0])]) for i in items]


def consumer(store: RedisStore) -> VersionCache:
    return VersionCache(ENTRY, POLICY, PipelineMetrics(CollectorRegistry()), ManualClock(), store)  # type: ignore[arg-type]


@pytest.fixture
def redis():
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def settings(redis: RedisServer) -> FeatureSettings:
    return FeatureSettings(online_store="redis", redis_url=redis.url)


async def test_an_answer_computed_by_one_consumer_answers_the_same_input_on_another(redis):
    one_store, other_store = shared_store(settings(redis)), shared_store(settings(redis))
    assert one_store is not None and other_store is not None
    model = Model()
    try:
        await consumer(one_store).submit([request(1.0, "a")], None, model.run)
        (answer,) = await consumer(other_store).submit([request(1.0, "b")], None, model.run)
        (different,) = await consumer(other_store).submit([request(2.0, "c")], None, model.run)
    finally:
        await one_store.close()
        await other_store.close()
    assert type(answer) is CachedPrediction and answer.id == "b"
    assert type(different) is Prediction and model.rows == 2


async def test_shared_entries_expire_with_the_policy_s_ttl(redis):
    store = shared_store(settings(redis))
    assert store is not None
    reader = aioredis.Redis(**redis_options(settings(redis)))
    try:
        await store.put_many([("streaminfer:cache:test", b"[]")], ttl_s=POLICY.ttl_s)
        ttl_ms = await reader.pttl("streaminfer:cache:test")  # what Redis itself will do
    finally:
        await store.close()
        await reader.aclose()
    assert 0 < ttl_ms <= 1000


async def test_a_redis_that_is_gone_turns_shared_lookups_into_misses_not_failures(redis):
    store = shared_store(settings(redis))
    assert store is not None
    redis.stop()
    model = Model()
    try:
        outcomes = [await consumer(store).submit([request(1.0, f"r{n}")], None, model.run) for n in range(2)]
    finally:
        await store.close()
    assert [type(o[0]) for o in outcomes] == [Prediction, Prediction] and model.rows == 2


def test_without_redis_as_the_online_store_each_consumer_keeps_its_own():
    assert shared_store(FeatureSettings()) is None and shared_store(None) is None
