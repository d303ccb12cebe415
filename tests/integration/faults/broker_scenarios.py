"""Fault scenarios around the broker and the ``streaminfer run`` process, each a coroutine that
sends ``count`` requests through a real ``streaminfer run`` on Apache Kafka, strikes its fault
mid-stream, and returns the ledger (``tests.integration.faults.ledger``):

- ``run_killed``: the whole ``run`` process tree SIGKILLed, then started again;
- ``broker_down``: the broker stopped (SIGTERM, ``how="stop"``) or killed (SIGKILL, ``how="kill"``)
  for ``DOWN_S`` seconds, then started again on the same ports and data;
- ``cluster_broker_killed``: on a three-node cluster (replication 3, ``min.insync.replicas=2``), the
  node leading the first requests partition SIGKILLed, and left down until the stream is answered.

Mid-stream means: once a quarter of the requests are answered, with the feed still sending. The
feed keeps its rate through the fault. ``recover_s`` runs from the moment the fault is in place
(the process tree dead, the broker down) until the first answer the broker appended after it
(``ledger.RECOVERY``); for ``broker_down`` it includes the ``DOWN_S``.
The pytest tests (test_broker_faults.py) run these at CI size, tests/benchmarks/fault_scale.py
at 100,000 requests and more.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.integration.faults.ledger import Guarantee, LedgerReport
from tests.integration.faults.run_process import RunProcess
from tests.integration.faults.traffic import OUTPUT_TOPIC_CONFIGS, Feed, Watch
from tests.support.kafka_jvm import ApacheKafkaBroker, ApacheKafkaCluster

T = TypeVar("T")
DOWN_S = 10.0
PARTITIONS = 4
FAULT_AT = 0.25
"""The fault strikes once this share of the requests is answered."""


@dataclass(frozen=True)
class Place:
    """Where a scenario runs: a scratch folder of its own (brokers, ``run``'s cwd and log), the
    model repository holding the demo model, and the Kafka jars (None: fetched, then cached)."""

    work_dir: Path
    model_repo: Path
    kafka_libs: Path | None = None

    def scratch(self, name: str) -> Path:
        path = self.work_dir / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path


Fault = Callable[[RunProcess, Watch], Awaitable[None]]
"""Strikes the fault, calling ``Watch.fault`` the moment it is in place (a process dead, a broker
down), and returns once the scenario has nothing more to do about it."""


def rate_for(count: int, seconds: float) -> float:
    """The feed's rate that spreads ``count`` requests over ``seconds``."""
    return count / seconds


async def run_killed(
    count: int, guarantee: Guarantee, place: Place, *, rate_per_s: float, bootstrap: str | None = None
) -> LedgerReport:
    """SIGKILL the whole ``streaminfer run`` tree mid-stream and start it again at once. On
    ``bootstrap`` if given, else on an Apache Kafka of its own."""

    async def fault(run: RunProcess, watch: Watch) -> None:
        await asyncio.to_thread(run.kill)
        watch.fault()
        await asyncio.to_thread(run.start)

    if bootstrap is not None:
        return await _scenario("run process tree SIGKILLed", guarantee, count, rate_per_s, bootstrap, 1, place, fault)
    broker = ApacheKafkaBroker(place.scratch("kafka"), place.kafka_libs)
    await asyncio.to_thread(broker.start)
    try:
        return await _scenario("run process tree SIGKILLed", guarantee, count, rate_per_s, broker.bootstrap, 1, place, fault)
    finally:
        await asyncio.to_thread(broker.stop)


async def broker_down(
    count: int, guarantee: Guarantee, place: Place, *, how: Literal["stop", "kill"], rate_per_s: float,
    down_s: float = DOWN_S,
) -> LedgerReport:
    """Stop (SIGTERM) or kill (SIGKILL) the only broker mid-stream, start it again ``down_s`` later
    on the same data; ``run`` must ride the outage out (it is checked to be running after)."""
    broker = ApacheKafkaBroker(place.scratch("kafka"), place.kafka_libs)
    await asyncio.to_thread(broker.start)

    async def fault(run: RunProcess, watch: Watch) -> None:
        await asyncio.to_thread(broker.stop if how == "stop" else broker.kill)
        watch.fault()
        await asyncio.sleep(down_s)
        run.check_running()
        await asyncio.to_thread(broker.start)

    name = f"broker {'SIGTERM' if how == 'stop' else 'SIGKILL'}, down {down_s:.0f} s"
    try:
        return await _scenario(name, guarantee, count, rate_per_s, broker.bootstrap, 1, place, fault)
    finally:
        await asyncio.to_thread(broker.stop)


async def cluster_broker_killed(
    count: int, guarantee: Guarantee, place: Place, *, rate_per_s: float, cluster: ApacheKafkaCluster | None = None
) -> LedgerReport:
    """On a three-node cluster (``cluster``, or one of its own), SIGKILL the leader of the first
    requests partition mid-stream; it stays down until every request is answered, then is
    started again so the cluster is whole for the next scenario."""
    own = cluster is None
    if cluster is None:
        cluster = ApacheKafkaCluster(place.scratch("cluster"), place.kafka_libs)
    await asyncio.to_thread(cluster.start)
    killed: list[ApacheKafkaBroker] = []

    async def fault(run: RunProcess, watch: Watch) -> None:
        node = await _leader(cluster.bootstrap, run.topics.requests)
        killed.append(cluster.brokers[node - 1])
        await asyncio.to_thread(killed[-1].kill)
        watch.fault()

    try:
        name = "1 of 3 brokers SIGKILLed (RF 3, min ISR 2)"
        return await _scenario(name, guarantee, count, rate_per_s, cluster.bootstrap, 3, place, fault)
    finally:
        await asyncio.to_thread(cluster.stop if own else cluster.start)


async def _create_topics(bootstrap: str, topics: TopicSettings, replication: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topics.requests, PARTITIONS, replication),
            *(NewTopic(name, PARTITIONS, replication, topic_configs=OUTPUT_TOPIC_CONFIGS)
              for name in (topics.predictions, topics.deadletter)),
        ])
    finally:
        await admin.close()


