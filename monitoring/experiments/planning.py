"""Planning an experiment: how many observations each arm needs, and for how long.

Two answers for the same question (does a treatment arm differ from the control by at least
the minimum detectable effect?):

- **fixed horizon**: the sample size per arm of a two-sided test looked at once, at the end.
  A proportion (accuracy, error rate) uses the normal test on Cohen's arcsine effect size ``h``
  (statsmodels' ``NormalIndPower`` with ``proportion_effectsize``); a mean (latency) uses the
  two-sample t-test on ``d = effect / sd`` (``TTestIndPower``). Both solve the power equation
  with both tails counted, as statsmodels does.
- **always valid**: the expected sample size per arm of the test the experiment controller
  runs (``comparison.ArmComparison``: a mixture SPRT per arm, Holm across arms, looked at after
  every window), by seeded simulation with every treatment arm off by exactly the effect. Its
  run ends when every arm is declared different; runs that reach ``cap`` (a multiple of the
  fixed horizon) stop there and count as not declared.

With more than one treatment arm, Holm's procedure tests the smallest p-value at ``alpha / m``
(``m`` comparisons); the fixed horizon is planned at that level, so each comparison keeps its
power whatever the others show (conservative for the later steps of Holm's procedure).

Durations assume the arms split the given rate evenly: ``rate`` is observations per second
into the experiment (requests per second for latency; labelled requests per second for
accuracy, since an accuracy outcome exists only once its label has arrived). It is given, or
read from the Prometheus that scrapes the system (``observed_rate``): the model's rate over the
last ``RATE_WINDOW`` of the counter that counts that metric's observations.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import optimize, stats

from streaminfer.monitoring.errors import ExperimentPlanInvalid
from streaminfer.monitoring.experiments.comparison import ArmComparison
from streaminfer.monitoring.experiments.evidence import ACCURACY_TAU, LATENCY_TAU_MS
from streaminfer.monitoring.experiments.sequential import RunningMoments

SIMULATIONS = 200
CAP = 20
"""Simulated runs stop at this many times the fixed-horizon sample size."""

LOOKS_PER_FIXED_HORIZON = 100
"""Without a rate, the simulation looks this many times over the fixed-horizon sample size."""


RATE_WINDOW = "15m"
RATE_QUERIES = {
    "accuracy": 'sum(rate(streaminfer_labels_total{{model="{model}",outcome="joined"}}[{window}]))',
    "error-rate": 'sum(rate(streaminfer_requests_total{{model="{model}"}}[{window}]))',
    "latency": 'sum(rate(streaminfer_requests_total{{model="{model}",outcome="predicted"}}[{window}]))',
}
"""Observations per second of each metric: labels joined to a prediction (accuracy), requests
ended either way (error rate), answered requests (latency)."""


class MetricKind(str, Enum):
    PROPORTION = "proportion"
    MEAN = "mean"


METRICS = {"proportion": MetricKind.PROPORTION, "accuracy": MetricKind.PROPORTION,
           "error-rate": MetricKind.PROPORTION, "mean": MetricKind.MEAN, "latency": MetricKind.MEAN}
"""What ``--metric`` accepts: a kind, or one of the system's metrics (which says the kind)."""


