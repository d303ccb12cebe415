"""River detectors on seeded streams from the demo model's reference: false alarms on the
reference distribution and detection delay after a shift are pinned, per detector."""

from __future__ import annotations

import pickle

import pytest

from streaminfer.demo.model import DEMO_MODEL
from streaminfer.monitoring.drift.detectors import Reference, SampleDrift
from streaminfer.monitoring.drift.model_watch import reference_frame
from streaminfer.monitoring.drift.simulate import Shift, drifting_rows
from streaminfer.monitoring.settings import DetectorKind
from streaminfer.schemas.monitoring_events import PREDICTION_FEATURE

ROWS, SHIFT_AT = 1200, 600
SHIFTED = ("mean radius", "mean texture", "worst area")

#: Over 600 reference rows × 30 features (18,000 samples per detector kind), river's defaults.
#: KSWIN tests every sample at alpha=0.005 on a 100-sample window, so it pays for its speed in
#: false alarms; ADWIN's bound is conservative.
FALSE_ALARMS = {DetectorKind.ADWIN: 0, DetectorKind.KSWIN: 18, DetectorKind.PAGE_HINKLEY: 3}
#: Rows after a 1.5-standard-deviation shift until the first detection on each shifted feature,
#: at most (ADWIN checks every 32 samples, hence its longer delay).
DETECTION_DELAY = {DetectorKind.ADWIN: 39, DetectorKind.KSWIN: 16, DetectorKind.PAGE_HINKLEY: 24}


@pytest.fixture(scope="module")
def reference(model_repo):
    return reference_frame(model_repo.resolve(DEMO_MODEL))


def run_stream(reference, kind: DetectorKind):
    shift = Shift(SHIFTED, SHIFT_AT, by_std=1.5)
    rows = drifting_rows(reference, ROWS, shift, seed=11)
    drift = SampleDrift("m", "1", Reference.from_rows(list(reference.columns), reference.to_numpy()), [kind], seed=5)
    events = []
    for index, row in enumerate(rows):
        events += [(index, e) for e in drift.update_features(row[None, :], timestamp_ms=index)]
    return events


@pytest.mark.parametrize("kind", list(DetectorKind))
def test_detector_false_alarms_on_the_reference_distribution_are_pinned(reference, kind):
    events = run_stream(reference, kind)
    before = [e for index, e in events if index < SHIFT_AT]
    assert len(before) == FALSE_ALARMS[kind], [(e.feature, e.samples) for e in before]


@pytest.mark.parametrize("kind", list(DetectorKind))
def test_detector_fires_on_each_shifted_feature_within_the_pinned_delay(reference, kind):
    events = run_stream(reference, kind)
    first = {}
    for index, event in events:
        if index >= SHIFT_AT:
            first.setdefault(event.feature, index - SHIFT_AT)
    delays = {feature: first.get(feature) for feature in SHIFTED}
    assert all(d is not None and d <= DETECTION_DELAY[kind] for d in delays.values()), delays


def test_detector_event_names_the_feature_statistic_threshold_and_stretch(reference):
    index, event = next((i, e) for i, e in run_stream(reference, DetectorKind.ADWIN) if i >= SHIFT_AT)
    assert event.detector == "adwin" and event.kind == "sample"
    assert event.threshold == pytest.approx(0.002)
    assert event.statistic > 0.5  # mean of the kept window, in reference standard deviations
    assert event.window_start_ms <= event.window_end_ms == index


def test_prediction_score_has_its_own_detector():
    drift = SampleDrift("m", "1", Reference.identity(2), [DetectorKind.PAGE_HINKLEY])
    events = drift.update_scores([0.1] * 200 + [0.9] * 200, timestamp_ms=0)
    assert {e.feature for e in events} == {PREDICTION_FEATURE}


def test_detector_state_survives_pickling_mid_stream(reference):
    rows = drifting_rows(reference, ROWS, Shift(SHIFTED, SHIFT_AT), seed=3)

    def fresh() -> SampleDrift:
        standardise = Reference.from_rows(list(reference.columns), reference.to_numpy())
        return SampleDrift("m", "1", standardise, list(DetectorKind), seed=5)

    expected = [(e.feature, e.detector, e.samples) for e in fresh().update_features(rows, 0)]
    first_half = fresh()
    before = [(e.feature, e.detector, e.samples) for e in first_half.update_features(rows[:500], 0)]
    resumed = pickle.loads(pickle.dumps(first_half))
    after = [(e.feature, e.detector, e.samples) for e in resumed.update_features(rows[500:], 0)]
    assert before + after == expected
