"""The batch histogram exposes what Prometheus's own ``Histogram`` does for the same values, so
dashboards and alert rules read it unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streaminfer.monitoring.observability.batch_histogram import BatchHistogram

BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect() for s in family.samples if not s.name.endswith("_created")
    }


def test_values_observed_in_batches_expose_the_buckets_count_and_sum_of_a_prometheus_histogram():
    values = [0.0, 0.001, 0.0011, 0.005, 0.05, 0.2, 1.0, 3.0, 0.0004] * 7
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("latency_seconds", "help", ["model"], BUCKETS, ours)
    reference = Histogram("latency_seconds", "help", ["model"], buckets=BUCKETS, registry=theirs)
    for start in range(0, len(values), 10):
        batched.observe_many(("m",), values[start:start + 10])
    for value in values:
        reference.labels("m").observe(value)
    assert _samples(ours) == pytest.approx(_samples(theirs))


def test_a_value_on_a_bound_counts_in_that_bounds_bucket():
    registry = CollectorRegistry()
    histogram = BatchHistogram("h", "help", ["model"], BUCKETS, registry)
    histogram.observe_many(("m",), np.array([0.01]))
    assert registry.get_sample_value("h_bucket", {"model": "m", "le": "0.005"}) == 0
    assert registry.get_sample_value("h_bucket", {"model": "m", "le": "0.01"}) == 1
    assert registry.get_sample_value("h_bucket", {"model": "m", "le": "+Inf"}) == 1


def test_each_label_set_is_its_own_series():
    registry = CollectorRegistry()
    histogram = BatchHistogram("h", "help", ["model"], BUCKETS, registry)
    histogram.observe_many(("a",), [0.5, 0.5])
    histogram.observe_many(("b",), [2.0])
    assert registry.get_sample_value("h_count", {"model": "a"}) == 2
    assert registry.get_sample_value("h_sum", {"model": "b"}) == 2.0
    assert b'h_bucket{le="+Inf",model="b"} 1.0' in generate_latest(registry)


def test_wrong_label_count_is_refused_and_an_empty_batch_adds_no_series():
    registry = CollectorRegistry()
    histogram = BatchHistogram("h", "help", ["model"], BUCKETS, registry)
    with pytest.raises(ValueError, match="takes labels"):
        histogram.observe_many(("a", "b"), [1.0])
    histogram.observe_many(("a",), [])
    assert registry.get_sample_value("h_count", {"model": "a"}) is None
