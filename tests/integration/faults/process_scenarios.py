"""Process fault scenarios on Apache Kafka, each an ``async def scenario(env, requests, guarantee)
-> LedgerReport`` that the fault tests run at CI size and ``tests/benchmarks/fault_scale.py`` at
100,000 requests:

- ``consumer_actor_kills`` / ``worker_actor_kills``: consuming actors (default shape) or worker
  pool actors (driver shape) SIGKILLed, one every ``env.kill_every_s``, while requests stream in;
- ``rebalance_storm``: a second and a third pipeline in the same consumer group joining and
  leaving every ``env.storm_every_s`` while requests stream in;
- ``webhook_receiver_outage``, ``feature_store_outage``, ``feature_sink_store_outage``: the webhook
  receiver, or the Feast online store (Redis), down for ``env.outage_s`` mid-stream
  (``process_outages``).

Requests are sent at a steady rate (``env.rate_per_s``) while the fault happens; the answers are
read as a downstream consumer would (``read_committed`` in exactly-once mode) and compared with
what was sent in an exact ledger by request id (``ledger.py``). Time to recover: see
``process_stream.RECOVERY``. Ray must be running (``start_ray``) before a scenario starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ray._private.worker import get_dashboard_url
from ray.util.state import list_actors

from streaminfer.demo.model import DEMO_MODEL, DEMO_VERSION
from streaminfer.running import RunningApp
from streaminfer.settings import AppSettings
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.execution.pool import actor_name
from tests.integration.faults.ledger import GUARANTEES, Guarantee, LedgerReport, ledger
from tests.integration.faults.process_env import (
    ProcessEnv,
    answers,
    demo_stream,
    fresh_topics,
    isolation,
    kafka_for,
    pipeline_for,
)
from tests.integration.faults.process_outages import (
    feature_sink_store_outage,
    feature_store_outage,
    webhook_receiver_outage,
)
from tests.integration.faults.process_stream import Feed, LiveAnswers, Recovery, ids_of
from tests.support.harness import Collector, app_settings, started

log = logging.getLogger(__name__)


# SIGKILLed actors ----------------------------------------------------------------------------


async def consumer_actor_kills(env: ProcessEnv, requests: int, guarantee: Guarantee) -> LedgerReport:
    """Two consuming actors (the default shape); one of them SIGKILLed every ``env.kill_every_s``,
    in turn; Ray restarts it and the supervisor starts its pipeline again."""
    return await _actor_kills(env, requests, guarantee, consumers=2)


async def worker_actor_kills(env: ProcessEnv, requests: int, guarantee: Guarantee) -> LedgerReport:
    """The driver consumes; one of its two worker pool actors SIGKILLed every ``env.kill_every_s``,
    in turn; a batch in flight on it fails and is tried again on the pool."""
    return await _actor_kills(env, requests, guarantee, consumers=0)


async def _actor_kills(env: ProcessEnv, requests: int, guarantee: Guarantee, consumers: int) -> LedgerReport:
    kind = "consumer" if consumers else "worker pool"
    kafka, topics = kafka_for(env, "kills"), fresh_topics()
    settings = app_settings(kafka, topics, env.repository, consumers=consumers, pool_size=2,
                            pipeline=pipeline_for(guarantee))
    records = demo_stream(requests, "kill")
    app = await started(settings)
    victims = list(app.names) if consumers else [actor_name(DEMO_MODEL, DEMO_VERSION, i) for i in range(2)]  # type: ignore[attr-defined]
    recovery, kills = Recovery(), 0
    try:
        async with Collector(kafka.bootstrap, topics, isolation_level=isolation(guarantee)) as collector:
            live = LiveAnswers(collector).start()
            feed = await Feed(kafka.bootstrap, topics.requests, records, env.rate_per_s).start()
            try:
                while not feed.done:
                    await asyncio.sleep(env.kill_every_s)
                    if feed.done:
                        break
                    pid = await asyncio.to_thread(alive_pid, settings.pool.namespace, victims[kills % len(victims)])
                    if pid is None:  # still being restarted by Ray: its turn passes
                        continue
                    os.kill(pid, signal.SIGKILL)
                    recovery.fault_ended(feed.sent_count())
                    kills += 1
                sent = await feed.finish()
                collected = await answers(env, live, collector, kafka, sent, requests)
            finally:
                await feed.close()
                await live.close()
    finally:
        await app.stop()
    log.warning("%s actors SIGKILLed: %d", kind, kills)
    ids = ids_of(records)
    return ledger(f"{kind} actors SIGKILLed every {env.kill_every_s:g} s ({kills} kills)", guarantee, ids,
                  collected, recovery.seconds(ids, live.first_answer))


def alive_pid(namespace: str, name: str) -> int | None:
    """The process of the live actor ``name``, from Ray's state API; None while Ray restarts it."""
    dashboard = get_dashboard_url()
    address = dashboard if dashboard.startswith("http") else f"http://{dashboard}"
    found = list_actors(address=address, filters=[("name", "=", name), ("ray_namespace", "=", namespace), ("state", "=", "ALIVE")])
    return int(found[0].pid) if found and found[0].pid else None


