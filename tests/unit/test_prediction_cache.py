"""The prediction cache: bounded LRU with a TTL, answers marked cached, versions and arms apart.

Why: a cache that served one version's answer after a rollback, or a shadow's output to a client,
would be silently wrong; one that grew without bound would take the consumer down. Fakes of the
pool and the served models go through the seams ``ModelBatchers`` takes.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import Prediction, ResponseTensor, encode
from streaminfer.schemas.headers import RequestHeaders
from streaminfer.streams.clock import ManualClock
from streaminfer.streams.pipeline.answers import answer, shadow_answer
from streaminfer.streams.pipeline.cache import BoundedTtlCache, CachedPrediction, VersionCache, input_digest
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.streams.pipeline.version_batchers import ModelBatchers
from streaminfer.streams.settings import PipelineSettings, TopicSettings
from streaminfer.workers.errors import CachePolicyInvalid
from streaminfer.workers.models.caching import CachePolicy, check_cache
from streaminfer.workers.routing.served import Route

TOPICS = TopicSettings()
POLICY = CachePolicy(max_entries=100, max_bytes=1_000_000, ttl_s=60.0)


def tensor(value: float) -> list[ResponseTensor]:
    return [ResponseTensor("y", [1], "FP32", [value])]


def encoded(value: float) -> bytes:
    return msgspec.json.encode(tensor(value))


def outputs_of(prediction: Prediction) -> list[ResponseTensor]:
    """What a consumer of the predictions topic reads (a cached answer holds its outputs encoded)."""
    return msgspec.json.decode(encode(prediction), type=Prediction).outputs


class FakePool:
    """Doubles its input; counts the rows it computed."""

    def __init__(self) -> None:
        self.rows = 0

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rows += len(inputs["x"])
        return {"y": inputs["x"][:, 0] * 2}

    async def describe(self) -> list[dict[str, object]]:
        return [{"providers": ["CPUExecutionProvider"], "pid": os.getpid()}]

    async def stop(self) -> None:
        pass


def served(version: str, policy: CachePolicy | None = POLICY) -> SimpleNamespace:
    entry = SimpleNamespace(name="m", version=version, masking=None, metadata=SimpleNamespace(cache=policy))
    return SimpleNamespace(entry=entry, pool=FakePool(), key=("m", version))


def request(value: float, version: SimpleNamespace, arm: str = "", request_id: str = "r",
            shadow: SimpleNamespace | None = None) -> Decoded:
    record = ConsumerRecord(TOPICS.requests, 0, 7, 1_700_000_000_000, 0, b"k", b"{}", None, 1, 2, [])
    route = Route(version, "exp" if arm else "", arm, shadow)  # type: ignore[arg-type]
    return Decoded(record, request_id, RequestHeaders(), route, {"x": np.array([[value]], np.float32)}, 1)


class FakeModels:
    """``ServedModels`` as the batchers see it: the versions served, and what a refresh retires."""

    def __init__(self, *versions: SimpleNamespace) -> None:
        self.versions = list(versions)
        self.retire_next: list[SimpleNamespace] = []

    def all(self) -> list[SimpleNamespace]:
        return self.versions

    async def refresh(self) -> list[SimpleNamespace]:
        retired, self.retire_next = self.retire_next, []
        return retired


def sample(metrics: PipelineMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metrics() -> PipelineMetrics:
    return PipelineMetrics(CollectorRegistry())


# the bounded map ------------------------------------------------------------------------------

def test_the_least_recently_used_answer_goes_first_when_entries_are_full():
    evicted: list[tuple[str, int]] = []
    cache = BoundedTtlCache(max_entries=2, max_bytes=1000, ttl_s=60, clock=ManualClock(),
                            evicted=lambda cause, n: evicted.append((cause, n)))
    cache.put("a", encoded(1), 10)
    cache.put("b", encoded(2), 10)
    assert cache.get("a") == encoded(1)  # a is now the most recently used
    cache.put("c", encoded(3), 10)
    assert cache.get("b") is None and cache.get("a") == encoded(1) and cache.get("c") == encoded(3)
    assert evicted == [("size", 1)] and len(cache) == 2 and cache.bytes == 20


def test_the_byte_bound_evicts_until_the_new_answer_fits_and_one_larger_than_it_is_never_kept():
    evicted: list[tuple[str, int]] = []
    cache = BoundedTtlCache(max_entries=100, max_bytes=100, ttl_s=60, clock=ManualClock(),
                            evicted=lambda cause, n: evicted.append((cause, n)))
    for key in "abc":
        cache.put(key, encoded(0), 40)
    assert cache.get("a") is None and cache.bytes == 80 and evicted == [("size", 1)]
    cache.put("huge", encoded(0), 101)
    assert cache.get("huge") is None and cache.bytes == 80


def test_an_answer_is_served_until_its_ttl_and_is_dropped_as_expired_after():
    clock = ManualClock()
    evicted: list[tuple[str, int]] = []
    cache = BoundedTtlCache(10, 1000, ttl_s=30, clock=clock, evicted=lambda cause, n: evicted.append((cause, n)))
    cache.put("a", encoded(1), 10)
    clock.advance(29.999)
    assert cache.get("a") == encoded(1)
    clock.advance(0.001)
    assert cache.get("a") is None and evicted == [("expired", 1)] and cache.bytes == 0


def test_the_key_hashes_dtype_shape_and_bytes_and_the_outputs_asked_for():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    same = np.asfortranarray(x)  # same values, another memory layout
    assert input_digest({"x": x}, None) == input_digest({"x": same}, None)
    assert input_digest({"x": x}, None) != input_digest({"x": x.reshape(3, 2)}, None)
    assert input_digest({"x": x}, None) != input_digest({"x": x.astype(np.float64)}, None)
    assert input_digest({"x": x}, None) != input_digest({"x": x}, frozenset({"y"}))


def test_only_a_model_declared_deterministic_may_cache():
    with pytest.raises(CachePolicyInvalid, match="only a deterministic model may cache"):
        check_cache(POLICY, deterministic=False, model="m", version="1")
    check_cache(POLICY, deterministic=True, model="m", version="1")


# one version's cache --------------------------------------------------------------------------

async def test_a_repeated_input_is_answered_from_the_cache_with_its_own_request_id(metrics):
    v1 = served("1")
    batchers = ModelBatchers(FakeModels(v1), PipelineSettings(max_wait_ms=0), metrics, 1, ManualClock())  # type: ignore[arg-type]
    batchers.start()
    first = await batchers.submit(v1, [request(1.0, v1, request_id="a"), request(2.0, v1, request_id="b")])  # type: ignore[arg-type]
    again = await batchers.submit(v1, [request(1.0, v1, request_id="c"), request(3.0, v1, request_id="d")])  # type: ignore[arg-type]
    await batchers.stop()
    assert [type(p) for p in first] == [Prediction, Prediction]
    assert type(again[0]) is CachedPrediction and again[0].id == "c" and outputs_of(again[0]) == first[0].outputs
    assert type(again[1]) is Prediction and v1.pool.rows == 3
    assert sample(metrics, "streaminfer_prediction_cache_hits_total", model="m", version="1", lane="primary") == 1
    assert sample(metrics, "streaminfer_prediction_cache_misses_total", model="m", version="1", lane="primary") == 3
    assert sample(metrics, "streaminfer_prediction_cache_bytes", model="m", version="1") > 0


async def test_a_model_without_a_cache_policy_gets_no_cache_and_no_cache_metrics(metrics):
    v1 = served("1", policy=None)
    batchers = ModelBatchers(FakeModels(v1), PipelineSettings(max_wait_ms=0), metrics, 1, ManualClock())  # type: ignore[arg-type]
    batchers.start()
    for _ in range(2):
        outcomes = await batchers.submit(v1, [request(1.0, v1)])  # type: ignore[arg-type]
        assert type(outcomes[0]) is Prediction
    await batchers.stop()
    assert v1.pool.rows == 2
    assert all(not m.name.startswith("streaminfer_prediction_cache") or not m.samples
               for m in metrics.registry.collect())


async def test_a_retired_version_s_cache_is_cleared_and_the_next_version_computes_its_own_answers(metrics):
    v1, v2 = served("1"), served("2")
    models = FakeModels(v1)
    batchers = ModelBatchers(models, PipelineSettings(max_wait_ms=0), metrics, 1, ManualClock())  # type: ignore[arg-type]
    batchers.start()
    await batchers.submit(v1, [request(1.0, v1)])  # type: ignore[arg-type]
    models.versions, models.retire_next = [v2], [v1]  # a promotion (or a rollback) to 2
    await batchers.refresh([])
    after = await batchers.submit(v2, [request(1.0, v2)])  # type: ignore[arg-type]
    await batchers.stop()
    assert type(after[0]) is Prediction and after[0].model_version == "2" and v2.pool.rows == 1
    assert sample(metrics, "streaminfer_prediction_cache_evictions_total", model="m", version="1", cause="cleared") == 1
    assert sample(metrics, "streaminfer_prediction_cache_bytes", model="m", version="1") == 0


async def test_experiment_arms_and_the_shadow_lane_never_read_each_other_s_answers(metrics):
    v1 = served("1")
    batchers = ModelBatchers(FakeModels(v1), PipelineSettings(max_wait_ms=0), metrics, 1, ManualClock())  # type: ignore[arg-type]
    batchers.start()
    await batchers.submit(v1, [request(1.0, v1, arm="a")])  # type: ignore[arg-type]
    other_arm = await batchers.submit(v1, [request(1.0, v1, arm="b")])  # type: ignore[arg-type]
    as_shadow = await batchers.submit(v1, [request(1.0, v1, arm="a")], shadow=True)  # type: ignore[arg-type]
    same_arm = await batchers.submit(v1, [request(1.0, v1, arm="a")])  # type: ignore[arg-type]
    shadow_again = await batchers.submit(v1, [request(1.0, v1, arm="b")], shadow=True)  # type: ignore[arg-type]
    await batchers.stop()
    assert [type(o[0]) for o in (other_arm, as_shadow, same_arm, shadow_again)] == [
        Prediction, Prediction, CachedPrediction, CachedPrediction]
    assert v1.pool.rows == 3
    for lane, hits in (("a", 1), ("b", 0), ("shadow", 1)):
        assert sample(metrics, "streaminfer_prediction_cache_hits_total", model="m", version="1", lane=lane) == hits


async def test_failures_are_not_cached(metrics):
    v1 = served("1")
    cache = VersionCache(v1.entry, POLICY, metrics, ManualClock())  # type: ignore[arg-type]
    failing = ValueError("boom")

    async def run(items: list[Decoded]) -> list[Prediction | BaseException]:
        return [failing] * len(items)

    for _ in range(2):
        assert await cache.submit([request(1.0, v1)], None, run) == [failing]
    assert len(cache) == 0


class FakeShared:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.ttls: list[float] = []
        self.closed = False

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.values.get(key) for key in keys]

    async def put_many(self, entries: list[tuple[str, bytes]], ttl_s: float) -> None:
        self.values.update(entries)
        self.ttls.append(ttl_s)

    async def close(self) -> None:
        self.closed = True


async def test_a_shared_cache_answers_what_another_consumer_computed(metrics):
    shared = FakeShared()
    policy = CachePolicy(ttl_s=5.0, shared=True)
    v1 = served("1", policy)
    computed = 0

    async def run(items: list[Decoded]) -> list[Prediction | BaseException]:
        nonlocal computed
        computed += len(items)
        return [Prediction(item.request_id, "m", "1", tensor(7)) for item in items]

    one = VersionCache(v1.entry, policy, metrics, ManualClock(), shared)  # type: ignore[arg-type]
    other = VersionCache(v1.entry, policy, PipelineMetrics(CollectorRegistry()), ManualClock(), shared)  # type: ignore[arg-type]
    await one.submit([request(1.0, v1)], None, run)
    (answer_of_other,) = await other.submit([request(1.0, v1, request_id="z")], None, run)
    assert computed == 1 and shared.ttls == [5.0]
    assert type(answer_of_other) is CachedPrediction and outputs_of(answer_of_other) == tensor(7)


async def test_stopping_the_batchers_closes_the_shared_store_they_were_given(metrics):
    shared = FakeShared()
    v1 = served("1", CachePolicy(ttl_s=5.0, shared=True))
    batchers = ModelBatchers(FakeModels(v1), PipelineSettings(max_wait_ms=0), metrics, 1, ManualClock(),  # type: ignore[arg-type]
                             shared_cache=shared)
    batchers.start()
    await batchers.submit(v1, [request(1.0, v1)])  # type: ignore[arg-type]
    assert not shared.closed
    await batchers.stop()
    assert shared.closed


# answers -------------------------------------------------------------------------------------

def test_a_cached_answer_carries_the_cached_header_and_a_computed_one_does_not():
    v1 = served("1")
    item = request(1.0, v1, arm="a")
    cached = answer(TOPICS, item, CachedPrediction("r", "m", "1", msgspec.Raw(encoded(2))))  # type: ignore[arg-type]
    computed = answer(TOPICS, item, Prediction("r", "m", "1", tensor(2)))
    assert dict(cached.headers)[h.CACHED] == b"true" and h.CACHED not in dict(computed.headers)
    assert dict(cached.headers)[h.ARM] == b"a" and cached.value == computed.value


def test_a_shadow_answer_from_the_cache_says_so_too():
    v1, shadow = served("1"), served("2")
    cached = CachedPrediction("r", "m", "2", msgspec.Raw(encoded(2)))  # type: ignore[arg-type]
    out = shadow_answer(TOPICS, request(1.0, v1, arm="a", shadow=shadow), cached)
    assert dict(out.headers)[h.CACHED] == b"true" and dict(out.headers)[h.ARM] == b"shadow"
