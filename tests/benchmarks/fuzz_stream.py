"""The fuzz suite at scale: a seeded stream of bad and good records through `streaminfer`'s pipeline
and monitor on the embedded broker, and the tally of how each ended.

    python tests/benchmarks/fuzz_stream.py [COUNT] [SEED]

COUNT (default 10,000) records from ``tests.support.fuzz.FuzzStream(SEED)`` are sent as one batch;
the script waits until every one has an outcome and the group has committed past them, then
prints, per mutation kind, how many ended as predictions and as each dead-letter reason, and
checks what the integration test checks: exactly one outcome per record, each one its content
allows, the consuming actors' memory growth, the monitor still reading. Exits 1 on a violation.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from streaminfer.broker import EmbeddedBroker
from streaminfer.demo.model import DEMO_MODEL, build_demo_model, demo_data
from streaminfer.monitoring.settings import MonitorSettings, MonitorTopics
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from tests.support.fuzz import FuzzStream
from tests.support.harness import Collector, app_settings, ends, send, started

WARM_UP = 1_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(bootstrap: str, count: int, seed: int) -> int:
    scratch = Path(tempfile.mkdtemp())
    repository = ModelRepository(scratch / "models")
    build_demo_model(repository)
    tag = uuid.uuid4().hex[:6]
    kafka = KafkaSettings(bootstrap=bootstrap)
    topics = TopicSettings(requests=f"fz-rq-{tag}", predictions=f"fz-pr-{tag}", deadletter=f"fz-dl-{tag}",
                           shadow=f"fz-sh-{tag}", health_reports=False)
    monitor = MonitorSettings(
        topics=MonitorTopics(labels=f"fz-l-{tag}", drift=f"fz-d-{tag}", metrics=f"fz-m-{tag}"), group_id=f"fz-mon-{tag}",
        checkpoint_dir=scratch / "checkpoint", reports_dir=scratch / "reports",
    )
    records = FuzzStream(seed, demo_data().x_test, DEMO_MODEL, oversized_bytes=80_000).records(count)
    settings = app_settings(kafka, topics, repository, monitor=monitor,
                            pipeline=PipelineSettings(max_request_bytes=64 * 1024))
    wire = [(r.key, r.value, r.headers) for r in records]
    app = await started(settings)
    began = time.perf_counter()
    try:
        pids = [int(d["pid"]) for d in await app.describe()]  # type: ignore[call-overload]
        async with Collector(bootstrap, topics) as collector:
            first = await send(bootstrap, topics.requests, wire[:WARM_UP])  # type: ignore[arg-type]
            await collector.until(lambda c: c.total >= WARM_UP, timeout_s=600)
            rss_warm = {pid: rss_mb(pid) for pid in pids}
            rest = await send(bootstrap, topics.requests, wire[WARM_UP:])  # type: ignore[arg-type]
            await collector.until(lambda c: c.total >= count, timeout_s=1800)
            elapsed = time.perf_counter() - began
            rss_end = {pid: rss_mb(pid) for pid in pids}
            collected = await collector.caught_up(kafka, ends(first, rest), timeout_s=600)
        assert app.monitor is not None
        deadline = time.monotonic() + 300
        while True:
            state = await app.monitor.describe.remote()
            read = state.detail["records"]
            if read.get("requests", 0) + read.get("skipped", 0) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        await app.stop()

    by_key = {r.key: r for r in records}
    outcomes: dict[bytes, list[str]] = defaultdict(list)
    for record in collected.predictions:
        outcomes[record.key].append("predicted")
    for record in collected.dead_letters:
        outcomes[record.key].append(str(read_error_headers(record.headers)["reason"]))
    per_kind: dict[str, Counter[str]] = defaultdict(Counter)
    problems = []
    for key, record in by_key.items():
        ended = outcomes.get(key, [])
        if len(ended) != 1:
            problems.append(f"{key.decode()} ({record.kind}): {len(ended)} outcomes {ended}")
            continue
        per_kind[record.kind][ended[0]] += 1
        if (None if ended[0] == "predicted" else ended[0]) not in record.allowed:
            problems.append(f"{key.decode()} ({record.kind}): {ended[0]} not allowed")
    extra = set(outcomes) - set(by_key)
    if extra:
        problems.append(f"{len(extra)} outcomes for keys never sent")

    totals: Counter[str] = Counter()
    print(f"fuzz stream: {count} records, seed {seed}, {elapsed:.1f} s until every one had an outcome")
    print(f"{'kind':<26} {'records':>8}  outcomes")
    for kind in sorted(per_kind):
        tally = per_kind[kind]
        totals.update(tally)
        print(f"{kind:<26} {sum(tally.values()):>8}  " + ", ".join(f"{k} {v}" for k, v in tally.most_common()))
    print(f"{'total':<26} {sum(totals.values()):>8}  " + ", ".join(f"{k} {v}" for k, v in totals.most_common()))
    print("consumer actor RSS, MB (after warm-up -> end): "
          + "; ".join(f"pid {pid}: {rss_warm[pid]:.0f} -> {rss_end[pid]:.0f}" for pid in pids))
    print(f"monitor: failed={state.detail['failed']}, records read={dict(read)}")
    if state.detail["failed"] is not None:
        problems.append("the monitor stopped")
    for line in problems[:20]:
        print("PROBLEM", line)
    print(f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 20261129
    broker = EmbeddedBroker().start()
    try:
        code = asyncio.run(main(broker.bootstrap, count, seed))
    finally:
        broker.stop()
    sys.exit(code)
