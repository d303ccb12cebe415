"""Anomaly rules on seeded seasonal series: false alarms, detection delays, and a threshold rule
on the same series side by side (``pytest -s`` prints the table); `for`, grouping, restarts."""

from __future__ import annotations

import math
import random

from streaminfer.monitoring.alerting.config import RouteConfig, RuleConfig
from streaminfer.monitoring.alerting.dispatch import Dispatcher
from streaminfer.monitoring.alerting.rules import RuleEngine
from streaminfer.monitoring.alerting.signals import Sample, labels_of, throughput_of
from streaminfer.monitoring.checkpoint import load_checkpoint, save_checkpoint
from streaminfer.schemas.monitoring_events import MetricEvent

STEP_S = 900  # a point every 15 minutes: 96 points a day
DAY = 96
WARMUP = 2 * DAY  # the anomaly detector flags nothing during its first two seasons
NOISE = 1.0
START = 3048  # where anomalies are injected: the trough of the daily curve

# the bounds this file pins down
FALSE_ALARMS_PER_10K = 1.0
SPIKE_WITHIN = 1  # points, counting the spike itself
SHIFT_WITHIN = 10
RAMP_WITHIN = 150

ANOMALY = RuleConfig(name="LatencyAnomaly", kind="anomaly", signal="latency_p99_seconds")  # 5 deviations
THRESHOLD = RuleConfig(name="LatencyHigh", signal="latency_p99_seconds", op=">", value=65.0)
"""The threshold one would pick from the normal range: the daily peak (61) plus four noise
standard deviations."""

INJECTIONS = {
    "spike +10 sd, one point": lambda i: 10 * NOISE if i == START else 0.0,
    "level shift +4 sd": lambda i: 4 * NOISE if i >= START else 0.0,
    "ramp +0.02 sd a point": lambda i: 0.02 * NOISE * (i - START) if i >= START else 0.0,
}


def daily(i: int) -> float:
    """A daily curve with two harmonics (a busy afternoon, a quiet night)."""
    return 50 + 8 * math.sin(2 * math.pi * i / DAY) + 3 * math.sin(4 * math.pi * i / DAY + 1)


def point(i: int, value: float, **labels: str) -> Sample:
    return Sample("latency_p99_seconds", labels_of({"model": "m", "version": "1", **labels}), value, i * STEP_S * 1000)


def replay(seed: int, points: int, inject=lambda i: 0.0) -> dict[str, list[bool]]:
    """Feed the engine one point at a time and evaluate right after each: which rules fire at
    each point."""
    rng = random.Random(seed)
    engine = RuleEngine([ANOMALY, THRESHOLD], started_ms=0)
    firing: dict[str, list[bool]] = {ANOMALY.name: [], THRESHOLD.name: []}
    for i in range(points):
        engine.add(point(i, daily(i) + rng.gauss(0, NOISE) + inject(i)))
        names = {alert.rule for alert in engine.evaluate(i * STEP_S * 1000)[0]}
        for name, flags in firing.items():
            flags.append(name in names)
    return firing


def episodes(flags: list[bool]) -> int:
    return sum(1 for i, flag in enumerate(flags) if flag and (i == 0 or not flags[i - 1]))


def delay(flags: list[bool]) -> int | None:
    """Points from the injection to the first firing, counting the injected point as 1."""
    return next((i - START + 1 for i in range(START, len(flags)) if flags[i]), None)


SEEDS = range(1, 11)


def test_a_seasonal_series_with_noise_raises_fewer_than_one_false_alarm_per_10000_points():
    counted = []
    for seed in SEEDS:
        run = replay(seed, WARMUP + 10_000)
        counted.append({name: episodes(flags[WARMUP:]) for name, flags in run.items()})
    anomaly = [c[ANOMALY.name] for c in counted]
    print(f"\nfalse alarms (alerts started) in 10,000 points of a daily series with noise, seeds 1-10: "
          f"anomaly {anomaly} ({sum(anomaly) / len(anomaly):.1f} per 10,000), threshold > 65 "
          f"{[c[THRESHOLD.name] for c in counted]}")
    assert sum(anomaly) / len(anomaly) < FALSE_ALARMS_PER_10K


