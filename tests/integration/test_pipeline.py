"""The consume → infer → produce path against real brokers, real Ray and real ONNX Runtime."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import ray

from streaminfer.demo.model import DEMO_MODEL, DEMO_VERSION, INPUT_NAME, demo_data
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import decode_prediction, request_body
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.workers.execution.runtime import ModelRuntime
from streaminfer.workers.settings import RuntimeSettings
from tests.support.harness import Collector, app_settings, ends, send, started
from tests.support.models import LOOKUP_MODEL, LOOKUP_TABLE


def demo_records(rows: np.ndarray, count: int, prefix: str, first: int = 0) -> list:
    out = []
    for n in range(first, first + count):
        request_id = f"{prefix}-{n}"
        body = request_body(request_id, INPUT_NAME, rows[n % len(rows)][np.newaxis, :])
        out.append((request_id.encode(), body, [(h.MODEL_NAME, DEMO_MODEL.encode()), (h.REQUEST_ID, request_id.encode())]))
    return out


async def test_every_valid_request_gets_one_prediction_equal_to_direct_onnx(
    kafka_settings, topics, model_repo, ray_dashboard
):
    rows = demo_data().x_test
    count = 5000
    settings = app_settings(kafka_settings, topics, model_repo)
    app = await started(settings)
    try:
        async with Collector(kafka_settings.bootstrap, topics) as collector:
            sent = await send(kafka_settings.bootstrap, topics.requests, demo_records(rows, count, "ok"))
            await collector.until(lambda c: c.total >= count)
            collected = await collector.caught_up(kafka_settings, sent)
    finally:
        await app.stop()

    assert collected.dead_letters == []
    ids = collected.ids(collected.predictions)
    assert set(ids) == {f"ok-{n}" for n in range(count)}
    assert max(ids.values()) == 1, "each request id exactly once"

    expected = ModelRuntime(model_repo.resolve(DEMO_MODEL).model_path, RuntimeSettings()).run({INPUT_NAME: rows})
    for record in collected.predictions:
        prediction = decode_prediction(record.value)
        n = int(prediction.id.split("-")[1]) % len(rows)
        outputs = {o.name: np.asarray(o.data) for o in prediction.outputs}
        assert outputs["label"][0] == expected["label"][n]
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"][n], atol=1e-5)
        assert record.key == prediction.id.encode(), "a prediction keeps the request's key"
        assert (prediction.model_name, prediction.model_version) == (DEMO_MODEL, "1.0.0")


#: A 2 KB record nested 1,000 levels deep in ``parameters``: msgspec raises RecursionError on it,
#: which once stopped a consumer for good (its offset was never committed, so a restart read it again).
DEEPLY_NESTED = (
    '{"id": "deep", "parameters": {"x": ' + "[" * 1000 + "1" + "]" * 1000 + '}, "inputs": [{"name": "input", '
    '"shape": [1, 30], "datatype": "FP32", "data": [' + ",".join(["14"] * 30) + "]}]}"
).encode()


def _mixed_stream(rows: np.ndarray) -> tuple[list, dict[str, str | None]]:
    """Good and bad records interleaved; returns the records and each id's expected reason."""
    good_demo = lambda i: request_body(f"m-{i}", INPUT_NAME, rows[i][np.newaxis, :])  # noqa: E731
    lookup = lambda i, index: json.dumps(  # noqa: E731  (a plain JSON client, not our codec)
        {"id": f"m-{i}", "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [index, 0]}]}
    ).encode()
    past = str(int(time.time() * 1000) - 60_000).encode()
    future = str(int(time.time() * 1000) + 600_000).encode()
    cases: list[tuple[bytes, list, str | None]] = [
        (b"{not json", [], "invalid_json"),
        (b'{"inputs": "not a list"}', [], "schema_violation"),
        (DEEPLY_NESTED, [], "schema_violation"),
        (b'{"id": "x", "inputs": [{"name": "input", "shape": [1, 29], "datatype": "FP32", "data": ' + json.dumps([0.0] * 29).encode() + b"}]}", [], "wrong_shape_or_dtype"),
        (b'{"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": ' + json.dumps([0.0] * 30).encode() + b"}]}", [], "wrong_shape_or_dtype"),
        (None, [(h.MODEL_NAME, b"no-such-model")], "unknown_model"),
        ("lookup-bad", [(h.MODEL_NAME, LOOKUP_MODEL.encode())], "inference_error"),
        (None, [(h.DEADLINE_MS, past)], "deadline_exceeded"),
        (None, [(h.DEADLINE_MS, future)], None),
        ("lookup-good", [(h.MODEL_NAME, LOOKUP_MODEL.encode())], None),
        (None, [], None),
    ]
    records, expected = [], {}
    for i in range(300):
        value, headers, reason = cases[i % len(cases)]
        if value is None:
            value = good_demo(i % len(rows))
        elif value == "lookup-bad":
            value = lookup(i, 99)
        elif value == "lookup-good":
            value = lookup(i, i % len(LOOKUP_TABLE))
        request_id = f"m-{i}"
        records.append((request_id.encode(), value, [(h.REQUEST_ID, request_id.encode()), *headers]))
        expected[request_id] = reason
    return records, expected


async def test_mixed_stream_sends_each_bad_record_to_dead_letters_with_its_reason(
    kafka_settings, topics, model_repo, ray_dashboard
):
    rows = demo_data().x_test
    records, expected = _mixed_stream(rows)
    settings = app_settings(kafka_settings, topics, model_repo, models=(LOOKUP_MODEL,))
    app = await started(settings)
    try:
        async with Collector(kafka_settings.bootstrap, topics) as collector:
            sent = await send(kafka_settings.bootstrap, topics.requests, records)
            await collector.until(lambda c: c.total >= len(records))
            collected = await collector.caught_up(kafka_settings, sent)
    finally:
        await app.stop()

    assert len(collected.predictions) + len(collected.dead_letters) == len(records)
    originals = {k.decode(): (v, hs) for k, v, hs in records}
    for record in collected.dead_letters:
        meta = read_error_headers(record.headers)
        request_id = record.key.decode()
        assert meta["reason"] == expected[request_id], (request_id, meta)
        value, headers = originals[request_id]
        assert record.value == value, "the original bytes are kept"
        assert list(record.headers)[: len(headers)] == headers, "the original headers come first, unchanged"
        assert meta["topic"] == topics.requests and meta["offset"] >= 0 and meta["message"]
    predicted = {r.key.decode() for r in collected.predictions}
    assert predicted == {rid for rid, reason in expected.items() if reason is None}


@pytest.mark.kafka_semantics
@pytest.mark.parametrize("consumers", [0, 2], ids=["worker-pool-actor", "consumer-actor"])
async def test_killed_actor_mid_stream_loses_no_request(consumers, kafka_settings, topics, model_repo, ray_dashboard):
    """Kill a pool actor (driver shape) or a consuming actor (default shape) while requests flow."""
    rows = demo_data().x_test
    count = 5000
    settings = app_settings(kafka_settings, topics, model_repo, consumers=consumers)
    app = await started(settings)
    victim_name = app.names[0] if consumers else f"{DEMO_MODEL}-{DEMO_VERSION}-0"  # type: ignore[attr-defined]
    victim = ray.get_actor(victim_name, namespace=settings.pool.namespace)
    try:
        async with Collector(kafka_settings.bootstrap, topics) as collector:
            sender = asyncio.create_task(send(kafka_settings.bootstrap, topics.requests, demo_records(rows, count, "k")))
            await collector.until(lambda c: c.total >= 200)
            ray.kill(victim, no_restart=False)
            sent = await sender
            await collector.until(lambda c: len(c.unique_ids()) >= count)
            collected = await collector.caught_up(kafka_settings, sent)
    finally:
        await app.stop()

    ids = collected.ids(collected.predictions)
    assert set(ids) == {f"k-{n}" for n in range(count)}
    assert collected.dead_letters == []
    duplicates = sum(n - 1 for n in ids.values())
    print(f"duplicates after killing a {'consumer' if consumers else 'worker pool'} actor: {duplicates}")


@pytest.mark.kafka_semantics
async def test_restarted_pipeline_resumes_from_committed_offsets(kafka_settings, topics, model_repo, ray_dashboard):
    rows = demo_data().x_test
    first, second = demo_records(rows, 3000, "r")[:1500], demo_records(rows, 3000, "r")[1500:]
    settings = app_settings(kafka_settings, topics, model_repo)
    async with Collector(kafka_settings.bootstrap, topics) as collector:
        app = await started(settings)
        sent_first = await send(kafka_settings.bootstrap, topics.requests, first)
        await collector.until(lambda c: c.total >= 500)
        await app.stop()
        sent_second = await send(kafka_settings.bootstrap, topics.requests, second)
        app = await started(settings)
        try:
            await collector.until(lambda c: len(c.unique_ids()) >= 3000)
            collected = await collector.caught_up(kafka_settings, ends(sent_first, sent_second))
        finally:
            await app.stop()

    ids = collected.ids(collected.predictions)
    assert set(ids) == {f"r-{n}" for n in range(3000)}
    assert max(ids.values()) == 1, "a clean stop commits what it answered, so nothing is answered twice"


@pytest.mark.kafka_semantics
async def test_two_pipelines_in_one_group_share_the_partitions_and_answer_each_request_once(
    kafka_settings, topics, model_repo, ray_dashboard
):
    rows = demo_data().x_test
    count = 4000
    first = app_settings(kafka_settings, topics, model_repo, pool_size=1, consumers=0)
    second = app_settings(kafka_settings, topics, model_repo, pool_size=1, consumers=0)
    async with Collector(kafka_settings.bootstrap, topics) as collector:
        app_a = await started(first)
        try:
            sent_first = await send(kafka_settings.bootstrap, topics.requests, demo_records(rows, count // 2, "s"))
            await collector.until(lambda c: c.total >= 200)
            app_b = await started(second)  # joins the group mid-stream: a rebalance under load
            try:
                sent_second = await send(kafka_settings.bootstrap, topics.requests, demo_records(rows, count, "s")[count // 2 :])
                await collector.until(lambda c: len(c.unique_ids()) >= count)
                collected = await collector.caught_up(kafka_settings, ends(sent_first, sent_second))
                assigned_b = app_b.pipeline.assignment()
            finally:
                await app_b.stop()
        finally:
            await app_a.stop()

    ids = collected.ids(collected.predictions)
    assert set(ids) == {f"s-{n}" for n in range(count)}
    assert assigned_b, "the second pipeline got partitions of its own"
    assert max(ids.values()) == 1, "revoked partitions are drained and committed before they move"
