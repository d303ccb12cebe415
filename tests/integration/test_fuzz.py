"""Bad input, fuzzed, through the real pipeline and the monitor on the embedded broker.

A seeded stream (``tests.support.fuzz``) of random bytes, truncated JSON, mutated requests (wrong
types, missing fields, huge numbers, NaN and Infinity literals, deep nesting, unicode ids, zero or
negative shapes, length mismatches, unknown datatypes), oversized values and bad headers,
interleaved with valid requests, sent as one batch: every record ends as exactly one prediction
or one dead letter with a reason its content allows, the pipeline answers a valid request after
it all, the consuming actors' memory stays within a bound, and the monitor reads the same records
without stopping, counting what it could not read.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

from streaminfer.demo.model import DEMO_MODEL, demo_data
from streaminfer.monitoring.settings import MonitorSettings, MonitorTopics
from streaminfer.schemas.deadletter import Reason, read_error_headers
from streaminfer.streams.settings import PipelineSettings
from tests.support.fuzz import FuzzStream
from tests.support.harness import Collector, app_settings, ends, send, started

SEED = 20261129
COUNT = 2_400
WARM_UP = 400
#: How much a consuming actor's resident memory may grow from after the warm-up to the end.
RSS_GROWTH_BOUND_MB = 150
MAX_REQUEST_BYTES = 64 * 1024


def rss_mb(pid: int) -> float:
    """Resident memory of a process on this machine (the actors run here), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def test_fuzzed_records_each_end_as_one_prediction_or_one_typed_dead_letter_and_nothing_stops(
    kafka_settings, topics, model_repo, ray_dashboard, tmp_path
):
    records = FuzzStream(SEED, demo_data().x_test, DEMO_MODEL, oversized_bytes=80_000).records(COUNT)
    by_key = {r.key: r for r in records}
    suffix = uuid.uuid4().hex[:8]
    monitor = MonitorSettings(
        topics=MonitorTopics(labels=f"labels-{suffix}", drift=f"drift-{suffix}", metrics=f"metrics-{suffix}"),
        group_id=f"monitor-{suffix}", checkpoint_dir=tmp_path / "checkpoint", reports_dir=tmp_path / "reports",
    )
    settings = app_settings(kafka_settings, topics, model_repo, monitor=monitor,
                            pipeline=PipelineSettings(max_request_bytes=MAX_REQUEST_BYTES))
    wire = [(r.key, r.value, r.headers) for r in records]
    app = await started(settings)
    try:
        pids = [int(d["pid"]) for d in await app.describe()]  # type: ignore[call-overload]
        async with Collector(kafka_settings.bootstrap, topics) as collector:
            first = await send(kafka_settings.bootstrap, topics.requests, wire[:WARM_UP])  # type: ignore[arg-type]
            await collector.until(lambda c: c.total >= WARM_UP)
            rss_after_warm_up = {pid: rss_mb(pid) for pid in pids}
            rest = await send(kafka_settings.bootstrap, topics.requests, wire[WARM_UP:])  # type: ignore[arg-type]
            await collector.until(lambda c: c.total >= COUNT, timeout_s=300)
            rss_at_end = {pid: rss_mb(pid) for pid in pids}
            # still up: a valid request after all of it is answered
            after = FuzzStream(SEED + 1, demo_data().x_test, DEMO_MODEL).records(200)
            valid = [(b"after-" + r.key, r.value, r.headers) for r in after if r.kind == "valid"][:5]
            last = await send(kafka_settings.bootstrap, topics.requests, valid)  # type: ignore[arg-type]
            collected = await collector.caught_up(kafka_settings, ends(first, rest, last))
        assert app.monitor is not None
        deadline = time.monotonic() + 120
        while True:
            state = await app.monitor.describe.remote()
            read = state.detail["records"]
            if read.get("requests", 0) + read.get("skipped", 0) >= COUNT + len(valid) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        await app.stop()

    outcomes: dict[bytes, list[str | None]] = {}
    for record in collected.predictions:
        outcomes.setdefault(record.key, []).append(None)
    for record in collected.dead_letters:
        reason = read_error_headers(record.headers)["reason"]
        assert reason in {r.value for r in Reason}, "every dead letter is typed"
        outcomes.setdefault(record.key, []).append(str(reason))
    answered_after = {k for k in outcomes if k.startswith(b"after-")}
    assert answered_after == {k for k, _, _ in valid} and all(outcomes[k] == [None] for k in answered_after)

    assert set(outcomes) - answered_after == set(by_key), "every record has an outcome, and nothing else does"
    assert all(len(ended) == 1 for ended in outcomes.values()), "exactly one outcome per record"
    wrong = {k: (by_key[k].kind, ended[0]) for k, ended in outcomes.items()
             if k in by_key and ended[0] not in by_key[k].allowed}
    assert wrong == {}, "each record ends as its content allows"
    tally = Counter(ended[0] or "predicted" for k, ended in outcomes.items() if k in by_key)
    assert sum(tally.values()) == COUNT
    assert tally["predicted"] > COUNT // 3 and len(tally) >= 8, tally

    growth = {pid: rss_at_end[pid] - rss_after_warm_up[pid] for pid in pids}
    assert all(g < RSS_GROWTH_BOUND_MB for g in growth.values()), growth

    assert state.detail["failed"] is None, "the monitor is still reading"
    assert read.get("skipped", 0) > 0, read
    assert read.get("requests", 0) + read.get("skipped", 0) >= COUNT + len(valid), read
