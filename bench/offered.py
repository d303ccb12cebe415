"""The fixed-rate load, in a process of its own: generator and collector off the harness's cores.

    python -m bench.offered PLAN.json RESULT.json

Every system is offered the same rates (``bench.runner.offered_rates``): a request stream at each
rate for ``seconds``, the answers collected from the end of the answer topic as they come. The
process writes, per rate, p50/p99 end to end (request produced → answer consumed, both clocks
here), how many were answered, and how far the generator fell behind its schedule (where it did,
the rate offered was lower than stated). The Kafka connection comes from the harness's clients
file (``bench.connection``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from bench.connection import read_connection
from bench.load import Collector, open_loop, payloads
from streaminfer.process import tune_gc_for_streaming

IDLE_S = 10.0
"""A step ends once nothing new was answered for this long (what is missing then is lost)."""


WARM_UP_COUNT, WARM_UP_RATE = 200, 500.0
GC_GEN0_THRESHOLD = 50_000


def answer_key(kind: str):
    if kind == "mlserver":
        from bench.mlserver_peer import MLServerPeer

        return MLServerPeer.answer_key
    return lambda key, value: key.decode() if key else None


async def offer(plan: dict) -> list[dict]:
    clients = read_connection().clients()
    rows = np.load(plan["rows"])
    headers = [(name, value.encode()) for name, value in plan["headers"]]
    collector = Collector(clients, plan["answers"], answer_key(plan["answer_key"]), from_end=True)
    producer = clients.producer(linger_ms=0, max_batch_size=512 * 1024)
    await collector.start()
    await producer.start()
    steps = []
    try:
        # a short warm-up, not reported: connections, metadata and the system's first batches
        warm = payloads(rows, f"{plan['prefix']}-warm", WARM_UP_COUNT, headers)
        await open_loop(producer, plan["requests"], warm, WARM_UP_RATE, {})
        await collector.wait_for([k.decode() for k, _, _ in warm], timeout_s=60, idle_s=IDLE_S)
        for rate in plan["rates"]:
            count = max(50, int(rate * plan["seconds"]))
            batch = payloads(rows, f"{plan['prefix']}-{int(rate)}", count, headers)
            tune_gc_for_streaming(GC_GEN0_THRESHOLD)  # the payloads are frozen: no collection walks them mid-step
            sent_at: dict[str, float] = {}
            sent = await open_loop(producer, plan["requests"], batch, rate, sent_at)
            keys = [k.decode() for k, _, _ in batch]
            await collector.wait_for(keys, timeout_s=plan.get("timeout_s", 120), idle_s=IDLE_S)
            latencies = [(collector.received_at[k][0] - sent_at[k]) * 1000 for k in keys if k in collector.received_at]
            steps.append({
                "rate": rate, "sent": len(keys), "answered": len(latencies),
                "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
                "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
                "generator_lag_p99_ms": sent.lag_p99_ms, "generator_lag_max_ms": sent.lag_max_ms,
            })
    finally:
        await producer.stop()
        await collector.stop()
    return steps


def main(argv: list[str]) -> None:
    plan_path, result_path = argv
    steps = asyncio.run(offer(json.loads(Path(plan_path).read_text())))
    Path(result_path).write_text(json.dumps(steps))


if __name__ == "__main__":
    main(sys.argv[1:])
