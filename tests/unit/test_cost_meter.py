"""Cost per model version: measured seconds, priced, shared by answers, projected over the day.

Why: a cost figure that counted in-process inference twice, or lost the consumer's time while
nothing was answered, would mislead the comparison of versions that the report exists for; a
projection that did not reset at midnight would alert on yesterday's spend.
"""

from __future__ import annotations

import doctest
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.cost import pricing
from streaminfer.monitoring.cost.meter import CostMeter
from streaminfer.monitoring.cost.pricing import per_thousand, project_daily, spend
from streaminfer.monitoring.cost.settings import CostSettings
from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.schemas.headers import RequestHeaders
from streaminfer.streams.clock import ManualClock
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.streams.pipeline.version_batchers import ModelBatchers
from streaminfer.streams.settings import PipelineSettings
from streaminfer.workers.routing.served import Route

PRICES = CostSettings(core_hour_price=3.6, gpu_hour_price=36.0, daily_budgets={"m": 10.0})
MIDNIGHT = 1_700_006_400.0  # a UTC midnight


class Clocks:
    """Wall time and process CPU time, both moved by the test."""

    def __init__(self, now: float) -> None:
        self.now, self.cpu = now, 0.0


@pytest.fixture
def clocks() -> Clocks:
    return Clocks(MIDNIGHT + 6 * 3600)


@pytest.fixture
def metrics() -> PipelineMetrics:
    return PipelineMetrics(CollectorRegistry())


def meter(clocks: Clocks, metrics: PipelineMetrics, settings: CostSettings = PRICES) -> CostMeter:
    return CostMeter(settings, metrics, now=lambda: clocks.now, cpu_time=lambda: clocks.cpu)