@dataclass(frozen=True)
class PlanInput:
    kind: MetricKind
    baseline: float
    """The control's proportion (0..1), or its mean."""

    effect: float
    """The minimum detectable effect: an absolute difference, in the metric's units."""

    sd: float | None = None
    """A mean's standard deviation per observation."""

    alpha: float = 0.05
    power: float = 0.8
    arms: int = 2
    """Arms including the control."""

    rate: float | None = None
    """Observations per second into the experiment, all arms together."""

    look_interval_s: float = 1.0
    """How often the controller looks (``experiments.look_interval_s``)."""

    tau: float | None = None
    """The sequential test's mixing scale; default: the controller's for the kind."""

    seed: int = 0
    simulations: int = SIMULATIONS

    def validated(self) -> PlanInput:
        """This input, or ``ExperimentPlanInvalid`` naming the first bad figure and its range."""
        checks = [
            (0 < self.alpha < 1, f"alpha {self.alpha:g} must be between 0 and 1"),
            (0 < self.power < 1, f"power {self.power:g} must be between 0 and 1"),
            (self.power > self.alpha, f"power {self.power:g} must exceed alpha {self.alpha:g}"),
            (self.arms >= 2, f"arms {self.arms} must be at least 2 (the control and one treatment)"),
            (self.effect != 0, "the minimum detectable effect must not be 0"),
            (self.rate is None or self.rate > 0, f"rate {self.rate} must be positive (observations per second)"),
            (self.tau is None or self.tau > 0, f"tau {self.tau} must be positive"),
            (self.simulations >= 1, f"simulations {self.simulations} must be at least 1"),
        ]
        if self.kind is MetricKind.PROPORTION:
            treated = self.baseline + self.effect
            checks += [
                (0 < self.baseline < 1, f"baseline {self.baseline:g} must be a proportion strictly between 0 and 1"),
                (0 < treated < 1, f"baseline {self.baseline:g} plus effect {self.effect:g} = {treated:g} is not "
                                  f"a proportion strictly between 0 and 1"),
                (self.sd is None, "a proportion's spread follows from its baseline: drop --sd"),
            ]
        else:
            checks.append((self.sd is not None and self.sd > 0, "a mean needs its standard deviation (--sd), positive"))
        for ok, problem in checks:
            if not ok:
                raise ExperimentPlanInvalid(problem)
        return self

    @property
    def comparisons(self) -> int:
        return self.arms - 1

    @property
    def test_alpha(self) -> float:
        """Each comparison's level: Holm's first step (Bonferroni's ``alpha / m``)."""
        return self.alpha / self.comparisons

    @property
    def effect_size(self) -> float:
        """Cohen's h for a proportion (treatment against control), d for a mean."""
        if self.kind is MetricKind.PROPORTION:
            return 2 * math.asin(math.sqrt(self.baseline + self.effect)) - 2 * math.asin(math.sqrt(self.baseline))
        assert self.sd is not None
        return self.effect / self.sd

    @property
    def mde_text(self) -> str:
        if self.kind is MetricKind.PROPORTION:
            return f"{self.effect:+g} (to {self.baseline + self.effect:g}, Cohen's h {self.effect_size:+.4f})"
        return f"{self.effect:+g} (sd {self.sd:g}, Cohen's d {self.effect_size:+.4f})"

    @property
    def mixing_scale(self) -> float:
        if self.tau is not None:
            return self.tau
        return ACCURACY_TAU if self.kind is MetricKind.PROPORTION else LATENCY_TAU_MS


@dataclass(frozen=True)
class Sequential:
    mean: float
    median: float
    p90: float
    """Per-arm sample size at the end of the simulated runs (capped runs count at the cap)."""

    declared: float
    """Share of runs that declared every arm before the cap: the sequential test's power."""

    look_every: int
    """Observations per arm between two looks."""


@dataclass(frozen=True)
class Plan:
    given: PlanInput
    fixed_per_arm: int
    sequential: Sequential

    @property
    def cap(self) -> int:
        return max(CAP * self.fixed_per_arm, self.sequential.look_every)

    @property
    def fixed_total(self) -> int:
        return self.fixed_per_arm * self.given.arms

    def duration_s(self, per_arm: float) -> float | None:
        rate = self.given.rate
        return None if rate is None else per_arm * self.given.arms / rate


def fixed_horizon_per_arm(given: PlanInput) -> float:
    """The exact (fractional) sample size per arm for ``power`` at ``alpha / m``, two-sided."""
    alpha, power, size = given.test_alpha, given.power, abs(given.effect_size)
    if given.kind is MetricKind.PROPORTION:
        crit = stats.norm.isf(alpha / 2)

        def shortfall(n: float) -> float:
            shift = size * math.sqrt(n / 2)
            return float(stats.norm.sf(crit - shift) + stats.norm.cdf(-crit - shift)) - power
    else:

        def shortfall(n: float) -> float:
            df, shift = 2 * n - 2, size * math.sqrt(n / 2)
            crit = stats.t.isf(alpha / 2, df)
            return float(stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift)) - power

    low, high = 2.0, 4.0
    while shortfall(high) < 0:
        low, high = high, high * 2
        if high > 1e12:
            raise ExperimentPlanInvalid(f"an effect of {given.effect:g} needs over 10^12 observations per arm")
    return float(optimize.brentq(shortfall, low, high, xtol=1e-6))


