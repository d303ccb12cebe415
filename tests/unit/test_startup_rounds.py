"""Start-up rounds of the running app: the side services start together, and the consumer group
counts as settled one heartbeat interval after its assignment last changed."""

from __future__ import annotations

import asyncio

from streaminfer.actors.service import ServiceState
from streaminfer.running import ConsumerGroupApp, DriverApp
from streaminfer.settings import AppSettings


class _Together:
    """``ensure_started`` calls that each return only once all ``expected`` have been made: one
    after another, the first would wait forever."""

    def __init__(self, expected: int) -> None:
        self._expected, self._calls, self._all_in = expected, 0, asyncio.Event()

    def actor(self, name: str) -> object:
        together = self

        class _Method:
            def remote(self):
                async def call() -> ServiceState:
                    together._calls += 1
                    if together._calls == together._expected:
                        together._all_in.set()
                    await together._all_in.wait()
                    return ServiceState(name, 7, None)

                return call()

        class _Actor:
            ensure_started = _Method()

        return _Actor()


class _Consumer:
    def __init__(self, partitions: list[int]) -> None:
        outer = self
        self.partitions = partitions

        class _Describe:
            def remote(self):
                async def call() -> dict[str, object]:
                    return {"partitions": outer.partitions}

                return call()

        self.describe = _Describe()


async def test_the_first_round_starts_every_side_service_at_once():
    app = DriverApp(settings=AppSettings(metrics={"port": None, "targets_file": None}))
    app._start_observability()
    together = _Together(3)
    app.monitor, app.alerting, app.experiments = (together.actor(n) for n in ("monitor", "alerting", "experiments"))

    await asyncio.wait_for(app.supervise_once(), timeout=5)

    assert sorted(app.side_states) == ["alerting", "experiments", "monitor"]


async def test_a_group_owning_every_partition_is_settled_after_one_heartbeat_interval():
    settings = AppSettings(metrics={"port": None, "targets_file": None}, kafka={"heartbeat_interval_ms": 100},
                           topics={"partitions": 4})
    app = ConsumerGroupApp(settings=settings, handles=[_Consumer([0, 2]), _Consumer([1, 3])])

    await asyncio.wait_for(app.wait_until_assigned(timeout_s=30), timeout=1.5)  # 2 s before, whatever the heartbeat
