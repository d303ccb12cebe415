"""Rule evaluation: which series each rule finds true now, and the alerts that follow.

Five kinds of condition, each evaluated per series (the signal's labels, or those named in
``by``):

- threshold: the series reduced over ``window_s`` (last, count, mean, max, min) compared with
  ``value``;
- trend: the rate of change per second over ``window_s`` (last minus first point, over the time
  between them) compared with ``value``;
- absence: nothing seen for ``period_s``, for a series seen before, or for the rule as a whole
  when nothing matching has come since the engine started;
- composite: ``all`` or ``any`` of other rules true, sharing the labels named in ``match_on``;
- anomaly: the series' latest point (no older than ``window_s``) strays from a seasonal forecast
  learned online from the series itself (``monitoring.alerting.anomaly``); its value is the
  score in robust standard deviations.

A condition that holds becomes a pending alert, and a firing one once it has held for
``for_s``; when it stops holding, a firing alert resolves (a pending one just goes away). All of
this runs on the clock passed in, so tests and replays are deterministic.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

from streaminfer.monitoring.alerting.anomaly import AnomalyState
from streaminfer.monitoring.alerting.config import OPS, Reduce, RuleConfig, RuleKind
from streaminfer.monitoring.alerting.signals import Labels, Sample, SignalStore, matches

Active = dict[Labels, float]


@dataclass
class Alert:
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    starts_ms: int
    ends_ms: int | None = None

    @property
    def firing(self) -> bool:
        return self.ends_ms is None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(sorted(self.labels.items())).encode()).hexdigest()[:16]


def _project(labels: Labels, by: list[str] | None) -> Labels:
    if by is None:
        return labels
    values = dict(labels)
    return tuple((name, values.get(name, "")) for name in sorted(by))


def _reduce(points: list[float], how: Reduce) -> float:
    if how is Reduce.COUNT:
        return float(len(points))
    if how is Reduce.MEAN:
        return sum(points) / len(points)
    if how is Reduce.MAX:
        return max(points)
    if how is Reduce.MIN:
        return min(points)
    return points[-1]


def threshold(rule: RuleConfig, store: SignalStore, now_ms: int) -> Active:
    since = now_ms - rule.window_s * 1000
    grouped: dict[Labels, list[tuple[int, float]]] = defaultdict(list)
    for labels, points in store.select(rule.signal or "", rule.matchers()):
        grouped[_project(labels, rule.by)].extend(p for p in points if since <= p[0] <= now_ms)
    active: Active = {}
    compare = OPS[rule.op]
    for key, points in grouped.items():
        if not points:
            continue
        points.sort()
        value = _reduce([v for _, v in points], rule.reduce)
        if compare(value, rule.value):
            active[key] = value
    return active


def trend(rule: RuleConfig, store: SignalStore, now_ms: int) -> Active:
    since = now_ms - rule.window_s * 1000
    active: Active = {}
    compare = OPS[rule.op]
    grouped: dict[Labels, list[tuple[int, float]]] = defaultdict(list)
    for labels, points in store.select(rule.signal or "", rule.matchers()):
        grouped[_project(labels, rule.by)].extend(p for p in points if since <= p[0] <= now_ms)
    for key, points in grouped.items():
        points.sort()
        if len(points) < 2 or points[-1][0] == points[0][0]:
            continue
        slope = (points[-1][1] - points[0][1]) / ((points[-1][0] - points[0][0]) / 1000)
        if compare(slope, rule.value):
            active[key] = slope
    return active


def absence(rule: RuleConfig, store: SignalStore, now_ms: int, started_ms: int) -> Active:
    period_ms = rule.period_s * 1000
    last: dict[Labels, int] = {}
    matchers = rule.matchers()
    for (signal, labels), seen in store.last_seen.items():
        if signal == rule.signal and matches(matchers, dict(labels)):
            key = _project(labels, rule.by)
            last[key] = max(last.get(key, 0), seen)
    if not last:
        whole = tuple(sorted((m.name, m.value) for m in matchers if m.is_equal and not m.is_regex))
        return {whole: (now_ms - started_ms) / 1000} if now_ms - started_ms >= period_ms else {}
    return {key: (now_ms - seen) / 1000 for key, seen in last.items() if now_ms - seen >= period_ms}


def anomaly(rule: RuleConfig, anomalies: AnomalyState, now_ms: int) -> Active:
    active: Active = {}
    for labels, score in anomalies.anomalous(rule, now_ms):
        key = _project(labels, rule.by)
        active[key] = max(active.get(key, 0.0), score)
    return active


def composite(rule: RuleConfig, results: dict[str, Active]) -> Active:
    projected = [{_project(key, rule.match_on) for key in results.get(name, {})} for name in rule.all or rule.any]
    if rule.all:
        keys = set.intersection(*projected) if projected else set()
    else:
        keys = set.union(*projected) if projected else set()
    return dict.fromkeys(keys, 1.0)


@dataclass
class _State:
    since_ms: int
    firing_ms: int | None = None
    value: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class RuleEngine:
    """Conditions per rule and the pending/firing/resolved state of each alert."""

    rules: list[RuleConfig]
    started_ms: int
    store: SignalStore = field(init=False)
    _states: dict[tuple[str, Labels], _State] = field(default_factory=dict)
    anomalies: AnomalyState = field(default_factory=AnomalyState)

    def __post_init__(self) -> None:
        horizon = max([r.window_s for r in self.rules] + [r.period_s for r in self.rules] + [60.0])
        self.store = SignalStore(int(horizon * 1000))

    def adopt(self, saved: RuleEngine) -> None:
        """Carry a checkpointed engine's series and alert states over to this one's rules: the
        rules file may have changed between runs; states of rules no longer in it are dropped."""
        names = {rule.name for rule in self.rules}
        self.store = saved.store
        self.started_ms = saved.started_ms
        self._states = {key: state for key, state in saved._states.items() if key[0] in names}
        self.anomalies.adopt(getattr(saved, "anomalies", AnomalyState()), self.rules)  # older checkpoints have none

    def add(self, sample: Sample) -> None:
        """A sample for the rules: kept for those that look back, learned by anomaly rules."""
        self.store.add(sample)
        self.anomalies.observe(self.rules, sample)

    def evaluate(self, now_ms: int) -> tuple[list[Alert], list[Alert]]:
        """Alerts firing now, and alerts that resolved on this evaluation."""
        self.store.prune(now_ms)
        self.anomalies.forget(now_ms)
        results = self._conditions(now_ms)
        firing, resolved = [], []
        by_name = {rule.name: rule for rule in self.rules}
        seen: set[tuple[str, Labels]] = set()
        for name, active in results.items():
            rule = by_name[name]
            for key, value in active.items():
                seen.add((name, key))
                state = self._states.setdefault((name, key), _State(since_ms=now_ms))
                state.value = value
                state.labels = self._labels(rule, key)
                if state.firing_ms is None and now_ms - state.since_ms >= rule.for_s * 1000:
                    state.firing_ms = now_ms
                if state.firing_ms is not None:
                    firing.append(self._alert(rule, state, None))
        for (name, key), state in list(self._states.items()):
            if (name, key) in seen:
                continue
            del self._states[(name, key)]
            if state.firing_ms is not None:
                resolved.append(self._alert(by_name[name], state, now_ms))
        return firing, resolved

    def _conditions(self, now_ms: int) -> dict[str, Active]:
        results: dict[str, Active] = {}
        pending = []
        for rule in self.rules:
            if rule.kind is RuleKind.THRESHOLD:
                results[rule.name] = threshold(rule, self.store, now_ms)
            elif rule.kind is RuleKind.TREND:
                results[rule.name] = trend(rule, self.store, now_ms)
            elif rule.kind is RuleKind.ABSENCE:
                results[rule.name] = absence(rule, self.store, now_ms, self.started_ms)
            elif rule.kind is RuleKind.ANOMALY:
                results[rule.name] = anomaly(rule, self.anomalies, now_ms)
            else:
                pending.append(rule)
        for _ in range(len(pending)):  # composites of composites: settle in as many rounds
            for rule in pending:
                results[rule.name] = composite(rule, results)
        return results

    @staticmethod
    def _labels(rule: RuleConfig, key: Labels) -> dict[str, str]:
        return {**dict(key), **rule.labels, "alertname": rule.name, "severity": rule.severity}

    @staticmethod
    def _alert(rule: RuleConfig, state: _State, ends_ms: int | None) -> Alert:
        values = _Format({**state.labels, "value": f"{state.value:.4g}"})
        annotations = {k: v.format_map(values) for k, v in rule.annotations.items()}
        annotations.setdefault("value", f"{state.value:.6g}")
        return Alert(rule.name, dict(state.labels), annotations, state.value, state.firing_ms or state.since_ms, ends_ms)


class _Format(dict):
    """``{name}`` placeholders in annotations; unknown ones stay as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
