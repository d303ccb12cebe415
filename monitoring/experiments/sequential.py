"""Always-valid inference for a difference in means: the mixture sequential probability ratio
test (mSPRT) of Johari, Pekelis and Walsh ("Always valid inference", 2017).

An experiment dashboard is looked at after every window, and a rollout gate acts on whatever it
shows at that moment. A fixed-horizon test checked that way rejects a true null far more often
than its alpha (each look is another chance). The mSPRT's p-value stays valid at every look: the
chance that it *ever* drops below alpha under the null is at most alpha.

For a normal estimate ``d`` of the difference with variance ``v`` and a normal mixing
distribution N(0, tau^2) over the effect under the alternative, the likelihood ratio is

    L = sqrt(v / (v + tau^2)) * exp(tau^2 d^2 / (2 v (v + tau^2)))

and the always-valid p-value is the running minimum of ``1 / L``. Inverting the test gives a
confidence sequence: an interval that covers the true difference at all looks at once.

``tau`` sets where the test is most sensitive: about the size of effect worth detecting. The
variance is estimated from the data (plug-in), as in the paper's practical version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Look:
    """One look at a running comparison of arm B against arm A."""

    n_a: int
    n_b: int
    difference: float
    """Mean of B minus mean of A."""

    p_value: float
    """Always valid: the running minimum over the looks so far."""

    lower: float
    upper: float
    """Always-valid confidence interval for the difference (a confidence sequence)."""

    fixed_lower: float
    fixed_upper: float
    """The fixed-horizon (Welch) interval, valid only if this were the one planned look."""

    rejected: bool
    """The always-valid p-value has reached alpha: the arms differ (and stay declared so)."""


class MixtureSPRT:
    """Feed it the running sums of two arms after every window; it keeps the running p-value."""

    def __init__(self, alpha: float = 0.05, tau: float = 0.05) -> None:
        if not 0 < alpha < 1 or tau <= 0:
            raise ValueError(f"alpha must be in (0, 1) and tau positive, got alpha={alpha}, tau={tau}")
        self.alpha = alpha
        self.tau2 = tau * tau
        self._p = 1.0
        self._lower, self._upper = -math.inf, math.inf
        self._z = float(stats.norm.ppf(1 - alpha / 2))

    def look(self, a: RunningMoments, b: RunningMoments) -> Look:
        d = b.mean - a.mean
        v = a.variance / max(a.n, 1) + b.variance / max(b.n, 1)
        if a.n < 2 or b.n < 2 or v <= 0:
            return Look(a.n, b.n, d, self._p, self._lower, self._upper, -math.inf, math.inf, self.rejected)
        log_lr = 0.5 * math.log(v / (v + self.tau2)) + self.tau2 * d * d / (2 * v * (v + self.tau2))
        self._p = min(self._p, math.exp(-log_lr) if log_lr > 0 else 1.0)
        half = math.sqrt(v * (v + self.tau2) / self.tau2 * (math.log((v + self.tau2) / v) - 2 * math.log(self.alpha)))
        # a confidence sequence may be intersected over the looks: each one covers at all times
        self._lower, self._upper = max(self._lower, d - half), min(self._upper, d + half)
        z = self._z
        return Look(a.n, b.n, d, self._p, self._lower, self._upper, d - z * math.sqrt(v), d + z * math.sqrt(v),
                    self.rejected)

    @property
    def p_value(self) -> float:
        return self._p

    @property
    def rejected(self) -> bool:
        return self._p <= self.alpha


@dataclass
class RunningMoments:
    """Count, mean and variance of a stream of outcomes (Welford), mergeable per window."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    def add_many(self, values: list[float] | tuple[float, ...]) -> None:
        for value in values:
            self.add(value)

    def merge(self, other: RunningMoments) -> None:
        """Chan et al.'s parallel update: a window's moments folded into the running ones."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.mean += delta * other.n / n
        self.n = n

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0
