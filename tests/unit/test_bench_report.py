"""The benchmark's report: ratios and added latency from one round each, and the README block
regenerated from the results file, not typed in."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report
from bench.readme import BEGIN, END, regenerate
from bench.runner import RunResult, offered_rates


def _round(throughput: float, p50: float, p99: float) -> RunResult:
    return RunResult(throughput=throughput, latency={"1k": {"rate": 1000.0, "p50_ms": p50, "p99_ms": p99}})


def test_ratios_and_added_latency_come_from_one_round_each_then_the_median() -> None:
    rounds = {
        report.LIMIT_B: [_round(100.0, 2.0, 5.0), _round(50.0, 4.0, 9.0), _round(80.0, 3.0, 6.0)],
        report.DEFAULTS: [_round(90.0, 3.0, 8.0), _round(50.0, 7.0, 10.0), _round(40.0, 4.0, 12.0)],
    }
    derived = report.per_round(rounds)[report.DEFAULTS]
    assert derived["vs_limit_b"] == 0.9  # rounds: 0.9, 1.0, 0.5 (medians of each alone would say 50/80)
    assert derived["added"]["1k"] == {"p50_ms": 1.0, "p99_ms": 3.0}  # rounds: +1/+3, +3/+1, +1/+6


def test_limit_b_offers_half_of_itself_besides_the_fixed_rates() -> None:
    assert offered_rates(None, (1000.0, 5000.0)) == {"1k": 1000.0, "5k": 5000.0}
    assert offered_rates(30_001.0, (500.0,)) == {"500": 500.0, "50% limit B": 15_000}


def test_the_readme_block_is_rewritten_from_the_results_and_nothing_else_changes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    body = {
        "meta": {"date": "2026-11-29", "machine": "2 cores", "load_average": "0.9", "broker": "Tansu", "runs": 3,
                 "command": "streaminfer bench --runs 3"},
        "results": {
            report.LIMIT_B: {"throughput": 40_000.0, "latency": {}},
            report.DEFAULTS: {"throughput": 30_000.0, "startup_s": 4.2,
                              "memory_under_load": {"ours_mib": 300.0, "ray_mib": 550.0, "total_mib": 850.0},
                              "latency": {"5k": {"rate": 5000.0, "p50_ms": 3.5, "p99_ms": 9.0, "generator_lag_p99_ms": 1.0}}},
        },
        "derived": {report.DEFAULTS: {"vs_limit_b": 0.75, "vs_limit_b_1": 1.1, "added": {"5k": {"p50_ms": 1.5, "p99_ms": 4.0}}}},
    }
    (results / "bench.json").write_text(json.dumps(body))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{BEGIN}\nstale figures\n{END}\nafter\n")

    text = regenerate(readme, results)

    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "stale figures" not in text
    assert "0.75× limit B (40,000 msg/s)" in text
    assert "5k (5,000 msg/s): 3.5 / 9.0 (+1.5 / +4.0)" in text
    assert "| streaminfer (defaults) | 30,000 | 0.75 |" in text and "300 / 550 / 850" in text
    assert f"({results.as_posix()}/bench_latency_vs_rate.png)" in text and "On the embedded broker" in text
