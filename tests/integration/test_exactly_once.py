"""Exactly-once mode (``pipeline.guarantee = "exactly_once"``): every request answered once as a
``read_committed`` consumer sees it, a fenced zombie commits nothing, and the embedded broker,
which has no transactions, is refused at start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from streaminfer.demo.model import demo_data
from streaminfer.streams.errors import TransactionsUnsupported
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from tests.integration.test_pipeline import demo_records
from tests.support.harness import Collector, app_settings, send, started

EXACTLY_ONCE = PipelineSettings(guarantee="exactly_once", transaction_interval_ms=100)


def _kafka(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap=bootstrap, group_id=f"test-{uuid.uuid4().hex[:8]}",
                         session_timeout_ms=6000, heartbeat_interval_ms=500, rebalance_timeout_ms=6000)


async def _describe(handle: ray.actor.ActorHandle) -> dict:
    return await handle.describe.remote()


def _fenced(metrics_url: str) -> float:
    """The consuming actor's ``streaminfer_partitions_fenced_total``, read from its endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(s.value for f in families for s in f.samples if s.name == "streaminfer_partitions_fenced_total")


@pytest.mark.kafka_semantics
async def test_every_request_is_answered_once_for_read_committed_readers_after_a_consumer_actor_is_killed(
    apache_kafka, topics: TopicSettings, model_repo, ray_dashboard
):
    rows = demo_data().x_test
    count = 5000
    kafka = _kafka(apache_kafka.bootstrap)
    settings = app_settings(kafka, topics, model_repo, consumers=2, pipeline=EXACTLY_ONCE)
    assert settings.kafka.isolation_level == "read_committed", "every internal reader reads committed"
    app = await started(settings)
    victim = ray.get_actor(app.names[0], namespace=settings.pool.namespace)  # type: ignore[attr-defined]
    try:
        async with Collector(kafka.bootstrap, topics, isolation_level="read_committed") as collector:
            sender = asyncio.create_task(send(kafka.bootstrap, topics.requests, demo_records(rows, count, "x")))
            await collector.until(lambda c: c.total >= 300)
            ray.kill(victim, no_restart=False)
            sent = await sender
            await collector.until(lambda c: len(c.unique_ids()) >= count)
            collected = await collector.caught_up(kafka, sent)
    finally:
        await app.stop()

    ids = collected.ids(collected.predictions)
    assert collected.dead_letters == []
    assert set(ids) == {f"x-{n}" for n in range(count)}
    assert max(ids.values()) == 1, "a read_committed reader sees each answer once, kill or not"


@pytest.mark.kafka_semantics
async def test_a_paused_member_whose_partitions_moved_is_fenced_and_adds_no_duplicate(
    apache_kafka, topics: TopicSettings, model_repo, ray_dashboard
):
    """SIGSTOP one consuming actor past the session timeout, let the other take all partitions,
    SIGCONT it: its open transactions were aborted when the other member took over their ids, its
    next commits are fenced, and it gives those partitions up and rejoins the group instead of
    stopping (a member that stopped but stayed in the group would strand what it is given next)."""
    rows = demo_data().x_test
    count = 6000
    kafka = _kafka(apache_kafka.bootstrap)
    settings = app_settings(kafka, topics, model_repo, consumers=2, pipeline=EXACTLY_ONCE,
                            metrics={"port": 0, "targets_file": None})
    app = await started(settings)
    zombie, survivor = (ray.get_actor(name, namespace=settings.pool.namespace) for name in app.names)  # type: ignore[attr-defined]
    zombie_state = await _describe(zombie)
    assert zombie_state["partitions"], "both members own partitions before the pause"
    paused = False
    try:
        async with Collector(kafka.bootstrap, topics, isolation_level="read_committed") as collector:
            sender = asyncio.create_task(send(kafka.bootstrap, topics.requests, demo_records(rows, count, "z")))
            await collector.until(lambda c: c.total >= 300)
            os.kill(int(zombie_state["pid"]), signal.SIGSTOP)
            paused = True
            deadline = time.monotonic() + 60
            while len((await _describe(survivor))["partitions"]) < topics.partitions:
                assert time.monotonic() < deadline, "the survivor never took the paused member's partitions"
                await asyncio.sleep(0.2)
            os.kill(int(zombie_state["pid"]), signal.SIGCONT)
            paused = False
            while not await asyncio.to_thread(_fenced, str(zombie_state["metrics_url"])):
                assert time.monotonic() < deadline + 60, f"the resumed member was not fenced: {await _describe(zombie)}"
                await asyncio.sleep(0.2)
            sent = await sender
            await collector.until(lambda c: len(c.unique_ids()) >= count)
            collected = await collector.caught_up(kafka, sent)
            states = [await _describe(handle) for handle in (zombie, survivor)]
    finally:
        if paused:
            os.kill(int(zombie_state["pid"]), signal.SIGCONT)
        await app.stop()

    ids = collected.ids(collected.predictions)
    assert set(ids) == {f"z-{n}" for n in range(count)}
    assert max(ids.values()) == 1, "the zombie's late transactions were fenced, none became visible"
    assert [state["failed"] for state in states] == [None, None], "fencing is not a failure: both members run on"


@pytest.mark.kafka_semantics
async def test_exactly_once_is_refused_at_start_on_the_embedded_broker(tansu, topics: TopicSettings, model_repo):
    settings = app_settings(_kafka(tansu.bootstrap), topics, model_repo, consumers=2, pipeline=EXACTLY_ONCE)
    with pytest.raises(TransactionsUnsupported, match="Apache Kafka"):
        await started(settings)


def test_run_refuses_exactly_once_on_the_embedded_broker_in_one_line_with_exit_code_2(tansu, model_repo):
    env = {**os.environ, "STREAMINFER_PIPELINE__GUARANTEE": "exactly_once"}
    done = subprocess.run(
        [sys.executable, "-m", "streaminfer.cli", "run", "--bootstrap", tansu.bootstrap,
         "--model-repo", str(model_repo.root), "--no-monitor", "--no-experiments"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "does not support transactions" in lines[0] and "Apache Kafka" in lines[0]
