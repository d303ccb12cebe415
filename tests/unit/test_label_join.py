"""The label join: same figures as offline on the same pairs; late, missing, duplicate and
unmatched labels counted as such; memory bounded by the TTL."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from streaminfer.monitoring.label_join import LabelJoin, PredictedRows, predicted_rows
from streaminfer.schemas.codec import Prediction, ResponseTensor

TTL_MS = 10_000


def rows(p1: float, ts: int, model: str = "m", version: str = "1") -> PredictedRows:
    return PredictedRows(model, version, [int(p1 >= 0.5)], [[1 - p1, p1]], ts)


def seeded_stream(n: int = 3000, seed: int = 4):
    """Predictions one per 10 ms; each label comes 0-30 s later, or never (10%)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    p1 = np.clip(truth * 0.35 + rng.uniform(0, 0.65, n), 0.001, 0.999)
    delay = rng.uniform(0, 3 * TTL_MS, n).astype(int)
    lost = rng.uniform(size=n) < 0.1
    ts = np.arange(n) * 10
    events = [(int(ts[i]), "p", i) for i in range(n)]
    events += [(int(ts[i] + delay[i]), "l", i) for i in range(n) if not lost[i]]
    events.sort(key=lambda e: (e[0], e[1] == "l"))
    return truth, p1, delay, lost, ts, events


def replay(events, truth, p1) -> LabelJoin:
    join = LabelJoin(TTL_MS)
    for at, side, i in events:
        if side == "p":
            join.add_prediction(f"r{i}", rows(float(p1[i]), at))
        else:
            join.add_label(f"r{i}", [int(truth[i])], at)
    return join


def test_join_gives_the_offline_figures_on_the_pairs_within_the_ttl():
    truth, p1, delay, lost, _ts, events = seeded_stream()
    join = replay(events, truth, p1)
    in_time = (~lost) & (delay <= TTL_MS)
    figures = join.quality[("m", "1")].values()
    assert join.quality[("m", "1")].joined == int(in_time.sum())
    assert figures["accuracy"] == pytest.approx(accuracy_score(truth[in_time], p1[in_time] >= 0.5), abs=1e-12)
    assert figures["log_loss"] == pytest.approx(log_loss(truth[in_time], p1[in_time]), rel=1e-9)
    assert figures["roc_auc"] == pytest.approx(roc_auc_score(truth[in_time], p1[in_time]), abs=0.01)


def test_late_and_missing_labels_are_counted_not_dropped_silently():
    truth, p1, delay, lost, ts, events = seeded_stream()
    join = replay(events, truth, p1)
    late = (~lost) & (delay > TTL_MS) & (delay <= 2 * TTL_MS)
    too_late = (~lost) & (delay > 2 * TTL_MS)  # the expired prediction's id is forgotten by then
    assert join.outcome_count("m", "1", "late") == int(late.sum())
    waiting_predictions, waiting_labels = join.pending()
    assert join.outcome_count("unknown", "unknown", "unmatched") + waiting_labels == int(too_late.sum())
    joined, missing = join.outcome_count("m", "1", "joined"), join.outcome_count("m", "1", "missing")
    assert joined + missing + waiting_predictions == len(ts)
    assert missing == int(lost.sum() + late.sum() + too_late.sum()) - waiting_predictions


def test_a_label_before_its_prediction_still_joins():
    join = LabelJoin(TTL_MS)
    join.add_label("a", [1], 1000)
    assert join.add_prediction("a", rows(0.9, 1005)) == [("m", "1")]
    assert join.outcome_count("m", "1", "joined") == 1


def test_a_second_label_for_the_same_request_is_a_duplicate():
    join = LabelJoin(TTL_MS)
    join.add_prediction("a", rows(0.9, 0))
    join.add_label("a", [1], 10)
    join.add_label("a", [0], 20)
    assert join.quality[("m", "1")].joined == 1
    assert join.outcome_count("m", "1", "duplicate") == 1


def test_memory_stays_bounded_by_the_ttl():
    join = LabelJoin(TTL_MS)
    for i in range(20_000):
        join.add_prediction(f"r{i}", rows(0.5, i * 10))
        if i % 2:
            join.add_label(f"r{i - 1}", [1], i * 10)
    waiting_predictions, _waiting_labels = join.pending()
    assert waiting_predictions <= 2 * TTL_MS // 10 + 1
    assert len(join._joined) + len(join._expired) <= 2 * TTL_MS // 10 + 2


def test_predicted_rows_reads_labels_and_probabilities_of_a_multi_row_prediction():
    prediction = Prediction(
        id="x", model_name="m", model_version="1",
        outputs=[ResponseTensor("label", [2], "INT64", [0, 1]),
                 ResponseTensor("probabilities", [2, 2], "FP32", [0.8, 0.2, 0.3, 0.7])],
    )
    got = predicted_rows(prediction, "probabilities", 5)
    assert got.labels == [0, 1] and got.probabilities == [[0.8, 0.2], [0.3, 0.7]]
