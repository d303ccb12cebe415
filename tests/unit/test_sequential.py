"""Experiment statistics that stay honest when watched after every window.

Pinned by simulation, seeded: A/A experiments (no true difference) checked after every window
reject at most about alpha of the time, where the same data checked with a fixed-horizon test
at every look rejects several times as often; a known effect is found with the stated power.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from streaminfer.monitoring.experiments.comparison import ArmComparison, holm
from streaminfer.monitoring.experiments.sequential import MixtureSPRT, RunningMoments
from streaminfer.monitoring.experiments.splits import check_split

ALPHA = 0.05
WINDOWS = 20
PER_WINDOW = 100  # requests per arm per window


def window(values: np.ndarray) -> RunningMoments:
    n = len(values)
    return RunningMoments(n, float(values.mean()), float(((values - values.mean()) ** 2).sum()))


def run_experiment(rng: np.random.Generator, rate_a: float, rate_b: float) -> tuple[bool, bool]:
    """One experiment on a binary outcome (a correct prediction), looked at after every window:
    (mSPRT ever rejected, a fixed-horizon z-test ever rejected)."""
    test, a, b = MixtureSPRT(alpha=ALPHA, tau=0.05), RunningMoments(), RunningMoments()
    naive = False
    for _ in range(WINDOWS):
        a.merge(window(rng.binomial(1, rate_a, PER_WINDOW).astype(float)))
        b.merge(window(rng.binomial(1, rate_b, PER_WINDOW).astype(float)))
        look = test.look(a, b)
        naive = naive or not (look.fixed_lower <= 0 <= look.fixed_upper)
    return test.rejected, naive


def slack(p: float, n: int) -> float:
    """Three binomial standard errors: the room a simulated rate needs around its true value."""
    return 3 * math.sqrt(p * (1 - p) / n)


def test_a_a_experiments_checked_after_every_window_reject_within_alpha_where_peeking_does_not():
    rng = np.random.default_rng(2026)
    sims = 500
    outcomes = [run_experiment(rng, 0.8, 0.8) for _ in range(sims)]
    always_valid = sum(r for r, _ in outcomes) / sims
    peeking = sum(n for _, n in outcomes) / sims
    assert always_valid <= ALPHA + slack(ALPHA, sims), always_valid
    assert peeking > 2 * ALPHA, peeking  # the failure the always-valid test exists to avoid


def test_a_five_point_accuracy_drop_is_detected_with_eighty_percent_power():
    rng = np.random.default_rng(7)
    sims = 200
    detected = sum(run_experiment(rng, 0.85, 0.80)[0] for _ in range(sims)) / sims
    assert detected >= 0.80 - slack(0.8, sims), detected


def test_the_always_valid_interval_covers_the_true_difference_at_every_look():
    rng = np.random.default_rng(3)
    misses = 0
    for _ in range(300):
        test, a, b = MixtureSPRT(alpha=ALPHA, tau=0.05), RunningMoments(), RunningMoments()
        missed = False
        for _ in range(WINDOWS):
            a.merge(window(rng.normal(0.100, 0.03, PER_WINDOW)))  # latency in seconds
            b.merge(window(rng.normal(0.105, 0.03, PER_WINDOW)))
            look = test.look(a, b)
            missed = missed or not (look.lower <= 0.005 <= look.upper)
        misses += missed
    assert misses / 300 <= ALPHA + slack(ALPHA, 300)


def test_running_moments_merged_per_window_equal_the_moments_of_all_the_data():
    rng = np.random.default_rng(1)
    data = rng.normal(5, 2, 1000)
    merged = RunningMoments()
    for part in np.array_split(data, 7):
        merged.merge(window(part))
    assert merged.n == 1000
    assert merged.mean == pytest.approx(data.mean())
    assert merged.variance == pytest.approx(data.var(ddof=1))


def test_a_split_that_drifts_from_its_weights_is_a_sample_ratio_mismatch():
    assert not check_split({"control": 5030, "candidate": 4970}, {"control": 50, "candidate": 50}).mismatch
    bad = check_split({"control": 5300, "candidate": 4700}, {"control": 50, "candidate": 50})
    assert bad.mismatch and "sample ratio mismatch" in bad.describe()
    canary = check_split({"stable": 9500, "canary": 500}, {"stable": 95, "canary": 5})
    assert not canary.mismatch
    assert canary.p_value == pytest.approx(stats.chisquare([9500, 500], [9500, 500]).pvalue)


def test_with_three_arms_the_correction_keeps_the_family_wise_error_within_alpha():
    rng = np.random.default_rng(11)
    sims, family_errors = 300, 0
    for _ in range(sims):
        comparison = ArmComparison("control", ["b", "c", "d"], alpha=ALPHA)
        rejected = set()
        for _ in range(10):
            for arm in ("control", "b", "c", "d"):
                comparison.observe(arm, list(rng.binomial(1, 0.8, PER_WINDOW).astype(float)))
            rejected |= {r.arm for r in comparison.look() if r.significant}
        family_errors += bool(rejected)
    assert family_errors / sims <= ALPHA + slack(ALPHA, sims)


def test_an_arm_that_is_really_worse_is_singled_out_among_three():
    rng = np.random.default_rng(5)
    comparison = ArmComparison("control", ["same", "worse"], alpha=ALPHA)
    for _ in range(30):
        comparison.observe("control", list(rng.binomial(1, 0.85, 200).astype(float)))
        comparison.observe("same", list(rng.binomial(1, 0.85, 200).astype(float)))
        comparison.observe("worse", list(rng.binomial(1, 0.75, 200).astype(float)))
        results = {r.arm: r for r in comparison.look()}
    assert results["worse"].significant and not results["same"].significant
    assert results["worse"].relative == pytest.approx(-0.10 / 0.85, abs=0.03)
    assert results["worse"].look.upper < 0


def test_holm_adjusted_p_values_match_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(9)
    for _ in range(10):
        p_values = list(rng.uniform(0, 0.2, rng.integers(1, 6)))
        assert holm(p_values) == pytest.approx(list(multipletests(p_values, method="holm")[1]))
