"""Evidently over tumbling windows: quiet on the reference, exactly the shifted features after."""

from __future__ import annotations

import numpy as np
import pytest

from streaminfer.demo.model import DEMO_MODEL
from streaminfer.monitoring.drift.model_watch import reference_frame
from streaminfer.monitoring.drift.simulate import Shift, drifting_rows
from streaminfer.monitoring.drift.windows import WindowDrift

SHIFTED = ("mean radius", "mean texture", "worst area")
WINDOW = 300


@pytest.fixture(scope="module")
def reference(model_repo):
    return reference_frame(model_repo.resolve(DEMO_MODEL))


def windows(reference, rows, tmp_path, **kwargs):
    drift = WindowDrift(DEMO_MODEL, "1.0.0", reference, WINDOW, 3600, 50, reports_dir=tmp_path, **kwargs)
    closed = []
    for index, row in enumerate(rows):
        closed += drift.add(row[None, :], timestamp_ms=index)
    return [drift.evaluate(window) for window in closed]


def test_windows_on_the_reference_distribution_flag_nothing(reference, tmp_path):
    results = windows(reference, drifting_rows(reference, 4 * WINDOW, None, seed=21), tmp_path)
    assert len(results) == 4
    assert [r.drifted for r in results] == [[], [], [], []]


def test_window_after_a_shift_flags_exactly_the_shifted_features(reference, tmp_path):
    rows = drifting_rows(reference, 2 * WINDOW, Shift(SHIFTED, WINDOW, by_std=1.0), seed=22)
    before, after = windows(reference, rows, tmp_path)
    assert before.drifted == []
    assert sorted(after.drifted) == sorted(SHIFTED)
    assert sorted(e.feature for e in after.events) == sorted(SHIFTED)
    assert all(e.kind == "window" and e.detector == "evidently" for e in after.events)
    assert (after.start_ms, after.end_ms, after.rows) == (WINDOW, 2 * WINDOW - 1, WINDOW)


def test_each_window_writes_one_html_report_and_a_score_per_feature(reference, tmp_path):
    (result,) = windows(reference, drifting_rows(reference, WINDOW, None, seed=23), tmp_path)
    assert result.report is not None and result.report.read_text().lstrip().lower().startswith("<!doctype html")
    assert set(result.scores) == set(reference.columns)


def test_a_busy_window_keeps_a_uniform_sample_of_bounded_size(reference):
    drift = WindowDrift("m", "1", reference, None, seconds_per_window=1.0, min_rows=50, max_rows=1000, seed=3)
    index = np.arange(20_000, dtype=np.float64)[:, None].repeat(len(reference.columns), axis=1)
    assert drift.add(index, timestamp_ms=0) == []
    (closed,) = drift.add(index[:1], timestamp_ms=1000)
    kept = closed.rows.iloc[:, 0].to_numpy()
    assert (len(kept), closed.seen) == (1000, 20_000)  # the row at 1000 ms opens the next window
    assert abs(kept.mean() - 10_000) < 600  # each row equally likely: the mean index is central
    assert len(set(kept)) == 1000


def test_threshold_is_split_over_features_for_p_value_tests(reference):
    drift = WindowDrift("m", "1", reference, WINDOW, 60, 50, threshold=0.05)
    assert drift.feature_threshold == pytest.approx(0.05 / 30)
    assert WindowDrift("m", "1", reference, WINDOW, 60, 50, method="wasserstein", threshold=0.1).feature_threshold == 0.1


def test_window_closes_on_event_time_and_merges_a_short_one_into_the_next(reference):
    drift = WindowDrift("m", "1", reference, 10_000, seconds_per_window=1.0, min_rows=50)
    rows = drifting_rows(reference, 120, None, seed=1)
    assert drift.add(rows[:40], timestamp_ms=0) == []
    assert drift.add(rows[40:41], timestamp_ms=1500) == []  # 40 rows are too few: kept open
    (closed,) = drift.add(rows[41:120], timestamp_ms=3000)
    assert (closed.start_ms, closed.end_ms, len(closed.rows)) == (0, 3000, 120)
    assert drift.add(rows[:60], timestamp_ms=3500) == []  # a new window, opened at 3500
