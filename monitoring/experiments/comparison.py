"""Arms against their control: effect sizes with intervals, and decisions that stay honest with
more than two arms.

Each treatment arm is compared with the control by its own always-valid test
(``monitoring.experiments.sequential``). With k treatment arms, k tests run at once; the decisions use
Holm's step-down correction, which keeps the family-wise error rate at alpha for any dependence
between the comparisons. (It is a few lines here: statsmodels' ``multipletests`` gives the same
numbers but runs a full garbage collection per call, which a look after every window cannot
afford.)
"""

from __future__ import annotations

from dataclasses import dataclass

from streaminfer.monitoring.experiments.sequential import Look, MixtureSPRT, RunningMoments


@dataclass(frozen=True)
class ArmResult:
    arm: str
    look: Look
    relative: float | None
    """Difference as a share of the control's mean (None when the control's mean is 0)."""

    adjusted_p: float
    significant: bool
    """After the multiple-comparison correction."""


class ArmComparison:
    """Every treatment arm against ``control``, on one outcome (accuracy, latency, ...)."""

    def __init__(self, control: str, treatments: list[str], alpha: float = 0.05, tau: float = 0.05) -> None:
        if control in treatments or not treatments:
            raise ValueError(f"need a control and at least one other arm, got {control!r} vs {treatments}")
        self.control = control
        self.alpha = alpha
        self.moments = {arm: RunningMoments() for arm in (control, *treatments)}
        self.tests = {arm: MixtureSPRT(alpha=alpha, tau=tau) for arm in treatments}

    def observe(self, arm: str, values: list[float]) -> None:
        window = RunningMoments()
        window.add_many(values)
        self.moments[arm].merge(window)

    def look(self) -> list[ArmResult]:
        """One look at every comparison (call it after each window)."""
        control = self.moments[self.control]
        looks = {arm: test.look(control, self.moments[arm]) for arm, test in self.tests.items()}
        arms = list(looks)
        adjusted = holm([looks[arm].p_value for arm in arms])
        reject = [p <= self.alpha for p in adjusted]
        return [
            ArmResult(arm, looks[arm], looks[arm].difference / control.mean if control.mean else None,
                      float(adjusted[i]), bool(reject[i]))
            for i, arm in enumerate(arms)
        ]


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: reject where the adjusted value <= alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
