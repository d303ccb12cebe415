"""What rules evaluate: samples of named signals with labels, kept for as long as a rule looks
back, and the matchers that select them."""

from __future__ import annotations

import functools
import re
from collections import deque
from dataclasses import dataclass, field

from streaminfer.schemas.monitoring_events import DriftEvent, MetricEvent
from streaminfer.schemas.notifications import Matcher

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    signal: str
    labels: Labels
    value: float
    at_ms: int


def labels_of(values: dict[str, str]) -> Labels:
    return tuple(sorted(values.items()))


def from_drift(event: DriftEvent, at_ms: int) -> Sample:
    labels = {"model": event.model, "version": event.version, "feature": event.feature,
              "detector": event.detector, "kind": event.kind.value if hasattr(event.kind, "value") else str(event.kind)}
    return Sample("drift", labels_of(labels), float(event.statistic), at_ms)


def from_metric(event: MetricEvent, at_ms: int) -> Sample:
    labels = {"model": event.model, "version": event.version, **event.labels}
    return Sample(event.metric, labels_of(labels), float(event.value), at_ms)


def throughput_of(event: MetricEvent, at_ms: int) -> Sample | None:
    """``requests_per_second``: a consumer's answered requests over its health window, derived
    from the window of its ``error_rate`` event (the only health event counting every request)."""
    seconds = (event.window_end_ms - event.window_start_ms) / 1000
    if event.metric != "error_rate" or seconds <= 0:
        return None
    labels = {"model": event.model, "version": event.version, **event.labels}
    return Sample("requests_per_second", labels_of(labels), event.samples / seconds, at_ms)


def matches(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    """Alertmanager's semantics: a missing label matches as the empty string."""
    for matcher in matchers:
        value = labels.get(matcher.name, "")
        hit = _compiled(matcher.value).fullmatch(value) is not None if matcher.is_regex else value == matcher.value
        if hit != matcher.is_equal:
            return False
    return True


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass
class SignalStore:
    """Recent samples per series (signal + labels), and when each series was last seen."""

    horizon_ms: int
    _points: dict[tuple[str, Labels], deque[tuple[int, float]]] = field(default_factory=dict)
    last_seen: dict[tuple[str, Labels], int] = field(default_factory=dict)

    def add(self, sample: Sample) -> None:
        key = (sample.signal, sample.labels)
        self._points.setdefault(key, deque()).append((sample.at_ms, sample.value))
        self.last_seen[key] = max(self.last_seen.get(key, 0), sample.at_ms)

    def prune(self, now_ms: int) -> None:
        oldest = now_ms - self.horizon_ms
        for points in self._points.values():
            while points and points[0][0] < oldest:
                points.popleft()

    def select(self, signal: str, matchers: list[Matcher]):
        """(labels, points) of every series of ``signal`` the matchers accept."""
        for (name, labels), points in self._points.items():
            if name == signal and matches(matchers, dict(labels)):
                yield labels, points