def test_a_spike_a_level_shift_and_a_slow_ramp_are_each_caught_within_their_bound_unlike_a_threshold():
    print("\npoints until the alert fires, injected at the trough of the daily curve, seeds 1-10 "
          "(median / worst; '-' never within 400 points)")
    print(f"{'injected':<26}{'anomaly rule':>16}{'threshold > 65':>18}{'false alarms before (a/t)':>28}")
    worst = {}
    for what, inject in INJECTIONS.items():
        anomaly, threshold, false_a, false_t = [], [], 0, 0
        for seed in SEEDS:
            run = replay(seed, START + 400, inject)
            anomaly.append(delay(run[ANOMALY.name]))
            threshold.append(delay(run[THRESHOLD.name]))
            false_a += episodes(run[ANOMALY.name][WARMUP:START])
            false_t += episodes(run[THRESHOLD.name][WARMUP:START])
        worst[what] = max(d if d is not None else 10**9 for d in anomaly)
        print(f"{what:<26}{_spread(anomaly):>16}{_spread(threshold):>18}{f'{false_a}/{false_t}':>28}")
    assert worst["spike +10 sd, one point"] <= SPIKE_WITHIN
    assert worst["level shift +4 sd"] <= SHIFT_WITHIN
    assert worst["ramp +0.02 sd a point"] <= RAMP_WITHIN


def _spread(delays: list[int | None]) -> str:
    caught = sorted(d for d in delays if d is not None)
    if not caught:
        return "-"
    missed = len(delays) - len(caught)
    return f"{caught[len(caught) // 2]} / {caught[-1]}" + (f", {missed} never" if missed else "")


def test_a_level_shift_resolves_once_the_forecast_has_learned_the_new_level():
    run = replay(7, START + 1000, INJECTIONS["level shift +4 sd"])[ANOMALY.name]
    assert run[START + 5] and not any(run[START + 250:])  # absorbed in about 130 points
    assert episodes(run[START:]) <= 2


def test_for_holds_a_one_point_spike_back_until_it_has_lasted():
    rule = ANOMALY.model_copy(update={"for_s": 2 * STEP_S})
    engine = RuleEngine([rule], started_ms=0)
    rng = random.Random(3)
    fired = []
    for i in range(START + 10):
        spike = 10 * NOISE if i == START else 0.0
        shift = 8 * NOISE if i >= START + 5 else 0.0
        engine.add(point(i, daily(i) + rng.gauss(0, NOISE) + spike + shift))
        if engine.evaluate(i * STEP_S * 1000)[0]:
            fired.append(i)
    assert fired and fired[0] == START + 7  # the shift, held for two points; never the spike


def test_series_have_their_own_forecasts_and_by_groups_their_alerts():
    rule = ANOMALY.model_copy(update={"by": ["model"]})
    engine = RuleEngine([rule], started_ms=0)
    rng = random.Random(5)
    for i in range(START + 1):
        for version, offset in (("1", 0.0), ("2", 30.0)):  # levels far apart: one forecast would flag both
            spike = 10 * NOISE if (i == START and version == "2") else 0.0
            engine.add(point(i, daily(i) + offset + rng.gauss(0, NOISE) + spike, version=version))
        firing, _ = engine.evaluate(i * STEP_S * 1000)
        if i < START:
            assert firing == []
    assert [(a.labels["alertname"], a.labels["model"], "version" in a.labels) for a in firing] == [("LatencyAnomaly", "m", False)]
    assert firing[0].value > rule.deviations
    notifications = Dispatcher(RouteConfig(receiver="oncall", group_wait_s=0)).apply(firing, [], [], START * STEP_S * 1000)
    assert [n.receiver for n in notifications] == ["oncall"]