def value(metrics: PipelineMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_pricing_examples_hold():
    assert doctest.testmod(pricing).failed == 0


def test_seconds_turn_into_money_at_the_hourly_prices():
    assert spend(cpu_s=3600, gpu_s=0, prices=PRICES) == pytest.approx(3.6)
    assert spend(cpu_s=0, gpu_s=60, prices=PRICES) == pytest.approx(0.6)
    assert per_thousand(0.6, 1500) == pytest.approx(0.4)
    assert math.isnan(per_thousand(1.0, 0))


def test_a_day_observed_for_six_hours_projects_four_times_its_spend():
    assert project_daily(spend_today=2.5, observed_s=6 * 3600, left_s=18 * 3600) == pytest.approx(10.0)
    assert project_daily(spend_today=2.5, observed_s=0, left_s=86_400) == 2.5


def test_in_process_inference_is_not_counted_again_as_consumer_time(clocks, metrics):
    cost = meter(clocks, metrics)
    cost.inference("m", "1", 2.0, "cpu", in_process=True)
    cost.answered("m", "1", 1000)
    clocks.cpu += 5.0  # the process's CPU time includes the 2 s of inference
    cost.settle()
    assert value(metrics, "streaminfer_cost_cpu_seconds_total", model="m", version="1", part="inference") == 2.0
    assert value(metrics, "streaminfer_cost_cpu_seconds_total", model="m", version="1", part="consumer") == 3.0
    assert value(metrics, "streaminfer_cost_spend_total", model="m", version="1") == pytest.approx(5.0 * 3.6 / 3600)


def test_inference_in_another_process_or_on_a_gpu_adds_to_the_consumer_s_time(clocks, metrics):
    cost = meter(clocks, metrics)
    cost.inference("m", "1", 2.0, "cpu", in_process=False)
    cost.inference("m", "2", 1.0, "gpu", in_process=True)
    cost.answered("m", "1", 300)
    cost.answered("m", "2", 100)
    clocks.cpu += 4.0
    cost.settle()
    assert value(metrics, "streaminfer_cost_cpu_seconds_total", model="m", version="1", part="consumer") == 3.0
    assert value(metrics, "streaminfer_cost_cpu_seconds_total", model="m", version="2", part="consumer") == 1.0
    assert value(metrics, "streaminfer_cost_gpu_seconds_total", model="m", version="2") == 1.0
    assert value(metrics, "streaminfer_cost_spend_total", model="m", version="2") == pytest.approx((3.6 + 36) / 3600)
    assert value(metrics, "streaminfer_cost_answers_total", model="m", version="1") == 300


def test_consumer_time_while_nothing_is_answered_goes_to_the_next_answers(clocks, metrics):
    cost = meter(clocks, metrics)
    clocks.cpu += 1.5
    cost.settle()
    assert value(metrics, "streaminfer_cost_cpu_seconds_total", model="m", version="1", part="consumer") == 0
    cost.answered("m", "1", 10)
    clocks.cpu += 0.5
    cost.settle()
    assert value(metrics, "streaminfer_cost_cpu_seconds_total", model="m", version="1", part="consumer") == 2.0


def test_the_projection_extrapolates_today_s_spend_and_starts_again_at_midnight(clocks, metrics):
    clocks.now = MIDNIGHT  # the consumer starts at midnight
    cost = meter(clocks, metrics)
    assert value(metrics, "streaminfer_cost_daily_budget", model="m") == 10.0
    clocks.now += 6 * 3600
    cost.inference("m", "1", 2500.0, "cpu", in_process=False)  # 2.5 spent in six hours
    cost.settle()
    assert value(metrics, "streaminfer_cost_projected_daily_spend", model="m") == pytest.approx(10.0)
    clocks.now = MIDNIGHT + 86_400 + 60  # the next day: nothing spent yet
    cost.settle()
    assert value(metrics, "streaminfer_cost_projected_daily_spend", model="m") == 0.0


def test_a_consumer_started_mid_day_extrapolates_from_its_own_start(clocks, metrics):
    clocks.now = MIDNIGHT + 12 * 3600
    cost = meter(clocks, metrics)
    clocks.now += 3600
    cost.inference("m", "1", 1000.0, "cpu", in_process=False)  # 1.0 in its first hour
    assert cost.projected("m") == pytest.approx(1.0 + 11.0)


class FakePool:
    def __init__(self, providers: list[str], pid: int) -> None:
        self._described = [{"providers": providers, "pid": pid}]

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"][:, 0]}

    async def describe(self) -> list[dict[str, object]]:
        return self._described


def served(version: str, providers: list[str], pid: int) -> SimpleNamespace:
    entry = SimpleNamespace(name="m", version=version, masking=None, metadata=SimpleNamespace(cache=None))
    return SimpleNamespace(entry=entry, pool=FakePool(providers, pid), key=("m", version))


def decoded(version: SimpleNamespace) -> Decoded:
    record = ConsumerRecord("requests", 0, 0, 0, 0, b"k", b"{}", None, 1, 2, [])
    return Decoded(record, "r", RequestHeaders(), Route(version), {"x": np.ones((1, 1), np.float32)}, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("providers", "pid", "counter", "labels"), [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], os.getpid(), "streaminfer_cost_gpu_seconds_total", {}),
    (["CPUExecutionProvider"], os.getpid() + 1, "streaminfer_cost_cpu_seconds_total", {"part": "inference"}),
])
async def test_a_batch_s_session_time_is_counted_as_gpu_or_cpu_seconds_by_where_it_ran(metrics, providers, pid, counter, labels):
    version = served("1", providers, pid)
    cost = CostMeter(PRICES, metrics)
    batchers = ModelBatchers(FakeModels(version), PipelineSettings(max_wait_ms=0), metrics, 1, ManualClock(), cost=cost)  # type: ignore[arg-type]
    batchers.start()
    await batchers.submit(version, [decoded(version)])  # type: ignore[arg-type]
    await batchers.stop()
    assert value(metrics, counter, model="m", version="1", **labels) > 0
    assert value(metrics, "streaminfer_cost_spend_total", model="m", version="1") > 0


class FakeModels:
    def __init__(self, *versions: SimpleNamespace) -> None:
        self.versions = list(versions)

    def all(self) -> list[SimpleNamespace]:
        return self.versions