async def _leader(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return next(p["leader"] for p in described["partitions"] if p["partition"] == 0)
    finally:
        await admin.close()


async def _scenario(
    name: str, guarantee: Guarantee, count: int, rate_per_s: float, bootstrap: str, replication: int,
    place: Place, fault: Fault,
) -> LedgerReport:
    """Fresh topics and group; ``run`` started; the feed sending; ``fault`` once a quarter is
    answered; every acknowledged request's answers read once the group committed through them."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}")
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"faults-{suffix}")
    await _create_topics(bootstrap, topics, replication)
    run = RunProcess(bootstrap, topics, place.model_repo, guarantee, kafka.group_id, place.scratch("run"))
    await asyncio.to_thread(run.start)
    stream_s = count / rate_per_s
    try:
        async with Watch(bootstrap, topics, guarantee) as watch:
            feed = await Feed(bootstrap, topics.requests, count, rate_per_s, f"r{suffix}").start()
            try:
                await watch.until(lambda c: c.total >= count * FAULT_AT, stream_s + 120, "answers to flow")
                run.check_running()
                await fault(run, watch)
                sent = await _while_running(run, feed.finish(stream_s + 180))
            finally:
                await feed.stop()
            return await _while_running(run, watch.report(name, guarantee, kafka, feed, sent, timeout_s=300))
    finally:
        await asyncio.to_thread(run.stop)


async def _while_running(run: RunProcess, step: Awaitable[T]) -> T:
    """``step``'s result; ``RunFailed`` at once if ``run`` exits meanwhile (a fault it did not ride
    out), instead of waiting for answers that will not come."""
    task = asyncio.ensure_future(step)
    try:
        while not task.done():
            run.check_running()
            await asyncio.wait({task}, timeout=0.5)
        return task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