def test_what_an_anomaly_rule_learned_survives_a_checkpoint_and_a_restart(tmp_path):
    rng = random.Random(11)
    values = [daily(i) + rng.gauss(0, NOISE) + (10 * NOISE if i == START else 0.0) for i in range(START + 1)]
    before = RuleEngine([ANOMALY], started_ms=0)
    for i, value in enumerate(values[:START]):
        before.add(point(i, value))
    save_checkpoint(tmp_path, before)
    restored = RuleEngine([ANOMALY], started_ms=START * STEP_S * 1000)
    restored.adopt(load_checkpoint(tmp_path))
    before.add(point(START, values[START]))
    restored.add(point(START, values[START]))
    now = START * STEP_S * 1000
    (kept,), _ = before.evaluate(now)
    (after,), _ = restored.evaluate(now)
    assert after.value == kept.value > ANOMALY.deviations  # the same forecast, not a fresh one still learning
    fresh = RuleEngine([ANOMALY.model_copy(update={"season_s": 3600.0})], started_ms=0)
    fresh.adopt(load_checkpoint(tmp_path))
    assert fresh.anomalies.detectors == {}  # a different season starts over


def test_direction_up_ignores_a_dip_that_both_directions_flag():
    up = ANOMALY.model_copy(update={"name": "Up", "direction": "up"})
    both = ANOMALY.model_copy(update={"name": "Both"})
    engine = RuleEngine([up, both], started_ms=0)
    rng = random.Random(13)
    for i in range(START + 1):
        engine.add(point(i, daily(i) + rng.gauss(0, NOISE) - (10 * NOISE if i == START else 0.0)))
    firing, _ = engine.evaluate(START * STEP_S * 1000)
    assert [a.rule for a in firing] == ["Both"]


def test_with_a_step_the_rule_judges_each_steps_mean_as_if_it_had_come_as_one_point():
    stepped = ANOMALY.model_copy(update={"name": "Stepped", "step_s": float(STEP_S)})
    dense, sparse = RuleEngine([stepped], started_ms=0), RuleEngine([ANOMALY], started_ms=0)
    rng = random.Random(17)
    verdicts_dense, verdicts_sparse = [], []
    for i in range(START + 40):
        values = [daily(i) + rng.gauss(0, NOISE) + (10 * NOISE if i == START else 0.0) for _ in range(15)]
        labels = point(i, 0.0).labels
        for k, value in enumerate(values):  # 15 points a minute apart make one step
            dense.add(Sample("latency_p99_seconds", labels, value, (i * STEP_S + 60 * k) * 1000))
        sparse.add(Sample("latency_p99_seconds", labels, sum(values) / 15, (i * STEP_S + STEP_S // 2) * 1000))
        verdicts_sparse.append(bool(sparse.evaluate((i * STEP_S + STEP_S // 2) * 1000)[0]))
        verdicts_dense.append(bool(dense.evaluate((i * STEP_S + 60 * 14) * 1000)[0]))
    # a step is judged when the next one starts: one step later
    assert verdicts_dense[1:] == verdicts_sparse[:-1]
    assert verdicts_sparse[START] and not any(verdicts_sparse[WARMUP:START])


def test_each_consumers_throughput_is_a_signal_derived_from_its_error_rate_window():
    def event(metric: str) -> MetricEvent:
        return MetricEvent(model="m", version="1", metric=metric, value=0.01, samples=500, window_start_ms=10_000,
                           window_end_ms=20_000, emitted_at_ms=20_000, labels={"consumer": "c0"})

    derived = throughput_of(event("error_rate"), 20_500)
    assert derived == Sample("requests_per_second", labels_of({"model": "m", "version": "1", "consumer": "c0"}), 50.0, 20_500)
    assert throughput_of(event("latency_p99_seconds"), 20_500) is None
