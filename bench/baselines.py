"""The hand-rolled consumers streaminfer is compared with, each run as its own process.

    python -m bench.baselines {passthrough,naive,microbatch} BOOTSTRAP IN OUT GROUP MODEL

- passthrough (limit B): consume → produce each record unchanged → commit; no inference.
- naive: what most people write first: per message, stdlib ``json``, one ``session.run`` on one
  row, ``send_and_wait``; offsets auto-committed.
- microbatch: ``getmany``, decode all, one ``session.run``, send all, wait, commit.

They read the same OIP requests as streaminfer and write OIP-shaped answers keyed like the
request, so the benchmark measures all systems with the same collector.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
import onnxruntime as ort
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def _consumer(bootstrap: str, topic: str, group: str, auto_commit: bool) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=auto_commit, fetch_max_wait_ms=10, max_partition_fetch_bytes=4 << 20,
    )


async def _started_clients(
    bootstrap: str, source: str, group: str, *, auto_commit: bool, linger_ms: int
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    consumer = _consumer(bootstrap, source, group, auto_commit=auto_commit)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await consumer.start()
    await producer.start()
    return consumer, producer


def _session(model_path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def _answer(request_id: str, label: int, probabilities: list[float]) -> bytes:
    return json.dumps({
        "id": request_id, "model_name": "breast-cancer", "model_version": "1.0.0",
        "outputs": [
            {"name": "label", "shape": [1], "datatype": "INT64", "data": [label]},
            {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": probabilities},
        ],
    }).encode()


async def passthrough(bootstrap: str, source: str, sink: str, group: str, model_path: str) -> None:
    consumer, producer = await _started_clients(bootstrap, source, group, auto_commit=False, linger_ms=2)
    while True:
        fetched = await consumer.getmany(timeout_ms=100, max_records=1024)
        futures = [
            await producer.send(sink, value=r.value, key=r.key, headers=list(r.headers))
            for records in fetched.values() for r in records
        ]
        if futures:
            await asyncio.gather(*futures)
            await consumer.commit()


async def naive(bootstrap: str, source: str, sink: str, group: str, model_path: str) -> None:
    session = _session(model_path)
    consumer, producer = await _started_clients(bootstrap, source, group, auto_commit=True, linger_ms=0)
    async for record in consumer:
        request = json.loads(record.value)
        tensor = request["inputs"][0]
        row = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        label, probabilities = session.run(None, {tensor["name"]: row})
        await producer.send_and_wait(
            sink, _answer(request["id"], int(label[0]), probabilities[0].tolist()), key=record.key
        )


async def microbatch(bootstrap: str, source: str, sink: str, group: str, model_path: str) -> None:
    session = _session(model_path)
    consumer, producer = await _started_clients(bootstrap, source, group, auto_commit=False, linger_ms=2)
    while True:
        fetched = await consumer.getmany(timeout_ms=100, max_records=1024)
        records = [r for batch in fetched.values() for r in batch]
        if not records:
            continue
        requests = [json.loads(r.value) for r in records]
        rows = np.asarray([q["inputs"][0]["data"] for q in requests], dtype=np.float32)
        labels, probabilities = session.run(None, {"input": rows})
        futures = [
            await producer.send(sink, _answer(q["id"], int(labels[i]), probabilities[i].tolist()), key=r.key)
            for i, (q, r) in enumerate(zip(requests, records))
        ]
        await asyncio.gather(*futures)
        await consumer.commit()


BASELINES = {"passthrough": passthrough, "naive": naive, "microbatch": microbatch}


def main(argv: list[str]) -> None:
    name, bootstrap, source, sink, group, model_path = argv
    asyncio.run(BASELINES[name](bootstrap, source, sink, group, model_path))


if __name__ == "__main__":
    main(sys.argv[1:])
