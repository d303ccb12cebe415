"""Sample ratio mismatch: does the traffic each arm got match the split that was configured?

A split that is off (a sticky hash that favours some keys, an arm that drops requests, a
consumer that lags on one arm) biases every comparison built on it, whatever its p-value says.
The check is a chi-square goodness-of-fit test of the observed counts against the configured
weights, at a strict threshold (0.001) because it runs continuously and a true mismatch grows
more certain with every request. Count the units that were randomised (distinct request keys,
when assignment is sticky per key), not requests: a key's requests all go to one arm, so as
draws they are not independent, and a heavy key alone would look like a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats

SRM_ALPHA = 0.001


@dataclass(frozen=True)
class SplitCheck:
    observed: dict[str, int]
    expected_share: dict[str, float]
    p_value: float
    mismatch: bool

    def describe(self) -> str:
        shares = ", ".join(
            f"{arm} {count / max(sum(self.observed.values()), 1):.1%} (want {self.expected_share[arm]:.1%})"
            for arm, count in self.observed.items()
        )
        verdict = "sample ratio mismatch" if self.mismatch else "split as configured"
        return f"{verdict}: {shares}; chi-square p={self.p_value:.2g}"


def check_split(observed: dict[str, int], weights: dict[str, float], alpha: float = SRM_ALPHA) -> SplitCheck:
    """``observed`` requests per arm against the configured ``weights`` (any positive scale)."""
    if set(observed) != set(weights):
        raise ValueError(f"arms differ: observed {sorted(observed)}, configured {sorted(weights)}")
    total_weight = sum(weights.values())
    share = {arm: weights[arm] / total_weight for arm in weights}
    n = sum(observed.values())
    arms = [arm for arm in weights if share[arm] > 0]
    if n == 0 or len(arms) < 2:
        return SplitCheck(dict(observed), share, 1.0, False)
    result = stats.chisquare([observed[a] for a in arms], [share[a] * n for a in arms])
    p_value = float(result.pvalue)
    return SplitCheck(dict(observed), share, p_value, p_value < alpha)
