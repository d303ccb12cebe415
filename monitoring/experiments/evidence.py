"""An experiment's running evidence, and the decisions it supports.

Fed with what the experiment's arms produced (answers, model errors, labels joined later, shadow
outputs), it answers three questions after every window:

- **A/B/n**: is the split what was configured (sample ratio mismatch), and does any arm differ
  from the control in accuracy or latency? Always-valid sequential tests per arm, Holm across
  arms, effect sizes with their confidence sequences (``monitoring.experiments.comparison``).
- **canary**: may the candidate move to the next step, must it be rolled back (and by which
  gate), or is there not enough evidence yet? Gates use the evidence of the current step only,
  so a candidate that degrades at a larger share is caught at that share.
- **shadow**: how often does the shadow agree with the answering version, and do their score
  distributions differ (two-sample Kolmogorov-Smirnov from scipy)?

No Kafka here: ``streams.experiment_controller`` feeds it, and the tests feed it directly.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec
from scipy import stats

from streaminfer.monitoring.experiments.comparison import ArmComparison
from streaminfer.monitoring.experiments.sequential import MixtureSPRT, RunningMoments
from streaminfer.monitoring.experiments.splits import check_split
from streaminfer.workers.routing.traffic import Gates, TrafficPolicy

ACCURACY_TAU = 0.05
"""The always-valid tests' mixing scale (``sequential.MixtureSPRT``): about the effect worth
detecting, in accuracy (a share) and in latency (milliseconds)."""
LATENCY_TAU_MS = 20.0
RESERVOIR = 4096
MIN_SCORES_FOR_SHIFT = 50
JOIN_CAPACITY = 200_000
UNITS_CAPACITY = 1_000_000
"""Distinct request keys remembered per arm; past it the split check uses those seen so far."""


class Reservoir:
    """A uniform sample of bounded size of a stream of numbers."""

    def __init__(self, size: int = RESERVOIR, seed: int = 0) -> None:
        self.size, self.seen, self.values = size, 0, []  # type: ignore[var-annotated]
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value

    def quantile(self, q: float) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class ArmEvidence:
    answered: int = 0
    errors: int = 0
    latency_ms: Reservoir = field(default_factory=Reservoir)
    """For quantiles; ``latency`` below keeps every value's moments for the sequential test."""

    latency: RunningMoments = field(default_factory=RunningMoments)
    scores: Reservoir = field(default_factory=Reservoir)
    correct: RunningMoments = field(default_factory=RunningMoments)
    units: set[int] = field(default_factory=set)
    """Distinct request keys: the units assignment randomises, which the split check counts."""

    def saw(self, unit: bytes) -> None:
        if len(self.units) < UNITS_CAPACITY:
            self.units.add(hash(unit))

    @property
    def requests(self) -> int:
        return self.answered + self.errors

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class Verdict(msgspec.Struct, frozen=True):
    action: str
    """``wait``, ``advance``, ``complete`` or ``rollback``."""

    gate: str = ""
    detail: str = ""


class ArmSummary(msgspec.Struct):
    arm: str
    version: str
    requests: int
    keys: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p99_ms: float | None
    accuracy: float | None
    labelled: int


class Effect(msgspec.Struct):
    arm: str
    outcome: str
    """``accuracy`` or ``latency_ms``."""

    difference: float
    lower: float
    upper: float
    p_value: float
    adjusted_p: float
    significant: bool


class ShadowSummary(msgspec.Struct):
    compared: int
    agreement: float | None
    shadow_errors: int
    ks_statistic: float | None
    ks_p_value: float | None
    primary_p50_ms: float | None
    shadow_p50_ms: float | None


class Snapshot(msgspec.Struct, omit_defaults=True):
    """One look, as the report plots it: ``experiments/<name>.jsonl`` holds one per window."""

    at_ms: int
    experiment: str
    model: str
    kind: str
    arms: list[ArmSummary]
    effects: list[Effect] = []
    split_p_value: float | None = None
    split_mismatch: bool = False
    canary_step: int | None = None
    canary_share: float | None = None
    verdict: Verdict | None = None
    shadow: ShadowSummary | None = None


