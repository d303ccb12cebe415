"""A backlog burst against an autoscaled consumer group, watched as it happens: how many consumers
ran when, when a new one first owned partitions, and when the group went back down.

Shared by ``tests/integration/test_autoscaling.py`` and ``tests/benchmarks/autoscaling.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from ray.exceptions import RayError

from streaminfer.running import ConsumerGroupApp
from streaminfer.scaling.settings import ScalingSettings
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.support.harness import Collected, Collector, Ends, Record, ends, send

#: Small thresholds and cool-downs, so a burst of a few thousand records scales up and the test
#: sees the group back at one consumer within seconds.
FAST_SCALING = ScalingSettings(
    enabled=True, min_consumers=1, max_consumers=3, interval_s=0.25, lag_per_consumer=400, growth_per_s=4000,
    idle_lag=20, idle_for_s=2.0, up_cooldown_s=1.0, down_cooldown_s=3.0, action_timeout_s=30,
)


@dataclass
class ScalingRun:
    collected: Collected
    sent: int
    """Requests sent, numbered 0 to ``sent - 1``."""

    counts: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since the burst began, consumers in the group), at every change seen."""
    to_new_consumer_s: float | None = None
    """From the burst's first record to a consumer added for it owning partitions (sending stops then)."""
    idle_to_first_drain_s: float | None = None
    """From the group having committed every request (its lag is zero) to the first consumer leaving."""
    idle_to_min_s: float | None = None
    """From the same moment to the group back at ``min_consumers``."""

    @property
    def peak(self) -> int:
        return max(count for _, count in self.counts)


async def burst_then_idle(
    app: ConsumerGroupApp, kafka: KafkaSettings, topics: TopicSettings, requests: Callable[[int, int], list[Record]],
    isolation_level: str = "read_uncommitted", timeout_s: float = 60.0, chunk: int = 2000, backlog: int = 4000,
    max_requests: int = 200_000,
) -> ScalingRun:
    """Send requests (``requests(first, count)`` makes them) in chunks, keeping at least ``backlog``
    unanswered, until a consumer added for the burst owns partitions; read every answer, wait for
    the group to commit them all, then for it to drain back to ``scaling.min_consumers``.

    How much to send is not fixed: one consumer's speed on a shared machine varies several times
    over, and a fixed burst that one fast consumer answers before the new actors have joined
    shows no scaling at all. Topping the backlog up until the group has grown makes every run
    scale while requests wait, which is what the tests are about."""
    initial = set(app.names)
    run: ScalingRun | None = None
    began = time.monotonic()
    counts: list[tuple[float, int]] = [(0.0, len(app.names))]
    new_consumer: list[float] = []
    watcher = asyncio.create_task(_watch(app, initial, began, counts, new_consumer))
    try:
        async with Collector(kafka.bootstrap, topics, isolation_level=isolation_level) as collector:
            async def grown() -> bool:
                return bool(new_consumer)

            sent, placed = await keep_backlog_until(grown, collector, kafka, topics, requests, chunk, backlog,
                                                    max_requests, timeout_s)
            await collector.until(lambda c: len(c.unique_ids()) >= sent, timeout_s)
            collected = await collector.caught_up(kafka, placed, timeout_s)
        idle = time.monotonic() - began
        print(f"burst of {sent} sent, answered and committed in {idle:.1f} s")
        minimum = app.settings.scaling.min_consumers
        deadline = time.monotonic() + timeout_s
        while not (len(app.names) <= minimum and not app.draining):
            if time.monotonic() > deadline:
                raise AssertionError(f"the group did not drain back to {minimum} within {timeout_s} s: {counts}")
            await asyncio.sleep(0.05)
        back = time.monotonic() - began
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    run = ScalingRun(collected, sent, counts, new_consumer[0] if new_consumer else None)
    drops = [at for (at, count), (_, before) in zip(counts[1:], counts) if count < before and at >= idle]
    run.idle_to_first_drain_s = drops[0] - idle if drops else None
    run.idle_to_min_s = back - idle
    return run


async def keep_backlog_until(
    grown: Callable[[], Awaitable[bool]], collector: Collector, kafka: KafkaSettings, topics: TopicSettings,
    requests: Callable[[int, int], list[Record]], chunk: int, backlog: int, max_requests: int, timeout_s: float,
) -> tuple[int, Ends]:
    """Send ``chunk`` requests at a time whenever fewer than ``backlog`` are unanswered, until
    ``grown()``; returns how many were sent and where they ended. Fails after ``max_requests`` or
    ``timeout_s`` without growth."""
    began = time.monotonic()
    sent = 0
    placed: Ends = {}
    while not await grown():
        answered = len(collector.collected.predictions) + len(collector.collected.dead_letters)
        if sent - answered < backlog:
            if sent >= max_requests or time.monotonic() - began > timeout_s:
                raise AssertionError(f"the group did not grow while {sent - answered} requests waited")
            placed = ends(placed, await send(kafka.bootstrap, topics.requests, requests(sent, chunk)))
            sent += chunk
        await collector.poll(50)
    return sent, placed


async def _watch(app: ConsumerGroupApp, initial: set[str], began: float, counts: list[tuple[float, int]],
                 new_consumer: list[float]) -> None:
    """Every 50 ms: the group's size, and whether a consumer added since the burst owns partitions."""
    while True:
        now = time.monotonic() - began
        if len(app.names) != counts[-1][1]:
            counts.append((now, len(app.names)))
        if not new_consumer:
            added = [handle for name, handle in zip(list(app.names), list(app.handles)) if name not in initial]
            with contextlib.suppress(RayError):
                states = await asyncio.gather(*(handle.describe.remote() for handle in added))
                if any(state["partitions"] for state in states):
                    new_consumer.append(time.monotonic() - began)
        await asyncio.sleep(0.05)


def driver_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The driver's ``/metrics``, scraped: value by (sample name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}