def simulate_sequential(given: PlanInput, fixed_per_arm: int) -> Sequential:
    """Seeded runs of the controller's comparison until every treatment arm is declared."""
    rng = np.random.default_rng(given.seed)
    if given.rate is not None:
        look_every = max(1, round(given.rate * given.look_interval_s / given.arms))
    else:
        look_every = max(1, fixed_per_arm // LOOKS_PER_FIXED_HORIZON)
    cap = max(CAP * fixed_per_arm, look_every)
    ends = [_one_run(given, rng, look_every, cap) for _ in range(given.simulations)]
    declared = sum(1 for _, done in ends if done) / len(ends)
    sizes = sorted(float(n) for n, _ in ends)
    return Sequential(mean=sum(sizes) / len(sizes), median=_quantile(sizes, 0.5), p90=_quantile(sizes, 0.9),
                      declared=declared, look_every=look_every)


def _one_run(given: PlanInput, rng: np.random.Generator, look_every: int, cap: int) -> tuple[int, bool]:
    treatments = [f"arm{i}" for i in range(1, given.arms)]
    comparison = ArmComparison("control", treatments, alpha=given.alpha, tau=given.mixing_scale)
    n = 0
    while n < cap:
        batch = min(look_every, cap - n)
        n += batch
        comparison.moments["control"].merge(_window(given, rng, batch, treated=False))
        for arm in treatments:
            comparison.moments[arm].merge(_window(given, rng, batch, treated=True))
        if n >= 2 and all(result.significant for result in comparison.look()):
            return n, True
    return n, False


def _window(given: PlanInput, rng: np.random.Generator, size: int, treated: bool) -> RunningMoments:
    """The moments of ``size`` observations, drawn as the controller would receive them."""
    if given.kind is MetricKind.PROPORTION:
        p = given.baseline + (given.effect if treated else 0.0)
        mean = float(rng.binomial(size, p)) / size
        return RunningMoments(size, mean, size * mean * (1 - mean))
    assert given.sd is not None
    mu = given.baseline + (given.effect if treated else 0.0)
    mean = float(rng.normal(mu, given.sd / math.sqrt(size)))
    m2 = given.sd ** 2 * float(rng.chisquare(size - 1)) if size > 1 else 0.0  # normal samples: sd^2 chi^2(size-1)
    return RunningMoments(size, mean, m2)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def observed_rate(prometheus_url: str, model: str, metric: str, timeout_s: float = 10.0) -> tuple[float, str]:
    """The model's current rate of ``metric`` observations per second, and the query that gave
    it; ``ExperimentPlanInvalid`` saying what to do when Prometheus cannot give one."""
    if metric not in RATE_QUERIES:
        raise ExperimentPlanInvalid(f"Prometheus has no rate for metric {metric!r}: use --metric "
                                    f"{', '.join(RATE_QUERIES)}, or pass --rate")
    escaped = model.replace("\\", "\\\\").replace('"', '\\"')
    query = RATE_QUERIES[metric].format(model=escaped, window=RATE_WINDOW)
    address = f"{prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise ExperimentPlanInvalid(f"Prometheus at {prometheus_url} refused {query} (HTTP {exc.code}): "
                                    f"fix --prometheus or pass --rate") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ExperimentPlanInvalid(f"Prometheus at {prometheus_url} did not answer "
                                    f"({getattr(exc, 'reason', exc)}): fix --prometheus or pass --rate") from None
    results = body.get("data", {}).get("result", []) if body.get("status") == "success" else []
    rate = float(results[0]["value"][1]) if results else 0.0
    if not rate > 0:
        raise ExperimentPlanInvalid(f"Prometheus at {prometheus_url} sees no traffic for {query}: is {model!r} "
                                    f"served and scraped? Or pass --rate")
    return rate, query


def plan(given: PlanInput) -> Plan:
    given = given.validated()
    fixed = math.ceil(fixed_horizon_per_arm(given))
    return Plan(given, fixed, simulate_sequential(given, fixed))
