"""Canary gates, split statistics and shadow comparison over an experiment's evidence."""

from __future__ import annotations

import random

import msgspec

from streaminfer.monitoring.experiments.evidence import ExperimentEvidence
from streaminfer.reports.experiment import write_report
from streaminfer.workers.routing.traffic import Arm, Canary, Gates, Shadow, TrafficPolicy

CANARY = TrafficPolicy("c1", canary=Canary(control="1.0.0", candidate="1.1.0", min_requests=200, gates=Gates()))


def feed(evidence: ExperimentEvidence, arm: str, n: int, *, error_rate: float = 0.0, latency_ms: float = 10.0,
         score: float = 0.5, accuracy: float = 1.0, seed: int = 0, start: int = 0) -> None:
    rng = random.Random(seed)
    for i in range(start, start + n):
        if rng.random() < error_rate:
            evidence.failed(arm, "v")
            continue
        rid = f"{arm}-{i}"
        evidence.answered(rid, arm, "v", latency_ms * rng.uniform(0.5, 1.5), [1], [score + rng.gauss(0, 0.05)])
        evidence.labelled(rid, [1 if rng.random() < accuracy else 0])


def test_a_candidate_failing_a_fifth_of_its_requests_is_rolled_back_on_its_error_rate():
    evidence = ExperimentEvidence("m", CANARY)
    feed(evidence, "control", 2000)
    feed(evidence, "candidate", 80, error_rate=0.2)
    verdict = evidence.judge_canary()
    assert (verdict.action, verdict.gate) == ("rollback", "error_rate"), verdict


def test_a_healthy_candidate_waits_for_enough_requests_then_advances_and_completes_at_the_last_step():
    evidence = ExperimentEvidence("m", CANARY)
    feed(evidence, "control", 2000)
    feed(evidence, "candidate", 150, seed=1)
    assert evidence.judge_canary().action == "wait"
    feed(evidence, "candidate", 100, seed=2, start=150)
    assert evidence.judge_canary().action == "advance"
    last = msgspec.structs.replace(CANARY, canary=msgspec.structs.replace(CANARY.canary, step=3))
    evidence = ExperimentEvidence("m", last)
    feed(evidence, "control", 500)
    feed(evidence, "candidate", 300, seed=3)
    assert evidence.judge_canary().action == "complete"


def test_gates_on_latency_score_shift_and_accuracy_each_roll_back():
    slow = ExperimentEvidence("m", CANARY)
    feed(slow, "control", 500)
    feed(slow, "candidate", 300, latency_ms=900)
    assert slow.judge_canary().gate == "latency_p99"

    shifted = ExperimentEvidence("m", CANARY)
    feed(shifted, "control", 500)
    feed(shifted, "candidate", 300, score=0.9)
    assert shifted.judge_canary().gate == "prediction_drift"

    worse = ExperimentEvidence("m", CANARY)
    feed(worse, "control", 3000, accuracy=0.95)
    feed(worse, "candidate", 3000, accuracy=0.70, seed=4)
    assert worse.judge_canary().gate == "accuracy"


def test_each_step_is_judged_on_its_own_evidence():
    evidence = ExperimentEvidence("m", CANARY)
    feed(evidence, "control", 1000)
    feed(evidence, "candidate", 300)
    assert evidence.judge_canary().action == "advance"
    evidence.next_step()
    assert evidence.judge_canary().action == "wait"
    assert evidence.total["candidate"].requests == 300


def test_a_split_reports_the_sample_ratio_check_and_holm_corrected_effects(tmp_path):
    policy = TrafficPolicy("ab", arms=(Arm("control", "1.0.0", 50), Arm("b", "1.1.0", 25), Arm("c", "1.2.0", 25)))
    evidence = ExperimentEvidence("m", policy)
    feed(evidence, "control", 2000, accuracy=0.9)
    feed(evidence, "b", 1000, accuracy=0.9, seed=5)
    feed(evidence, "c", 1000, accuracy=0.7, seed=6)
    snapshot = evidence.look(1_700_000_000_000)
    assert not snapshot.split_mismatch
    accuracy = {e.arm: e for e in snapshot.effects if e.outcome == "accuracy"}
    assert accuracy["c"].significant and accuracy["c"].upper < 0
    assert not accuracy["b"].significant and accuracy["b"].lower < 0 < accuracy["b"].upper

    lopsided = ExperimentEvidence("m", policy)
    feed(lopsided, "control", 2000)
    feed(lopsided, "b", 500, seed=7)
    feed(lopsided, "c", 1000, seed=8)
    assert lopsided.look(0).split_mismatch

    (tmp_path / "ab.jsonl").write_bytes(b"".join(msgspec.json.encode(evidence.look(t)) + b"\n"
                                               for t in (1_700_000_000_000, 1_700_000_001_000)))
    path, verdict = write_report(tmp_path, "ab")
    assert "c - control, accuracy" in verdict and "significant" in verdict and "as configured" in verdict
    assert path.read_text().count("data:image/png;base64,") == 3


def test_shadow_agreement_and_errors_are_counted_per_request():
    evidence = ExperimentEvidence("m", TrafficPolicy("s", shadow=Shadow("1.1.0", 1.0)))
    for i in range(100):
        evidence.answered(f"r{i}", "primary", "1.0.0", 5.0, [i % 2], [0.5])
        if i < 90:
            evidence.shadowed(f"r{i}", [i % 2 if i < 80 else 1 - i % 2], [0.5], 6.0)
        else:
            evidence.shadowed(f"r{i}", None, [], 6.0)
    shadow = evidence.look(0).shadow
    assert shadow is not None
    assert (shadow.compared, shadow.shadow_errors) == (90, 10)
    assert shadow.agreement == 80 / 90
