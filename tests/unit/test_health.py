"""Health reports: error rate, p99 latency and lag per window, then a fresh window."""

from __future__ import annotations

from streaminfer.streams.pipeline.health import HealthWindow


def test_a_report_gives_error_rate_p99_and_lag_and_starts_a_new_window():
    window = HealthWindow("c-0", started_ms=0)
    window.observe("m", "1", ended=90, errors=0, latencies_s=[0.01] * 89 + [0.5])
    window.observe("m", "1", ended=10, errors=10, latencies_s=[])
    events = {e.metric: e for e in window.report(10_000, lag_records=7, topic="requests")}
    assert events["error_rate"].value == 0.1 and events["error_rate"].samples == 100
    assert events["latency_p99_seconds"].value == 0.5
    assert events["lag_records"].value == 7 and events["lag_records"].labels == {"consumer": "c-0", "topic": "requests"}
    assert events["error_rate"].labels == {"consumer": "c-0"}
    assert (events["error_rate"].window_start_ms, events["error_rate"].window_end_ms) == (0, 10_000)
    assert [e.metric for e in window.report(20_000, None, "requests")] == []


def test_the_latency_sample_stays_bounded():
    window = HealthWindow("c-0", started_ms=0)
    for _ in range(100):
        window.observe("m", "1", ended=1000, errors=0, latencies_s=[0.001] * 1000)
    assert len(window.latencies[("m", "1")]) == 4096
