"""Anomaly detection on one metric series, learned online: a seasonal forecast and how far the
series strays from it.

Each point is compared with a forecast made before the point is learned:

- the level is river's ``time_series.HoltWinters`` without trend (simple exponential smoothing)
  on the deseasonalised series. Its own seasonal part is not used: river 0.26 initialises an
  additive season as ``y / level`` (multiplicative), and counts the season in points, which
  breaks on gaps; the season here is counted in time;
- the season (``season_s``, a day by default; 0 for none) is a profile of ``SEASON_BINS`` bins,
  each a river ``stats.EWMean`` of the series minus its level at that time of the season, read
  with linear interpolation between bin centres;
- the residual (point minus forecast) is scaled by a robust spread: 1.4826 times the rolling
  median of absolute residuals (river ``stats.RollingQuantile``), so outliers hardly move it.

Metrics that come every few seconds are better judged in steps (``step_s``): the points of each
step are averaged, and the average is what is learned and judged. All the constants below count
points (or steps).

A point is anomalous when its scaled residual ``z`` passes ``deviations`` (a spike), or when a
two-sided CUSUM of ``z`` (slack ``CUSUM_SLACK``) passes ``CUSUM_LIMIT`` (a level shift, a slow
ramp: many small residuals of one sign). The score is the larger of ``|z|`` and the CUSUM
rescaled so that ``score > deviations`` exactly when the point is anomalous; ``direction``
keeps only rises (``up``), only falls (``down``) or both.

What is learned is clipped to the forecast plus or minus ``CLIP`` spreads (a Huber-type robust
Holt-Winters, Gelper, Fried and Croux 2010): a spike barely moves the model, while a lasting
shift is absorbed (a 4 sd shift in about 130 points) and the alert then resolves. Nothing is flagged while
learning: the first ``WARMUP_SEASONS`` seasons (``WARMUP_POINTS`` points without a season).

    >>> import math, random
    >>> rng = random.Random(7)
    >>> detector = SeriesDetector(season_s=100.0, deviations=6.0)
    >>> flags = [detector.update(t * 1000, 10 + 3 * math.sin(2 * math.pi * t / 100) + rng.gauss(0, 0.2))
    ...          for t in range(1000)]
    >>> any(flags), detector.update(1000 * 1000, 20.0), round(detector.score) > 6
    (False, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from river import stats, time_series

from streaminfer.monitoring.alerting.config import RuleConfig, RuleKind
from streaminfer.monitoring.alerting.signals import Labels, Sample, matches

SEASON_BINS = 48
LEVEL_ALPHA = 0.02
SEASON_FADING = 0.2
SCALE_WINDOW = 300
CLIP = 2.0
CUSUM_SLACK = 0.5
CUSUM_LIMIT = 12.0
WARMUP_SEASONS = 2
WARMUP_POINTS = 60
MIN_SCALE = 1e-9
FORGET_S = 7 * 86_400.0
"""A series silent this long loses its detector (a version no longer served, say)."""


@dataclass
class SeriesDetector:
    """One series' forecast, spread and CUSUM. ``update(at_ms, value)`` learns a point and says
    whether it is anomalous; ``score`` is the point's score in robust deviations."""

    season_s: float = 86_400.0
    deviations: float = 5.0
    direction: str = "both"
    step_s: float = 0.0
    """Average the points of each step of this length and learn the averages (0: every point)."""

    score: float = 0.0
    anomalous: bool = False
    points: int = 0
    """Points (or steps) learned."""

    last_ms: int = 0
    """When the latest point arrived."""

    _step: int | None = None
    _step_sum: float = 0.0
    _step_count: int = 0
    _level: time_series.HoltWinters = field(default_factory=lambda: time_series.HoltWinters(alpha=LEVEL_ALPHA))
    _season: list[stats.EWMean | None] = field(default_factory=lambda: [None] * SEASON_BINS)
    _abs_residuals: stats.RollingQuantile = field(default_factory=lambda: stats.RollingQuantile(0.5, SCALE_WINDOW))
    _up: float = 0.0
    _down: float = 0.0
    _first_ms: int | None = None

    def update(self, at_ms: int, value: float) -> bool:
        """Learn a point; with ``step_s``, a step is learned (and judged) when the first point of
        a later step arrives, and the verdict stands until the next one."""
        self.last_ms = at_ms
        if self.step_s <= 0:
            return self._learn_point(at_ms, value)
        step_ms = self.step_s * 1000
        step = int(at_ms // step_ms)
        if self._step is not None and step > self._step:
            self._learn_point(int((self._step + 0.5) * step_ms), self._step_sum / self._step_count)
            self._step = None
        if self._step is None:
            self._step, self._step_sum, self._step_count = step, 0.0, 0
        self._step_sum += value
        self._step_count += 1
        return self.anomalous

    def _learn_point(self, at_ms: int, value: float) -> bool:
        if self._first_ms is None:
            self._first_ms = at_ms
        seasonal = self._seasonal(at_ms)
        forecast = self._forecast_level() + seasonal
        scale = self._scale(forecast)
        z = (value - forecast) / scale if scale else 0.0
        learning = self._learning(at_ms)
        if not learning:
            self._up = min(max(0.0, self._up + z - CUSUM_SLACK), 2 * CUSUM_LIMIT)
            self._down = min(max(0.0, self._down - z - CUSUM_SLACK), 2 * CUSUM_LIMIT)
        self.score = self._score(z) if not learning else 0.0
        self.anomalous = self.score > self.deviations
        clipped = value if learning or scale == 0 else min(max(value, forecast - CLIP * scale), forecast + CLIP * scale)
        self._learn(at_ms, clipped, seasonal)
        self.points += 1
        return self.anomalous

    def _score(self, z: float) -> float:
        rescale = self.deviations / CUSUM_LIMIT
        up, down = max(z, self._up * rescale), max(-z, self._down * rescale)
        if self.direction == "up":
            return max(up, 0.0)
        if self.direction == "down":
            return max(down, 0.0)
        return max(up, down, 0.0)

    def _learning(self, at_ms: int) -> bool:
        if self.season_s <= 0:
            return self.points < WARMUP_POINTS
        return at_ms - (at_ms if self._first_ms is None else self._first_ms) < WARMUP_SEASONS * self.season_s * 1000 or self.points < WARMUP_POINTS

    def _forecast_level(self) -> float:
        level = self._level.level
        return level[-1] if level else 0.0

    def _scale(self, forecast: float) -> float:
        if self.points < 2:
            return 0.0
        return max(1.4826 * (self._abs_residuals.get() or 0.0), MIN_SCALE * max(1.0, abs(forecast)))

    def _learn(self, at_ms: int, value: float, seasonal: float) -> None:
        level_before = self._forecast_level() if self._level.level else value - seasonal
        if self.points:
            self._abs_residuals.update(abs(value - level_before - seasonal))
        self._level.learn_one(value - seasonal)
        if self.season_s > 0:
            slot = self._bin(at_ms)
            mean = self._season[slot]
            if mean is None:
                mean = self._season[slot] = stats.EWMean(fading_factor=SEASON_FADING)
            mean.update(value - level_before)

    def _bin(self, at_ms: int) -> int:
        return int(self._phase(at_ms) * SEASON_BINS) % SEASON_BINS

    def _phase(self, at_ms: int) -> float:
        return (at_ms / 1000.0 % self.season_s) / self.season_s

    def _seasonal(self, at_ms: int) -> float:
        """The profile at this time of the season, between the two nearest bin centres."""
        if self.season_s <= 0:
            return 0.0
        position = self._phase(at_ms) * SEASON_BINS - 0.5
        below = math.floor(position)
        weight = position - below
        left, right = self._season[below % SEASON_BINS], self._season[(below + 1) % SEASON_BINS]
        if left is None and right is None:
            return 0.0
        if left is None or right is None:
            return (left or right).get()  # type: ignore[union-attr]
        return (1 - weight) * left.get() + weight * right.get()


@dataclass
class AnomalyState:
    """The detectors of every anomaly rule: one per series the rule selects (the series' own
    labels, before ``by`` groups them, so series grouped together never share a forecast).
    Part of the rule engine, so it is checkpointed with it."""

    detectors: dict[tuple[str, str, Labels], SeriesDetector] = field(default_factory=dict)
    """(rule, signal, labels) -> detector."""

    def observe(self, rules: list[RuleConfig], sample: Sample) -> None:
        """Learn the sample in every anomaly rule that selects it. A point older than the
        series' last one (out of order) is ignored: the forecast only moves forward."""
        for rule in rules:
            if rule.kind is not RuleKind.ANOMALY or rule.signal != sample.signal:
                continue
            if not matches(rule.matchers(), dict(sample.labels)):
                continue
            key = (rule.name, sample.signal, sample.labels)
            detector = self.detectors.get(key)
            if detector is None:
                detector = self.detectors[key] = SeriesDetector(rule.season_s, rule.deviations, rule.direction, rule.step_s)
            elif sample.at_ms < detector.last_ms:
                continue
            detector.update(sample.at_ms, sample.value)

    def anomalous(self, rule: RuleConfig, now_ms: int) -> Iterator[tuple[Labels, float]]:
        """(labels, score) of the rule's series whose latest verdict is anomalous and fresh: the
        latest point arrived no more than ``window_s`` (plus a step) ago."""
        stands_ms = (rule.window_s + rule.step_s) * 1000
        for (name, signal, labels), detector in self.detectors.items():
            if name == rule.name and signal == rule.signal and detector.anomalous and now_ms - detector.last_ms <= stands_ms:
                yield labels, detector.score

    def forget(self, now_ms: int) -> None:
        for key, detector in list(self.detectors.items()):
            if now_ms - detector.last_ms > FORGET_S * 1000:
                del self.detectors[key]

    def adopt(self, saved: AnomalyState, rules: list[RuleConfig]) -> None:
        """Keep what was learned for rules still in the file with the same series and season;
        a changed threshold or direction applies to the learned forecast as it is."""
        current = {rule.name: rule for rule in rules if rule.kind is RuleKind.ANOMALY}
        for (name, signal, labels), detector in saved.detectors.items():
            rule = current.get(name)
            if rule is None or (rule.signal, rule.season_s, rule.step_s) != (signal, detector.season_s, detector.step_s):
                continue
            if matches(rule.matchers(), dict(labels)):
                detector.deviations, detector.direction = rule.deviations, rule.direction
                self.detectors[(name, signal, labels)] = detector