class ExperimentEvidence:
    """Everything one experiment has seen; ``look`` after every window."""

    def __init__(self, model: str, policy: TrafficPolicy, alpha: float = 0.05) -> None:
        self.model = model
        self.policy = policy
        self.alpha = alpha
        self.total: dict[str, ArmEvidence] = {}
        self.step: dict[str, ArmEvidence] = {}
        """Canary: evidence since the current step began."""

        self.versions: dict[str, str] = {}
        self._predicted: OrderedDict[str, tuple[str, list[int]]] = OrderedDict()
        self._accuracy: ArmComparison | None = None
        self._latency: ArmComparison | None = None
        self._step_accuracy: MixtureSPRT | None = None
        self._shadow_pending: OrderedDict[str, tuple[str, list[int] | None, float | None]] = OrderedDict()
        self._shadow_agree = RunningMoments()
        self._shadow_errors = 0
        self._shadow_scores = Reservoir(seed=1)
        self._primary_scores = Reservoir(seed=2)
        self._shadow_latency = Reservoir(seed=3)
        self._primary_latency = Reservoir(seed=4)

    # feeding ---------------------------------------------------------------------------------

    def answered(self, request_id: str, arm: str, version: str, latency_ms: float,
                 labels: list[int], scores: list[float], unit: bytes | None = None) -> None:
        """``unit``: the request's key (what assignment hashes); its id when it has none."""
        self.versions.setdefault(arm, version)
        for evidence in self._arm(arm):
            evidence.answered += 1
            evidence.saw(unit or request_id.encode())
            evidence.latency_ms.add(latency_ms)
            evidence.latency.add(latency_ms)
            for score in scores:
                evidence.scores.add(score)
        self._remember(self._predicted, request_id, (arm, labels))
        if self.policy.shadow is not None:
            self._pair_with_shadow(request_id, ("primary", labels, latency_ms), scores)

    def failed(self, arm: str, version: str, unit: bytes | None = None) -> None:
        self.versions.setdefault(arm, version)
        for evidence in self._arm(arm):
            evidence.errors += 1
            if unit is not None:
                evidence.saw(unit)

    def labelled(self, request_id: str, truth: list[int]) -> None:
        joined = self._predicted.pop(request_id, None)
        if joined is None:
            return
        arm, predicted = joined
        hits = [float(p == t) for p, t in zip(predicted, truth)]
        for evidence in self._arm(arm):
            evidence.correct.add_many(hits)

    def shadowed(self, request_id: str, labels: list[int] | None, scores: list[float], latency_ms: float) -> None:
        """A shadow output (``labels`` None when the shadow failed)."""
        if labels is None:
            self._shadow_errors += 1
            return
        self._pair_with_shadow(request_id, ("shadow", labels, latency_ms), scores)

    def next_step(self) -> None:
        self.step = {}
        self._step_accuracy = None

    # looking ---------------------------------------------------------------------------------

    def look(self, at_ms: int) -> Snapshot:
        policy = self.policy
        arms = [a.name for a in policy.weighted_arms()] or ["primary"]
        summaries = [self._summary(arm) for arm in arms]
        snapshot = Snapshot(at_ms=at_ms, experiment=policy.experiment, model=self.model, kind=self.kind, arms=summaries)
        if policy.canary is not None:
            snapshot.canary_step = policy.canary.step
            snapshot.canary_share = policy.weighted_arms()[0].weight
            snapshot.verdict = self.judge_canary()
        elif len(policy.arms) > 1:
            # keys, not requests: one key's requests all land on one arm, so they are not
            # independent draws, and counting them would flag a mismatch that is not there
            observed = {arm: len(self.total.get(arm, ArmEvidence()).units) for arm in arms}
            split = check_split(observed, {a.name: a.weight for a in policy.arms})
            snapshot.split_p_value, snapshot.split_mismatch = split.p_value, split.mismatch
            snapshot.effects = self._effects(arms)
        if policy.shadow is not None:
            snapshot.shadow = self._shadow_summary()
        return snapshot

    @property
    def kind(self) -> str:
        if self.policy.canary is not None:
            return "canary"
        return "split" if len(self.policy.arms) > 1 else "shadow"

    def judge_canary(self) -> Verdict:
        """The candidate's gates over the current step's evidence."""
        canary = self.policy.canary
        assert canary is not None
        if canary.status != "running":
            return Verdict("wait", detail=canary.status)
        gates: Gates = canary.gates
        candidate = self.step.get("candidate", ArmEvidence())
        control = self.total.get("control", ArmEvidence())
        enough = candidate.requests >= canary.min_requests
        # errors fail fast: this many errors exceed the limit whatever the remaining requests do
        if candidate.errors > gates.max_error_rate * canary.min_requests or (enough and candidate.error_rate > gates.max_error_rate):
            return Verdict("rollback", "error_rate",
                           f"candidate error rate {candidate.error_rate:.1%} over {candidate.requests} requests "
                           f"(limit {gates.max_error_rate:.1%})")
        if not enough:
            return Verdict("wait", detail=f"{candidate.requests}/{canary.min_requests} candidate requests at this step")
        p99 = candidate.latency_ms.quantile(0.99)
        if p99 is not None and p99 > gates.max_p99_ms:
            return Verdict("rollback", "latency_p99", f"candidate p99 {p99:.0f} ms (limit {gates.max_p99_ms:.0f} ms)")
        shift = score_shift(candidate.scores.values, control.scores.values)
        if shift is not None and shift[0] > gates.max_score_shift:
            return Verdict("rollback", "prediction_drift",
                           f"candidate scores differ from control's: KS distance {shift[0]:.3f} (limit "
                           f"{gates.max_score_shift:.3f}), p={shift[1]:.2g}")
        accuracy = self._canary_accuracy()
        if accuracy is not None and accuracy.upper < -gates.max_accuracy_drop:
            return Verdict("rollback", "accuracy",
                           f"candidate accuracy minus control's is in [{accuracy.lower:+.3f}, {accuracy.upper:+.3f}] "
                           f"(always-valid {1 - self.alpha:.0%} interval), below -{gates.max_accuracy_drop:.3f}")
        last = canary.step >= len(canary.steps) - 1
        return Verdict("complete" if last else "advance",
                       detail=f"{candidate.requests} candidate requests, error rate {candidate.error_rate:.1%}, "
                              f"p99 {p99 or 0:.0f} ms")

    # internals -------------------------------------------------------------------------------

    def _arm(self, arm: str) -> tuple[ArmEvidence, ...]:
        total = self.total.setdefault(arm, ArmEvidence())
        if self.policy.canary is None:
            return (total,)
        return (total, self.step.setdefault(arm, ArmEvidence()))

    def _summary(self, arm: str) -> ArmSummary:
        e = self.total.get(arm, ArmEvidence())
        return ArmSummary(
            arm=arm, version=self.versions.get(arm, ""), requests=e.requests, keys=len(e.units), errors=e.errors,
            error_rate=e.error_rate, p50_ms=e.latency_ms.quantile(0.5), p99_ms=e.latency_ms.quantile(0.99),
            accuracy=e.correct.mean if e.correct.n else None, labelled=e.correct.n,
        )

    def _effects(self, arms: list[str]) -> list[Effect]:
        """Every arm against the control, on accuracy and on latency, Holm-corrected per outcome."""
        control, others = arms[0], arms[1:]
        if self._accuracy is None:
            self._accuracy = ArmComparison(control, others, alpha=self.alpha, tau=ACCURACY_TAU)
            self._latency = ArmComparison(control, others, alpha=self.alpha, tau=LATENCY_TAU_MS)
        assert self._latency is not None
        effects = []
        for outcome, comparison in (("accuracy", self._accuracy), ("latency_ms", self._latency)):
            for arm in arms:
                e = self.total.get(arm, ArmEvidence())
                comparison.moments[arm] = e.correct if outcome == "accuracy" else e.latency
            if any(m.n < 2 for m in comparison.moments.values()):
                continue
            for result in comparison.look():
                look = result.look
                effects.append(Effect(result.arm, outcome, look.difference, look.lower, look.upper,
                                      look.p_value, result.adjusted_p, result.significant))
        return effects

    def _canary_accuracy(self):  # -> Look | None
        candidate = self.step.get("candidate")
        control = self.total.get("control")
        if candidate is None or control is None or candidate.correct.n < 2 or control.correct.n < 2:
            return None
        if self._step_accuracy is None:
            self._step_accuracy = MixtureSPRT(alpha=self.alpha)
        return self._step_accuracy.look(control.correct, candidate.correct)

    def _pair_with_shadow(self, request_id: str, side: tuple[str, list[int], float], scores: list[float]) -> None:
        which, labels, latency = side
        (self._primary_scores if which == "primary" else self._shadow_scores).add(scores[0] if scores else 0.0)
        (self._primary_latency if which == "primary" else self._shadow_latency).add(latency)
        other = self._shadow_pending.pop(request_id, None)
        if other is None:
            self._remember(self._shadow_pending, request_id, (which, labels, latency))
            return
        if other[0] != which and other[1] is not None:
            self._shadow_agree.add(float(other[1] == labels))

    def _shadow_summary(self) -> ShadowSummary:
        shift = score_shift(self._shadow_scores.values, self._primary_scores.values)
        return ShadowSummary(
            compared=self._shadow_agree.n,
            agreement=self._shadow_agree.mean if self._shadow_agree.n else None,
            shadow_errors=self._shadow_errors,
            ks_statistic=shift[0] if shift else None,
            ks_p_value=shift[1] if shift else None,
            primary_p50_ms=self._primary_latency.quantile(0.5),
            shadow_p50_ms=self._shadow_latency.quantile(0.5),
        )

    @staticmethod
    def _remember(table: OrderedDict, key: str, value: object) -> None:
        table[key] = value
        if len(table) > JOIN_CAPACITY:
            table.popitem(last=False)


def score_shift(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """Two-sample Kolmogorov-Smirnov distance and p-value, or None with too few scores."""
    if len(a) < MIN_SCORES_FOR_SHIFT or len(b) < MIN_SCORES_FOR_SHIFT:
        return None
    result = stats.ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)

