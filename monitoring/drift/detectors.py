"""Per-sample drift detection with river: one detector per input feature and per score.

Features are standardised with the training reference's mean and standard deviation before
they reach a detector, so one set of parameters (Page-Hinkley's threshold, ADWIN's delta) means
the same thing for every feature whatever its unit. A detection becomes a ``DriftEvent`` with
the statistic that crossed the detector's threshold and the stretch of the stream it covers
(from the detector's previous detection, or its start, to now).

Everything here is plain picklable state, so the monitor checkpoints it whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from river import base, drift

from streaminfer.monitoring.settings import DetectorKind
from streaminfer.schemas.monitoring_events import PREDICTION_FEATURE, DriftEvent, DriftKind

_RIVER: dict[DetectorKind, Callable[..., base.DriftDetector]] = {
    DetectorKind.ADWIN: drift.ADWIN,
    DetectorKind.KSWIN: drift.KSWIN,
    DetectorKind.PAGE_HINKLEY: drift.PageHinkley,
}


def make_detector(kind: DetectorKind, params: dict[str, float] | None = None, seed: int = 0):
    """A fresh river detector; KSWIN gets a seed so a replayed stream fires at the same samples."""
    kwargs: dict[str, float] = dict(params or {})
    if kind is DetectorKind.KSWIN:
        kwargs.setdefault("seed", seed)
        for name in ("window_size", "stat_size"):
            if name in kwargs:
                kwargs[name] = int(kwargs[name])
    if kind is DetectorKind.PAGE_HINKLEY and "min_instances" in kwargs:
        kwargs["min_instances"] = int(kwargs["min_instances"])
    return _RIVER[kind](**kwargs)


def statistic_of(kind: DetectorKind, detector) -> float:
    """The number a detector compares with its threshold, for metrics and events."""
    if kind is DetectorKind.ADWIN:
        return abs(float(detector.estimation))  # mean of the kept window, in reference std units
    if kind is DetectorKind.KSWIN:
        return float(getattr(detector, "p_value", 1.0))
    increase = detector._sum_increase - detector._min_increase  # river keeps these private
    decrease = detector._max_decrease - detector._sum_decrease
    return float(max(increase, decrease, 0.0))


def threshold_of(kind: DetectorKind, detector) -> float:
    if kind is DetectorKind.ADWIN:
        return float(detector.delta)
    if kind is DetectorKind.KSWIN:
        return float(detector.alpha)
    return float(detector.threshold)


@dataclass
class _Watch:
    """One detector on one feature, with where its current stretch began."""

    kind: DetectorKind
    detector: object
    samples: int = 0
    since_ms: int | None = None


@dataclass
class Reference:
    """What a feature is standardised with: the training sample's mean and deviation."""

    feature_names: list[str]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_rows(cls, feature_names: list[str], rows: np.ndarray) -> Reference:
        std = rows.std(axis=0)
        return cls(feature_names, rows.mean(axis=0), np.where(std > 0, std, 1.0))

    @classmethod
    def identity(cls, n_features: int) -> Reference:
        names = [f"feature_{i}" for i in range(n_features)]
        return cls(names, np.zeros(n_features), np.ones(n_features))


@dataclass
class SampleDrift:
    """All per-sample detectors of one model version."""

    model: str
    version: str
    reference: Reference
    kinds: list[DetectorKind]
    params: dict[DetectorKind, dict[str, float]] = field(default_factory=dict)
    seed: int = 0
    _watches: dict[str, list[_Watch]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index, feature in enumerate([*self.reference.feature_names, PREDICTION_FEATURE]):
            self._watches[feature] = [
                _Watch(kind, make_detector(kind, self.params.get(kind), self.seed + index)) for kind in self.kinds
            ]

    def update_features(self, rows: np.ndarray, timestamp_ms: int) -> list[DriftEvent]:
        """Feed rows (N × features, in the model's input order)."""
        standardised = (np.asarray(rows, dtype=np.float64) - self.reference.mean) / self.reference.std
        events: list[DriftEvent] = []
        names = self.reference.feature_names
        for row in standardised.tolist():
            for name, value in zip(names, row):
                self._update(name, value, timestamp_ms, events)
        return events

    def update_scores(self, scores: list[float], timestamp_ms: int) -> list[DriftEvent]:
        events: list[DriftEvent] = []
        for score in scores:
            self._update(PREDICTION_FEATURE, float(score), timestamp_ms, events)
        return events

    def statistics(self) -> list[tuple[str, DetectorKind, float]]:
        return [(f, w.kind, statistic_of(w.kind, w.detector)) for f, ws in self._watches.items() for w in ws]

    def _update(self, feature: str, value: float, timestamp_ms: int, events: list[DriftEvent]) -> None:
        for watch in self._watches[feature]:
            if watch.since_ms is None:
                watch.since_ms = timestamp_ms
            watch.samples += 1
            watch.detector.update(value)  # type: ignore[attr-defined]
            if watch.detector.drift_detected:  # type: ignore[attr-defined]
                events.append(self._event(feature, watch, timestamp_ms))
                watch.since_ms = timestamp_ms

    def _event(self, feature: str, watch: _Watch, timestamp_ms: int) -> DriftEvent:
        return DriftEvent(
            model=self.model,
            version=self.version,
            feature=feature,
            detector=watch.kind.value,
            kind=DriftKind.SAMPLE,
            statistic=statistic_of(watch.kind, watch.detector),
            threshold=threshold_of(watch.kind, watch.detector),
            window_start_ms=timestamp_ms if watch.since_ms is None else watch.since_ms,
            window_end_ms=timestamp_ms,
            samples=watch.samples,
            detected_at_ms=timestamp_ms,
        )
