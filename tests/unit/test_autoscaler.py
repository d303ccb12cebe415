"""The autoscaler's loop through its seams: a scripted lag, a recording consumer group, a fixed
capacity and a manual clock. Decisions are carried out, counted with their reason and lag, a
failed reading does not end the loop, and a stop lets a drain in progress finish."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import ActorMetrics
from streaminfer.scaling.autoscaler import Autoscaler, ray_capacity
from streaminfer.scaling.lag import GroupLag
from streaminfer.scaling.metrics import ScalingMetrics
from streaminfer.scaling.settings import ScalingSettings
from streaminfer.streams.clock import ManualClock
from streaminfer.supervision import ActorWatcher, Sighting

SETTINGS = ScalingSettings(
    enabled=True, max_consumers=4, interval_s=1, lag_per_consumer=1000, idle_lag=10, idle_for_s=3,
    up_cooldown_s=0, down_cooldown_s=0,
)


class _Lag:
    """Lags to read in order (an exception is raised instead of read); the last one repeats."""

    def __init__(self, *script: int | BaseException, partitions: int = 4) -> None:
        self._script = list(script)
        self._partitions = partitions
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def read(self) -> GroupLag:
        item = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if isinstance(item, BaseException):
            raise item
        return GroupLag({p: item // self._partitions + (item % self._partitions if p == 0 else 0)
                         for p in range(self._partitions)})


class _Group:
    def __init__(self, running: int = 1) -> None:
        self._running = running
        self.calls: list[tuple[str, int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.removing = asyncio.Event()
        self.added = asyncio.Event()

    @property
    def running(self) -> int:
        return self._running

    async def add_consumers(self, count: int) -> list[str]:
        self.calls.append(("add", count))
        self.added.set()
        self._running += count
        return [f"c-{n}" for n in range(count)]

    async def remove_consumers(self, count: int) -> list[str]:
        self.calls.append(("remove", count))
        self.removing.set()
        await self.release.wait()
        self._running -= count
        return [f"c-{n}" for n in range(count)]


def _autoscaler(lag: _Lag, group: _Group, clock: ManualClock, cpus: int = 8) -> tuple[Autoscaler, CollectorRegistry]:
    registry = CollectorRegistry()
    scaler = Autoscaler(SETTINGS, group, lag, lambda running: {"cpus": cpus}, ScalingMetrics(registry), clock)
    return scaler, registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_a_burst_scales_up_within_the_free_cpus_and_an_idle_group_drains_back_one_by_one():
    clock = ManualClock()
    group = _Group()
    scaler, registry = _autoscaler(_Lag(5000, 5000, 0), group, clock, cpus=3)

    first = await scaler.step()
    assert (first.direction, first.desired, first.reason) == ("up", 3, "lag")
    held = await scaler.step()
    assert (held.direction, held.reason) == ("hold", "cpus")
    for _ in range(8):
        clock.advance(1)
        await scaler.step()

    assert group.calls == [("add", 2), ("remove", 1), ("remove", 1)]
    assert group.running == 1
    assert [(d.direction, d.reason, d.lag) for d in scaler.changes] == [("up", "lag", 5000), ("down", "idle", 0), ("down", "idle", 0)]
    assert _value(registry, "streaminfer_scaling_decisions_total", direction="up", reason="lag") == 1
    assert _value(registry, "streaminfer_scaling_decisions_total", direction="hold", reason="cpus") == 1
    assert _value(registry, "streaminfer_scaling_decisions_total", direction="down", reason="idle") == 2
    assert _value(registry, "streaminfer_scaling_decisions_total", direction="hold", reason="steady") is None
    assert _value(registry, "streaminfer_scaling_decision_lag_records", direction="up", reason="lag") == 5000
    assert _value(registry, "streaminfer_consumers_desired") == 1
    assert _value(registry, "streaminfer_consumers_running") == 1
    assert _value(registry, "streaminfer_scaling_limit_consumers", limit="partitions") == 4
    assert _value(registry, "streaminfer_scaling_action_seconds_count", direction="down") == 2


async def test_a_failed_reading_is_tried_again_at_the_next_interval_and_the_loop_goes_on():
    clock = ManualClock()
    group = _Group()
    lag = _Lag(KafkaConnectionError(), 3000)
    scaler, _ = _autoscaler(lag, group, clock)
    await scaler.start()
    try:
        await clock.sleeping()  # the first step failed; waiting for the next
        assert group.calls == []
        clock.advance(SETTINGS.interval_s)
        await group.added.wait()
        assert group.calls == [("add", 2)]
    finally:
        await scaler.stop()
    assert lag.started and lag.stopped


async def test_stop_lets_a_drain_in_progress_finish_before_it_returns():
    clock = ManualClock()
    group = _Group(running=2)
    group.release.clear()
    scaler, _ = _autoscaler(_Lag(0), group, clock)
    await scaler.start()
    for _ in range(3):
        await clock.sleeping()
        clock.advance(1)
    await group.removing.wait()
    stopping = asyncio.create_task(scaler.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "a drained consumer is released only after it committed and left"
    group.release.set()
    await stopping
    assert group.running == 1


def test_a_released_actor_is_forgotten_so_its_restart_series_goes_and_the_count_drops():
    registry = CollectorRegistry()
    watcher = ActorWatcher(ActorMetrics(registry))
    watcher.observe([Sighting("m-0", "consumer", 10), Sighting("m-1", "consumer", 11)])
    assert registry.get_sample_value("streaminfer_actors", {"role": "consumer"}) == 2

    watcher.forget("m-1", "consumer")
    watcher.observe([Sighting("m-0", "consumer", 10)])

    assert registry.get_sample_value("streaminfer_actors", {"role": "consumer"}) == 1
    assert registry.get_sample_value("streaminfer_actor_restarts_total", {"actor": "m-1", "role": "consumer"}) is None
    assert watcher.restarts == 0


def test_the_free_cpus_bound_the_consumers_and_free_gpus_too_when_consumers_take_gpus():
    cluster = {"CPU": 1.2, "GPU": 1.0, "memory": 1e9}
    assert ray_capacity(0.5, 0, lambda: cluster)(3) == {"cpus": 5}
    assert ray_capacity(0.5, 0.5, lambda: cluster)(3) == {"cpus": 5, "gpus": 5}
    assert ray_capacity(0, 1, lambda: {"CPU": 4.0})(2) == {"gpus": 2}, "no free GPU: no room for a GPU consumer"
