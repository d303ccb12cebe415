"""The driver's autoscaler: read the group's lag, decide, add or drain consumer actors.

Every ``scaling.interval_s`` it reads the group's lag (``scaling.lag``), asks what bounds the
count (the requests topic's partitions; the consumers the cluster's free CPUs or GPUs can still
hold), takes a ``Decision`` (``scaling.policy``) and carries it out on the ``ConsumerGroup``:
new actors join the group and are waited for until they own partitions; actors to remove are
drained first (they finish what they hold, commit it and leave the group) and only then
released, so nothing is lost or answered twice. One step at a time: a step in progress finishes
before the next reading.

A reading or a change that fails (the broker away, an actor that does not start) is logged and
tried again at the next step: scaling never ends the inference path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

import ray
from aiokafka.errors import KafkaError
from ray.exceptions import RayError

from streaminfer.scaling.lag import GroupLag
from streaminfer.scaling.metrics import ScalingMetrics
from streaminfer.scaling.policy import Decision, ScalingPolicy, Seen
from streaminfer.scaling.settings import ScalingSettings
from streaminfer.schemas.errors import StreamInferError
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

STEP_FAILURES = (KafkaError, RayError, StreamInferError, asyncio.TimeoutError, OSError)
"""What a step may fail with and the next step may not: logged, and tried again."""


class ConsumerGroup(Protocol):
    """What the autoscaler scales (``streaminfer.running.ConsumerGroupApp``)."""

    @property
    def running(self) -> int: ...

    async def add_consumers(self, count: int) -> list[str]:
        """Start ``count`` consumers; return once they own partitions. Their names."""
        ...

    async def remove_consumers(self, count: int) -> list[str]:
        """Drain, then release, ``count`` consumers. Their names."""
        ...


class LagSource(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def read(self) -> GroupLag: ...


Capacity = Callable[[int], Mapping[str, int]]
"""Given the consumers running, the most each of the cluster's resources leaves room for."""


def ray_capacity(
    actor_num_cpus: float, actor_num_gpus: float, free: Callable[[], Mapping[str, float]] = ray.available_resources,
) -> Capacity:
    """Room in the Ray cluster now: the running consumers plus as many more as its free CPUs (and
    GPUs, when consumers take GPUs) hold at ``actor_num_cpus``/``actor_num_gpus`` each. Free
    resources are summed over the nodes; an actor that fits on no single node after all is not
    scheduled, and the group kills it after ``scaling.action_timeout_s``. ``free``: the cluster's
    free resources by name (``ray.available_resources``)."""

    def capacity(running: int) -> Mapping[str, int]:
        available = free()
        limits = {}
        for name, resource, each in (("cpus", "CPU", actor_num_cpus), ("gpus", "GPU", actor_num_gpus)):
            if each > 0:
                limits[name] = running + math.floor(available.get(resource, 0.0) / each + 1e-9)
        return limits

    return capacity


class Autoscaler:
    def __init__(
        self,
        settings: ScalingSettings,
        group: ConsumerGroup,
        lag: LagSource,
        capacity: Capacity,
        metrics: ScalingMetrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._settings = settings
        self._group = group
        self._lag = lag
        self._capacity = capacity
        self._metrics = metrics
        self._clock = clock
        self._policy = ScalingPolicy(settings, clock)
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._last_failure: str | None = None
        self.changes: deque[Decision] = deque(maxlen=100)
        """The latest changes carried out, oldest first."""

    async def start(self) -> None:
        if self._task is not None:
            return
        await self._lag.start()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="autoscaler")
        self._task.add_done_callback(self._on_done)

    async def stop(self) -> None:
        """Let a step in progress finish (a drain commits before it releases), within
        ``action_timeout_s``; then stop reading. Safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            assert self._stopping is not None
            self._stopping.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait({task}, timeout=self._settings.action_timeout_s)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._lag.stop()

    async def step(self) -> Decision:
        """One reading, one decision, carried out."""
        lag = await self._lag.read()
        running = self._group.running
        limits = {"partitions": lag.partitions, **self._capacity(running)}
        decision = self._policy.decide(Seen(lag.total, running, limits))
        self._record(decision, limits)
        if decision.changes:
            await self._carry_out(decision, running)
        self._metrics.running.set(self._group.running)
        return decision

    async def _carry_out(self, decision: Decision, running: int) -> None:
        started = self._clock.monotonic()
        log.warning("scaling %s from %d to %d consumers (%s; lag %d records, growing %.0f/s)", decision.direction,
                    running, decision.desired, decision.reason, decision.lag, decision.growth_per_s)
        if decision.direction == "up":
            await self._group.add_consumers(decision.desired - running)
        else:
            await self._group.remove_consumers(running - decision.desired)
        took = self._clock.monotonic() - started
        self._metrics.action_seconds.labels(decision.direction).observe(took)
        self.changes.append(decision)
        log.warning("scaled %s to %d consumers in %.1f s", decision.direction, self._group.running, took)

    def _record(self, decision: Decision, limits: Mapping[str, int]) -> None:
        metrics = self._metrics
        metrics.desired.set(decision.desired)
        metrics.group_lag.set(decision.lag)
        metrics.lag_growth.set(decision.growth_per_s)
        for name, limit in {"max": self._settings.max_consumers, **limits}.items():
            metrics.limit.labels(name).set(limit)
        if decision.reason != "steady":
            metrics.decisions.labels(decision.direction, decision.reason).inc()
            metrics.decision_lag.labels(decision.direction, decision.reason).set(decision.lag)

    async def _loop(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                await self.step()
                self._last_failure = None
            except STEP_FAILURES as exc:
                if self._last_failure != repr(exc):  # once per distinct failure, not per step
                    log.warning("autoscaler step failed; trying again every %.0f s: %r", self._settings.interval_s, exc)
                self._last_failure = repr(exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await self._clock.wait_for(self._stopping.wait(), self._settings.interval_s)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("autoscaler stopped; the consumers stay at %d: %r", self._group.running, task.exception())
