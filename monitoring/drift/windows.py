"""Drift over tumbling windows with evidently, against the model's training reference.

A window closes after ``window_seconds`` of event time, or after ``window_rows`` rows when a
row count is set, whichever comes first (rows beyond the size start the next window, so every
full window has the same size and a replayed stream gives the same windows). Each closed window
gets one evidently data-drift report, saved as HTML, and per-feature scores; a feature whose test
crosses the threshold becomes a ``DriftEvent`` of kind ``window``.

An evidently report costs about 1.5 s for thirty features whatever the window's size, so the
number of windows is what costs, not their rows: time-based windows keep that cost fixed at any
request rate. A window's rows are kept as a uniform sample of at most ``max_rows`` (reservoir
sampling, seeded), so memory stays bounded however busy the stream.

The per-feature test is fixed (two-sample Kolmogorov-Smirnov by default) instead of evidently's
size-dependent default, so a threshold means the same thing for a window of 100 rows or 10,000.
With thirty features tested at 5% each, one or two would "drift" in every window by chance, so
for p-value tests the threshold is a family-wise level, split over the features (Bonferroni).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from streaminfer.schemas.monitoring_events import DriftEvent, DriftKind

#: Evidently tests whose score is a p-value (drift when below the threshold); the others return
#: a distance (drift when above).
P_VALUE_METHODS = frozenset(
    {"ks", "t_test", "mannw", "anderson", "cramer_von_mises", "chisquare", "z", "fisher_exact", "g_test", "es"}
)
_COLUMN = re.compile(r"column=(.+?),method=")


@dataclass(frozen=True)
class ClosedWindow:
    rows: pd.DataFrame
    start_ms: int
    end_ms: int
    seen: int


@dataclass(frozen=True)
class WindowResult:
    model: str
    version: str
    start_ms: int
    end_ms: int
    rows: int
    """Rows the window saw (at most ``max_rows`` of them were tested)."""

    scores: dict[str, float]
    drifted: list[str]
    report: Path | None
    events: list[DriftEvent]


@dataclass
class WindowDrift:
    """The open window of one model version and what closes it."""

    model: str
    version: str
    reference: pd.DataFrame
    rows_per_window: int | None
    seconds_per_window: float
    min_rows: int
    method: str = "ks"
    threshold: float = 0.05
    reports_dir: Path | None = None
    bonferroni: bool = True
    max_rows: int = 5000
    seed: int = 0
    _sample: list[np.ndarray] = field(default_factory=list)
    _rows: int = 0
    _start_ms: int | None = None
    _end_ms: int = 0
    _rng: np.random.Generator | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.reference.columns)

    def restore_reference(self, reference: pd.DataFrame) -> None:
        self.reference = reference

    @property
    def feature_threshold(self) -> float:
        """The threshold each feature's test is held to."""
        if self.bonferroni and self.method in P_VALUE_METHODS:
            return self.threshold / max(1, len(self.reference.columns))
        return self.threshold

    def add(self, rows: np.ndarray, timestamp_ms: int) -> list[ClosedWindow]:
        """Add rows seen at ``timestamp_ms``; returns the windows this closed, to ``evaluate``
        (evidently takes a while, so the caller decides where it runs)."""
        closed: list[ClosedWindow] = []
        if self._period_over(timestamp_ms):
            closed.append(self._close())
        for row in np.atleast_2d(np.asarray(rows, dtype=np.float64)):
            if self._start_ms is None:
                self._start_ms = timestamp_ms
            self._keep(row)
            self._end_ms = timestamp_ms
            if self.rows_per_window is not None and self._rows >= self.rows_per_window:
                closed.append(self._close())
        if self._period_over(timestamp_ms):
            closed.append(self._close())
        return closed

    def _period_over(self, timestamp_ms: int) -> bool:
        """A window past its period closes once it has ``min_rows``; a shorter one stays open and
        takes in the next period's rows rather than being tested on too few."""
        if self._start_ms is None or self._rows < self.min_rows:
            return False
        return timestamp_ms - self._start_ms >= self.seconds_per_window * 1000

    def _keep(self, row: np.ndarray) -> None:
        """Reservoir sampling (Vitter's algorithm R): every row of the window is equally likely
        to be among the ``max_rows`` kept."""
        self._rows += 1
        if len(self._sample) < self.max_rows:
            self._sample.append(row)
            return
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        slot = int(self._rng.integers(0, self._rows))
        if slot < self.max_rows:
            self._sample[slot] = row

    def _close(self) -> ClosedWindow:
        current = pd.DataFrame(np.stack(self._sample), columns=self.feature_names)
        start_ms = self._end_ms if self._start_ms is None else self._start_ms
        closed = ClosedWindow(current, start_ms, self._end_ms, self._rows)
        self._sample, self._rows, self._start_ms = [], 0, None
        return closed

    def evaluate(self, window: ClosedWindow) -> WindowResult:
        current, start_ms, end_ms = window.rows, window.start_ms, window.end_ms
        threshold = self.feature_threshold
        scores, snapshot = column_drift_scores(current, self.reference, self.method, threshold)
        drifted = [name for name, score in scores.items() if self._crosses(score)]
        report = self._save(snapshot, start_ms, end_ms)
        events = [
            DriftEvent(
                model=self.model, version=self.version, feature=name, detector="evidently", kind=DriftKind.WINDOW,
                statistic=scores[name], threshold=threshold, window_start_ms=start_ms, window_end_ms=end_ms,
                samples=window.seen, detected_at_ms=end_ms, report=str(report) if report else None,
            )
            for name in drifted
        ]
        return WindowResult(self.model, self.version, start_ms, end_ms, window.seen, scores, drifted, report, events)

    def _crosses(self, score: float) -> bool:
        if self.method in P_VALUE_METHODS:
            return score < self.feature_threshold
        return score > self.feature_threshold

    def _save(self, snapshot, start_ms: int, end_ms: int) -> Path | None:
        if self.reports_dir is None:
            return None
        directory = self.reports_dir / self.model / self.version
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"window-{start_ms}-{end_ms}.html"
        snapshot.save_html(str(path))
        return path

    def __getstate__(self) -> dict[str, object]:
        # the reference is reloaded from the model repository, not written into every checkpoint
        state = dict(self.__dict__)
        state["reference"] = None
        return state


def column_drift_scores(
    current: pd.DataFrame, reference: pd.DataFrame, method: str, threshold: float
) -> tuple[dict[str, float], object]:
    """Evidently's per-column drift score for every column, and the snapshot (for its HTML)."""
    from evidently import Report  # imported late: evidently takes seconds to import
    from evidently.presets import DataDriftPreset

    report = Report([DataDriftPreset(method=method, threshold=threshold)])
    snapshot = report.run(current, reference)
    scores: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        match = _COLUMN.search(metric["metric_name"])
        if match and metric["metric_name"].startswith("ValueDrift"):
            scores[match.group(1)] = float(metric["value"])
    return {name: scores[name] for name in current.columns if name in scores}, snapshot


def latest_report(reports_dir: Path) -> Path | None:
    reports = sorted(Path(reports_dir).glob("*/*/window-*.html"), key=lambda p: p.stat().st_mtime)
    return reports[-1] if reports else None
