"""The one actor shell around the side services: start once, replace a failed loop, stop twice."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from streaminfer.actors.service import ServiceActor


class FakeService:
    def __init__(self, number: int) -> None:
        self.number = number
        self.failure: BaseException | None = None
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    def describe(self) -> dict[str, object]:
        return {"number": self.number, "failed": repr(self.failure) if self.failure else None}


@dataclass
class FakeBuilder:
    label: str = "fake"
    built: list[FakeService] = field(default_factory=list)

    def __call__(self, registry: CollectorRegistry) -> FakeService:
        self.built.append(FakeService(len(self.built)))
        return self.built[-1]


async def test_ensure_started_builds_the_service_once_and_reports_typed_state():
    builder = FakeBuilder()
    actor = ServiceActor(builder, metrics_host=None)
    first = await actor.ensure_started()
    second = await actor.ensure_started()
    assert len(builder.built) == 1 and builder.built[0].started == 1
    assert (first.label, first.pid, first.metrics_url, first.detail["number"]) == ("fake", os.getpid(), None, 0)
    assert second == first


async def test_a_service_whose_loop_failed_is_stopped_and_replaced_by_a_fresh_one():
    builder = FakeBuilder()
    actor = ServiceActor(builder, metrics_host=None)
    await actor.ensure_started()
    builder.built[0].failure = RuntimeError("loop died")
    assert actor.describe().failed == "RuntimeError('loop died')"
    state = await actor.ensure_started()
    assert builder.built[0].stopped == 1
    assert state.detail["number"] == 1 and state.failed is None


async def test_stop_is_safe_to_call_twice_and_the_metrics_endpoint_is_served_on_request():
    builder = FakeBuilder()
    actor = ServiceActor(builder, metrics_host="127.0.0.1")
    state = await actor.ensure_started()
    assert state.metrics_url is not None and "127.0.0.1" in state.metrics_url
    await actor.stop()
    await actor.stop()
    assert builder.built[0].stopped == 1
