"""Alert rules on a fake clock: threshold with `for`, trend, absence, composite; resolve."""

from __future__ import annotations

from streaminfer.monitoring.alerting.config import RuleConfig
from streaminfer.monitoring.alerting.rules import RuleEngine
from streaminfer.monitoring.alerting.signals import Sample, labels_of

MODEL = {"model": "m", "version": "1"}


def sample(signal: str, value: float, at_s: float, **labels: str) -> Sample:
    return Sample(signal, labels_of({**MODEL, **labels}), value, int(at_s * 1000))


def names(alerts) -> list[str]:
    return sorted(a.labels["alertname"] for a in alerts)


def test_threshold_waits_for_its_for_duration_then_fires_and_resolves_when_it_clears():
    rule = RuleConfig(name="LowAccuracy", signal="accuracy", op="<", value=0.8, for_s=30, window_s=600)
    engine = RuleEngine([rule], started_ms=0)
    engine.store.add(sample("accuracy", 0.7, 0))
    assert engine.evaluate(0) == ([], [])
    assert engine.evaluate(29_000) == ([], [])  # pending
    firing, _ = engine.evaluate(30_000)
    assert names(firing) == ["LowAccuracy"] and firing[0].labels["severity"] == "warning"
    assert firing[0].starts_ms == 30_000 and firing[0].value == 0.7
    engine.store.add(sample("accuracy", 0.9, 40))
    firing, resolved = engine.evaluate(41_000)
    assert firing == [] and names(resolved) == ["LowAccuracy"] and resolved[0].ends_ms == 41_000


def test_count_over_a_window_fires_per_series_and_stops_once_the_window_has_passed():
    rule = RuleConfig(name="Drift", signal="drift", reduce="count", window_s=60, op=">=", value=2,
                      where=["detector=~adwin|evidently"], by=["model", "feature"])
    engine = RuleEngine([rule], started_ms=0)
    for at in (1, 2):
        engine.store.add(sample("drift", 0.9, at, feature="a", detector="adwin", kind="sample"))
    engine.store.add(sample("drift", 0.9, 3, feature="b", detector="adwin", kind="sample"))
    engine.store.add(sample("drift", 0.9, 3, feature="b", detector="kswin", kind="sample"))  # not matched
    firing, _ = engine.evaluate(5_000)
    assert [(a.labels["feature"], a.value) for a in firing] == [("a", 2.0)]
    assert "detector" not in firing[0].labels  # `by` decides the series
    firing, resolved = engine.evaluate(62_000)
    assert firing == [] and [a.labels["feature"] for a in resolved] == ["a"]


def test_trend_fires_on_a_falling_series():
    rule = RuleConfig(name="AccuracyFalling", kind="trend", signal="accuracy", window_s=100, op="<", value=-0.0005)
    engine = RuleEngine([rule], started_ms=0)
    for at, value in ((0, 0.95), (50, 0.94), (100, 0.85)):
        engine.store.add(sample("accuracy", value, at))
    firing, _ = engine.evaluate(100_000)
    assert names(firing) == ["AccuracyFalling"]
    assert abs(firing[0].value - (-0.001)) < 1e-12


def test_absence_fires_when_nothing_comes_and_when_a_series_stops():
    rule = RuleConfig(name="NoLabels", kind="absence", signal="accuracy", where=["model=m"], period_s=60)
    engine = RuleEngine([rule], started_ms=0)
    assert engine.evaluate(59_000) == ([], [])
    firing, _ = engine.evaluate(60_000)
    assert names(firing) == ["NoLabels"] and firing[0].labels["model"] == "m"
    engine.store.add(sample("accuracy", 0.9, 61))
    firing, resolved = engine.evaluate(62_000)
    assert firing == [] and names(resolved) == ["NoLabels"]
    firing, _ = engine.evaluate(121_000)
    assert names(firing) == ["NoLabels"] and firing[0].labels["version"] == "1"


def test_composite_all_needs_every_rule_true_on_the_same_model():
    rules = [
        RuleConfig(name="Drift", signal="drift", reduce="count", op=">=", value=1),
        RuleConfig(name="LowAccuracy", signal="accuracy", op="<", value=0.8),
        RuleConfig(name="DriftHurts", kind="composite", all=["Drift", "LowAccuracy"], match_on=["model"], severity="critical"),
    ]
    engine = RuleEngine(rules, started_ms=0)
    engine.store.add(sample("drift", 0.5, 1, feature="a", detector="adwin", kind="sample"))
    engine.store.add(Sample("accuracy", labels_of({"model": "other", "version": "1"}), 0.5, 1000))
    assert names(engine.evaluate(2_000)[0]) == ["Drift", "LowAccuracy"]
    engine.store.add(sample("accuracy", 0.7, 3))
    firing, _ = engine.evaluate(4_000)
    critical = [a for a in firing if a.labels["alertname"] == "DriftHurts"]
    assert [(a.labels["model"], a.labels["severity"]) for a in critical] == [("m", "critical")]


def test_annotations_fill_in_labels_and_the_value():
    rule = RuleConfig(name="LowAccuracy", signal="accuracy", op="<", value=0.8,
                      annotations={"summary": "{model} accuracy is {value} ({unknown})"})
    engine = RuleEngine([rule], started_ms=0)
    engine.store.add(sample("accuracy", 0.5, 0))
    (alert,), _ = engine.evaluate(0)
    assert alert.annotations["summary"] == "m accuracy is 0.5 ({unknown})"


def test_an_engine_restored_from_a_checkpoint_keeps_firing_alerts_firing_and_drops_removed_rules():
    import pickle

    low = RuleConfig(name="LowAccuracy", signal="accuracy", op="<", value=0.8, for_s=30)
    gone = RuleConfig(name="Gone", signal="accuracy", op="<", value=0.9)
    before = RuleEngine([low, gone], started_ms=0)
    before.store.add(sample("accuracy", 0.7, 0))
    before.evaluate(0)
    before.evaluate(30_000)
    restored = RuleEngine([low], started_ms=40_000)
    restored.adopt(pickle.loads(pickle.dumps(before)))
    firing, resolved = restored.evaluate(31_000)
    assert [(a.labels["alertname"], a.starts_ms) for a in firing] == [("LowAccuracy", 30_000)]
    assert resolved == []  # "Gone" is not resolved: it no longer exists, and nobody is told twice
