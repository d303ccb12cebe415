"""Health reports: error rate, p99 latency and lag per window, then a fresh window; a report is
due once the interval has passed on the window's clock."""

from __future__ import annotations

from streaminfer.streams.clock import ManualClock
from streaminfer.streams.pipeline.health import HealthWindow


def test_a_report_gives_error_rate_p99_and_lag_and_starts_a_new_window():
    clock = ManualClock(start_s=0.0)
    window = HealthWindow("c-0", interval_s=10, clock=clock)
    window.observe("m", "1", ended=90, errors=0, latencies_s=[0.01] * 89 + [0.5])
    window.observe("m", "1", ended=10, errors=10, latencies_s=[])
    clock.advance(10)
    events = {e.metric: e for e in window.report(lag_records=7, topic="requests")}
    assert events["error_rate"].value == 0.1 and events["error_rate"].samples == 100
    assert events["latency_p99_seconds"].value == 0.5
    assert events["lag_records"].value == 7 and events["lag_records"].labels == {"consumer": "c-0", "topic": "requests"}
    assert events["error_rate"].labels == {"consumer": "c-0"}
    assert (events["error_rate"].window_start_ms, events["error_rate"].window_end_ms) == (0, 10_000)
    clock.advance(10)
    assert [e.metric for e in window.report(None, "requests")] == []


def test_the_next_window_starts_where_the_last_report_ended():
    clock = ManualClock(start_s=1_000.0)
    window = HealthWindow("c-0", interval_s=5, clock=clock)
    clock.advance(5)
    window.report(None, "requests")
    window.observe("m", "1", ended=1, errors=0, latencies_s=[0.1])
    clock.advance(7)
    [event, _] = window.report(None, "requests")
    assert (event.window_start_ms, event.window_end_ms, event.emitted_at_ms) == (1_005_000, 1_012_000, 1_012_000)


def test_a_report_is_due_once_the_interval_has_passed_since_the_last_one():
    clock = ManualClock()
    window = HealthWindow("c-0", interval_s=5, clock=clock)
    clock.advance(4.5)
    assert not window.due()
    clock.advance(0.5)
    assert window.due()
    window.report(None, "requests")
    assert not window.due()
    clock.advance(5)
    assert window.due()


def test_the_latency_sample_stays_bounded():
    window = HealthWindow("c-0", interval_s=10, clock=ManualClock())
    for _ in range(100):
        window.observe("m", "1", ended=1000, errors=0, latencies_s=[0.001] * 1000)
    assert len(window.latencies[("m", "1")]) == 4096


def test_latencies_observed_per_batch_keep_the_sample_they_kept_one_by_one():
    batched, single = HealthWindow("c-0", interval_s=10), HealthWindow("c-0", interval_s=10)
    values = [n / 1000 for n in range(10_000)]
    for start in range(0, len(values), 700):
        batched.observe("m", "1", ended=700, errors=0, latencies_s=values[start:start + 700])
    for value in values:
        single.observe("m", "1", ended=1, errors=0, latencies_s=[value])
    assert batched.latencies == single.latencies


def test_the_latency_sample_is_uniform_over_the_whole_window():
    """Past the first 4096 values each later one replaces a slot with falling probability, so the
    sample spreads over the whole window and not over its start or its end."""
    window = HealthWindow("c-0", interval_s=10)
    values = [float(n) for n in range(200_000)]
    for start in range(0, len(values), 240):
        window.observe("m", "1", ended=240, errors=0, latencies_s=values[start:start + 240])
    kept = window.latencies[("m", "1")]
    assert len(kept) == 4096
    assert abs(sum(kept) / len(kept) - 100_000) < 3_000  # the mean of a uniform sample; sd about 900
    assert sum(value < 4096 for value in kept) < 300  # the window's first 2% hold about 2% of it
