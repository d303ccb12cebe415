"""The hand-rolled consumers streaminfer is compared with, each run as its own process.

    python -m bench.baselines {batch-passthrough,passthrough,naive,microbatch} IN OUT GROUP MODEL

The Kafka connection (bootstrap, TLS, SASL) comes from the file named by
``STREAMINFER_BENCH_CLIENTS_FILE`` (``bench.connection``), never from the command line.

- batch-passthrough (limit B): ``bench.passthrough``, the pipeline's fetch and produce path with
  no inference, and the garbage collector tuned as a pipeline process tunes it (which saves it a
  fifth of its CPU per record); run as several members of one group with ``bench.group``.
- passthrough (the former limit B, now a labelled baseline): consume → ``producer.send`` each
  record → commit; no inference.
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

from bench.connection import BenchConnection, read_connection
from bench.passthrough import BatchPassthrough
from streaminfer.process import tune_gc_for_streaming


async def _started_clients(
    connection: BenchConnection, source: str, group: str, *, auto_commit: bool, linger_ms: int
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """The hand-rolled baselines' clients: the settings' connection, their own few options."""
    clients = connection.clients()
    consumer = clients.consumer(source, group_id=group, enable_auto_commit=auto_commit, fetch_max_wait_ms=10)
    producer = clients.producer(linger_ms=linger_ms, acks=1, max_batch_size=16384)
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


async def batch_passthrough(connection: BenchConnection, source: str, sink: str, group: str, model_path: str) -> None:
    tune_gc_for_streaming(connection.pipeline.gc_threshold)  # a limit is the best the passthrough can do
    async with BatchPassthrough(connection.clients(), source, sink, group, connection.pipeline) as passthrough:
        await passthrough.run()


async def passthrough(connection: BenchConnection, source: str, sink: str, group: str, model_path: str) -> None:
    consumer, producer = await _started_clients(connection, source, group, auto_commit=False, linger_ms=2)
    while True:
        fetched = await consumer.getmany(timeout_ms=100, max_records=1024)
        futures = [
            await producer.send(sink, value=r.value, key=r.key, headers=list(r.headers))
            for records in fetched.values() for r in records
        ]
        if futures:
            await asyncio.gather(*futures)
            await consumer.commit()


async def naive(connection: BenchConnection, source: str, sink: str, group: str, model_path: str) -> None:
    session = _session(model_path)
    consumer, producer = await _started_clients(connection, source, group, auto_commit=True, linger_ms=0)
    async for record in consumer:
        request = json.loads(record.value)
        tensor = request["inputs"][0]
        row = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        label, probabilities = session.run(None, {tensor["name"]: row})
        await producer.send_and_wait(
            sink, _answer(request["id"], int(label[0]), probabilities[0].tolist()), key=record.key
        )


async def microbatch(connection: BenchConnection, source: str, sink: str, group: str, model_path: str) -> None:
    session = _session(model_path)
    consumer, producer = await _started_clients(connection, source, group, auto_commit=False, linger_ms=2)
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


BASELINES = {"batch-passthrough": batch_passthrough, "passthrough": passthrough, "naive": naive, "microbatch": microbatch}


def main(argv: list[str]) -> None:
    name, source, sink, group, model_path = argv
    asyncio.run(BASELINES[name](read_connection(), source, sink, group, model_path))


if __name__ == "__main__":
    main(sys.argv[1:])