# a rebalance storm ---------------------------------------------------------------------------


async def rebalance_storm(env: ProcessEnv, requests: int, guarantee: Guarantee) -> LedgerReport:
    """Two consuming actors hold the group; every ``env.storm_every_s`` a further pipeline (driver
    shape, one worker) joins the same group, until there are two of them, then the older one leaves,
    and so on: each join and each leave is a rebalance under load. A fault ends when the join or
    leave has returned."""
    kafka, topics = kafka_for(env, "storm"), fresh_topics()
    pipeline = pipeline_for(guarantee)
    base = app_settings(kafka, topics, env.repository, consumers=2, pipeline=pipeline)
    records = demo_stream(requests, "storm")
    app = await started(base)
    extras: list[RunningApp] = []
    recovery, changes = Recovery(), 0
    try:
        async with Collector(kafka.bootstrap, topics, isolation_level=isolation(guarantee)) as collector:
            live = LiveAnswers(collector).start()
            feed = await Feed(kafka.bootstrap, topics.requests, records, env.rate_per_s).start()
            try:
                while not feed.done:
                    await asyncio.sleep(env.storm_every_s)
                    if feed.done:
                        break
                    if len(extras) < 2:
                        extras.append(await started(_extra(kafka, topics, env, pipeline)))
                    else:
                        await extras.pop(0).stop()
                    recovery.fault_ended(feed.sent_count())
                    changes += 1
                while extras:
                    await extras.pop(0).stop()
                    recovery.fault_ended(feed.sent_count())
                    changes += 1
                sent = await feed.finish()
                collected = await answers(env, live, collector, kafka, sent, requests)
            finally:
                await feed.close()
                await live.close()
    finally:
        for extra in extras:
            await extra.stop()
        await app.stop()
    ids = ids_of(records)
    return ledger(f"rebalance storm, a pipeline joining or leaving every {env.storm_every_s:g} s ({changes} changes)",
                  guarantee, ids, collected, recovery.seconds(ids, live.first_answer))


def _extra(kafka: KafkaSettings, topics: TopicSettings, env: ProcessEnv, pipeline: PipelineSettings) -> AppSettings:
    """A pipeline like `streaminfer run --consumers 0` on another machine: same group, own workers."""
    return app_settings(kafka, topics, env.repository, consumers=0, pool_size=1, pipeline=pipeline)


SCENARIOS = {
    "consumer_actor_kills": consumer_actor_kills,
    "worker_actor_kills": worker_actor_kills,
    "rebalance_storm": rebalance_storm,
    "webhook_receiver_outage": webhook_receiver_outage,
    "feature_store_outage": feature_store_outage,
    "feature_sink_store_outage": feature_sink_store_outage,
}
"""Every process scenario by name, for the scale script."""

GUARANTEES_OF = dict.fromkeys(SCENARIOS, GUARANTEES) | {
    "webhook_receiver_outage": ("at_least_once",),
    "feature_sink_store_outage": ("at_least_once",),
}
"""The guarantees each scenario runs under: webhook calls and feature-store writes are
at-least-once whatever the pipeline's guarantee (the receiver dedupes on ``Idempotency-Key``;
the online store is keyed by entity)."""
