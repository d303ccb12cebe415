"""What one consuming process spends per model version, measured as it runs.

Two kinds of seconds, each exported as a counter per model version
(``monitoring.observability.metrics``):

* inference: the time each batch spent in its session, measured around the call. On a CUDA
  session that is GPU-seconds; on a CPU session, CPU-seconds (times ``cost.inference_cores``,
  the cores a session computes on).
* consumer: this process's CPU time (``time.process_time``: every thread of it), read at each
  ``settle``, less the inference CPU-seconds that ran inside this process (in-process sessions),
  so nothing is counted twice; shared among versions by the answers each gave since the last
  ``settle`` (kept for later while nothing was answered).

Spend is those seconds at the configured prices; per model, today's spend (UTC) projected to the
whole day is a gauge next to the model's daily budget, for the alert that compares them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

from streaminfer.monitoring.cost.pricing import DAY_S, day_start, project_daily, spend
from streaminfer.monitoring.cost.settings import CostSettings
from streaminfer.monitoring.observability.metrics import PipelineMetrics

Device = Literal["cpu", "gpu"]
VersionKey = tuple[str, str]


class CostMeter:
    def __init__(self, settings: CostSettings, metrics: PipelineMetrics,
                 now: Callable[[], float] = time.time, cpu_time: Callable[[], float] = time.process_time) -> None:
        """``now``: seconds since the epoch (for the UTC day); ``cpu_time``: this process's CPU seconds."""
        self.settings = settings
        self._metrics = metrics
        self._now = now
        self._cpu_time = cpu_time
        self._last_cpu = cpu_time()
        self._started = now()
        self._day = day_start(self._started)
        self._answers: Counter[VersionKey] = Counter()
        self._in_process_cpu = 0.0
        self._unattributed_cpu = 0.0
        self._today: dict[str, float] = {}
        for model, budget in settings.daily_budgets.items():
            metrics.cost_daily_budget.labels(model).set(budget)

    def serving(self, model: str, version: str) -> None:
        """A version starts being served here: its counters exist from 0, so Prometheus's
        ``increase`` sees its first answers too."""
        for counter in (self._metrics.cost_answers, self._metrics.cost_spend, self._metrics.cost_gpu_seconds):
            counter.labels(model, version)
        for part in ("consumer", "inference"):
            self._metrics.cost_cpu_seconds.labels(model, version, part)

    def inference(self, model: str, version: str, seconds: float, device: Device, in_process: bool) -> None:
        """One batch's time in its session."""
        if device == "gpu":
            self._metrics.cost_gpu_seconds.labels(model, version).inc(seconds)
            self._spent(model, version, spend(0.0, seconds, self.settings))
            return
        cpu = seconds * self.settings.inference_cores
        self._metrics.cost_cpu_seconds.labels(model, version, "inference").inc(cpu)
        self._spent(model, version, spend(cpu, 0.0, self.settings))
        if in_process:
            self._in_process_cpu += cpu

    def answered(self, model: str, version: str, count: int) -> None:
        """Predictions sent (cached ones too): what the consumer's time is shared by."""
        self._metrics.cost_answers.labels(model, version).inc(count)
        self._answers[(model, version)] += count

    def settle(self) -> None:
        """Share the process's CPU time since the last call among the versions that answered, and
        update each model's projected daily spend."""
        cpu = self._cpu_time()
        consumer = max(0.0, cpu - self._last_cpu - self._in_process_cpu) + self._unattributed_cpu
        self._last_cpu, self._in_process_cpu = cpu, 0.0
        total = sum(self._answers.values())
        if total:
            for (model, version), count in self._answers.items():
                share = consumer * count / total
                self._metrics.cost_cpu_seconds.labels(model, version, "consumer").inc(share)
                self._spent(model, version, spend(share, 0.0, self.settings))
            self._answers.clear()
            self._unattributed_cpu = 0.0
        else:
            self._unattributed_cpu = consumer
        self._project()

    def projected(self, model: str) -> float:
        """Today's spend on ``model`` by this process, extrapolated to the end of the UTC day."""
        now = self._now()
        start = day_start(now)
        observed = now - max(start, self._started)
        return project_daily(self._today.get(model, 0.0), observed, start + DAY_S - now)

    def _spent(self, model: str, version: str, amount: float) -> None:
        if amount <= 0:
            return
        self._roll_day()
        self._metrics.cost_spend.labels(model, version).inc(amount)
        self._today[model] = self._today.get(model, 0.0) + amount

    def _roll_day(self) -> None:
        today = day_start(self._now())
        if today != self._day:
            self._day, self._today = today, dict.fromkeys(self._today, 0.0)

    def _project(self) -> None:
        self._roll_day()
        for model in {*self._today, *self.settings.daily_budgets}:
            self._metrics.cost_projected_daily_spend.labels(model).set(self.projected(model))
