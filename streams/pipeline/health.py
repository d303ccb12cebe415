"""Pipeline health as events: error rate, p99 latency and lag per consumer, every few seconds.

Prometheus has these figures too, but alerting consumes events from Kafka (so it works where no
Prometheus runs, and replays like everything else). Each consumer reports what it ended since
its last report, on the same topic as the monitor's quality figures. A window runs on the clock it
is given: ``due()`` says when ``interval_s`` has passed since it opened, and a report's window is
stamped with that clock's wall time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from streaminfer.schemas.monitoring_events import MetricEvent
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock

LATENCY_SAMPLE = 4096


@dataclass
class HealthWindow:
    consumer: str
    interval_s: float
    clock: Clock = SYSTEM_CLOCK
    started_ms: int = field(init=False)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    _seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    _opened: float = field(init=False)

    def __post_init__(self) -> None:
        self._open(_ms(self.clock.time()))

    def due(self) -> bool:
        """``interval_s`` has passed since the window opened: time to ``report()``."""
        return self.clock.monotonic() - self._opened >= self.interval_s

    def observe(self, model: str, version: str, ended: int, errors: int, latencies_s: list[float]) -> None:
        key = (model, version)
        self.requests[key] += ended
        self.errors[key] += errors
        kept = self.latencies.setdefault(key, [])
        room = max(0, LATENCY_SAMPLE - len(kept))  # a uniform sample of bounded size (reservoir):
        kept.extend(latencies_s[:room])  # the first LATENCY_SAMPLE are kept as they come
        seen = self._seen[key] + min(room, len(latencies_s))
        later = latencies_s[room:]
        if later:  # the n-th value replaces a random slot with probability LATENCY_SAMPLE / n
            # one uniform draw per value, so a batch keeps the sample its values would keep one by
            # one; drawn for the batch at once (a ``randrange`` per answer cost 0.3 µs each)
            slots = (self._rng.random(len(later)) * np.arange(seen + 1, seen + len(later) + 1)).astype(np.int64)
            for index in np.flatnonzero(slots < LATENCY_SAMPLE).tolist():
                kept[slots[index]] = later[index]
            seen += len(later)
        self._seen[key] = seen

    def report(self, lag_records: int | None, topic: str) -> list[MetricEvent]:
        """Events for the window that ends now; the window starts again empty."""
        now_ms = _ms(self.clock.time())
        events = []
        labels = {"consumer": self.consumer}
        for (model, version), ended in self.requests.items():
            if not ended:
                continue
            events.append(self._event(model, version, "error_rate", self.errors[(model, version)] / ended, ended, now_ms, labels))
            kept = sorted(self.latencies.get((model, version), []))
            if kept:
                p99 = kept[min(len(kept) - 1, int(0.99 * len(kept)))]
                events.append(self._event(model, version, "latency_p99_seconds", p99, len(kept), now_ms, labels))
        if lag_records is not None:
            events.append(self._event("", "", "lag_records", float(lag_records), 0, now_ms, {**labels, "topic": topic}))
        self.requests.clear()
        self.errors.clear()
        self.latencies.clear()
        self._seen.clear()
        self._open(now_ms)
        return events

    def _open(self, now_ms: int) -> None:
        """The next window starts where the last one ended."""
        self.started_ms = now_ms
        self._opened = self.clock.monotonic()

    def _event(self, model: str, version: str, metric: str, value: float, samples: int, now_ms: int,
               labels: dict[str, str]) -> MetricEvent:
        return MetricEvent(model=model, version=version, metric=metric, value=float(value), samples=samples,
                           window_start_ms=self.started_ms, window_end_ms=now_ms, emitted_at_ms=now_ms,
                           labels=dict(labels))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
