"""What every process fault scenario is given (``ProcessEnv``) and the steps they share: fresh
topics and group, the guarantee's settings and isolation, and waiting for every answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streaminfer.demo.model import demo_data
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from tests.integration.faults.ledger import GUARANTEES, Guarantee
from tests.integration.faults.process_stream import LiveAnswers
from tests.integration.test_pipeline import demo_records
from tests.support.harness import Collected, Collector, Ends, Record


@dataclass(frozen=True)
class ProcessEnv:
    """Where the scenarios run and how hard the faults come. The defaults are the issue's (an outage
    of a minute); the CI tests pass shorter ones."""

    bootstrap: str
    """An Apache Kafka (exactly-once needs transactions)."""
    repository: ModelRepository
    """With the demo model built (``build_demo_model``)."""
    workdir: Path
    """Feature repositories, Redis data, logs."""
    rate_per_s: int = 400
    """Requests sent per second while a fault happens."""
    kill_every_s: float = 3.0
    storm_every_s: float = 4.0
    outage_s: float = 60.0
    """How long the webhook receiver or the online store stays down."""
    lead_s: float = 3.0
    """Requests flowing before an outage starts."""
    answer_timeout_s: float = 90.0
    """Longest wait, after the last request is sent, for every answer."""


def kafka_for(env: ProcessEnv, prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=env.bootstrap, group_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=6000, heartbeat_interval_ms=500, rebalance_timeout_ms=6000,
    )


def fresh_topics() -> TopicSettings:
    suffix = uuid.uuid4().hex[:8]
    return TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}")


def pipeline_for(guarantee: Guarantee) -> PipelineSettings:
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee {guarantee!r} is none of {GUARANTEES}")
    return PipelineSettings(guarantee=guarantee, transaction_interval_ms=100)


def isolation(guarantee: Guarantee) -> str:
    """How the scenario reads answers: as a downstream consumer of that guarantee must."""
    return "read_committed" if guarantee == "exactly_once" else "read_uncommitted"


def demo_stream(requests: int, prefix: str) -> list[Record]:
    return demo_records(demo_data().x_test, requests, f"{prefix}-{uuid.uuid4().hex[:6]}")


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes (what it watches is counted by
    another task or another process, with no event to await); whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def answers(env: ProcessEnv, live: LiveAnswers, collector: Collector, kafka: KafkaSettings, sent: Ends,
                  requests: int) -> Collected:
    """Everything answered for ``sent``: wait (timing arrivals) until each request has an answer or
    the patience runs out, then read to the end once the group has committed through ``sent``."""
    started = time.monotonic()
    await wait_until(lambda: live.answered() >= requests, env.answer_timeout_s)
    await live.stop()
    left = env.answer_timeout_s - (time.monotonic() - started)
    return await collector.caught_up(kafka, sent, timeout_s=max(60.0, left))
