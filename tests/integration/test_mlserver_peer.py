"""The MLServer benchmark peer: installed in its own venv, started on the embedded broker, it
answers every request sent after ``start()`` returns with the labels ONNX Runtime gives directly."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.mlserver_peer import MLServerPeer, PeerUnavailable
from streaminfer.broker import EmbeddedBroker
from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, demo_data
from streaminfer.schemas.codec import request_body
from streaminfer.workers.models.repository import ModelRepository

PEER_HOME = Path.home() / ".cache" / "streaminfer" / "mlserver-1.7.1"
COUNT = 50


@pytest.fixture
def installed_peer(model_repo: ModelRepository) -> MLServerPeer:
    peer = MLServerPeer(PEER_HOME, model_repo.resolve(DEMO_MODEL).model_path, model_name=DEMO_MODEL)
    try:
        peer.ensure_installed()  # about 30 s the first time, instant afterwards
    except PeerUnavailable as exc:
        if exc.registry_unreachable:
            pytest.skip(f"MLServer cannot be installed without the package registry: {exc.detail}")
        raise
    return peer


async def _create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1) for name in names])
    finally:
        await admin.close()


async def test_mlserver_peer_answers_every_request_sent_after_start_with_direct_onnx_labels(
    installed_peer: MLServerPeer, tmp_path: Path
) -> None:
    peer = installed_peer
    rows = demo_data().x_test[:COUNT].astype(np.float32)
    session = ort.InferenceSession(str(peer.model_path), providers=["CPUExecutionProvider"])
    expected = session.run(["label"], {INPUT_NAME: rows})[0]
    suffix = uuid.uuid4().hex[:8]
    requests, answers = f"peer-requests-{suffix}", f"peer-answers-{suffix}"

    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        await _create_topics(broker.bootstrap, requests, answers)
        consumer = AIOKafkaConsumer(answers, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, fetch_max_wait_ms=10)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        await consumer.start()
        await producer.start()
        try:
            started = time.monotonic()
            await asyncio.to_thread(peer.start, broker.bootstrap, requests, answers)
            print(f"\nMLServer peer ready in {time.monotonic() - started:.1f} s (log: {peer.log_path})")

            sent = time.monotonic()
            for n in range(COUNT):
                request_id = f"req-{n}"
                body = request_body(request_id, INPUT_NAME, rows[n][np.newaxis, :])
                await producer.send(requests, body, key=request_id.encode(), headers=peer.request_headers())
            await producer.flush()

            labels: dict[str, int] = {}
            keys: dict[str, bytes | None] = {}
            while len(labels) < COUNT and time.monotonic() - sent < 60:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    for record in batch:
                        request_id = MLServerPeer.answer_key(record.key, record.value)
                        if request_id is not None:
                            labels[request_id] = _label(record.value)
                            keys[request_id] = record.key
            print(f"{len(labels)} answers in {time.monotonic() - sent:.2f} s")
        finally:
            await producer.stop()
            await consumer.stop()
            peer.stop()

    assert set(labels) == {f"req-{n}" for n in range(COUNT)}, f"missing: {COUNT - len(labels)}"
    assert [labels[f"req-{n}"] for n in range(COUNT)] == expected.tolist()
    assert all(keys[request_id] == request_id.encode() for request_id in labels), "MLServer keeps the key"


def _label(value: bytes) -> int:
    outputs = {output["name"]: output for output in json.loads(value)["outputs"]}
    return int(outputs["label"]["data"][0])
