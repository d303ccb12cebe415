"""Overload: a backlog far beyond what the pipeline holds in flight waits in Kafka, not in memory."""

from __future__ import annotations

import psutil

from streaminfer.demo.model import demo_data
from streaminfer.streams.clients import ensure_topic_names
from streaminfer.streams.settings import PipelineSettings
from tests.integration.test_pipeline import demo_records
from tests.support.harness import Collector, app_settings, send, started


def resident_bytes(pids: list[int]) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


async def test_a_backlog_far_beyond_capacity_pauses_the_consumer_and_memory_stays_flat(
    kafka_settings, topics, model_repo, ray_dashboard
):
    count = 60_000
    pipeline = PipelineSettings(max_inflight_batches=2, fetch_max_records=256, max_batch_size=256)
    settings = app_settings(kafka_settings, topics, model_repo, consumers=1, pipeline=pipeline)
    # the whole backlog waits before the consumer starts: sent while it runs, it could be read as
    # fast as it arrives (no backlog, so nothing to pause for) on a machine where the consumer is
    # the faster of the two
    await ensure_topic_names(kafka_settings, [topics.requests, topics.predictions, topics.deadletter],
                             topics.partitions, 1)
    await send(kafka_settings.bootstrap, topics.requests, demo_records(demo_data().x_test, count, "o"))
    app = await started(settings)
    try:
        pids = [int(a["pid"]) for a in app.actors]
        async with Collector(kafka_settings.bootstrap, topics) as collector:
            await collector.until(lambda c: c.total >= count // 10)
            warm = resident_bytes(pids)
            collected = await collector.until(lambda c: len(c.unique_ids()) >= count, timeout_s=300)
            end = resident_bytes(pids)
            state = await app.describe()
    finally:
        await app.stop()

    assert len(collected.unique_ids()) == count and collected.dead_letters == []
    assert sum(int(s["pauses"]) for s in state) > 0, "the consumer paused instead of queueing"
    print(f"consumer RSS warm {warm / 2**20:.0f} MiB, end {end / 2**20:.0f} MiB")
    assert end <= warm * 1.2, f"resident memory grew from {warm} to {end} bytes"
