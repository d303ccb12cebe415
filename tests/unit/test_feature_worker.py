"""The feature worker's own rules around Faust: what it may commit, and what it counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import FeatureAppMetrics
from streaminfer.streams.features import records
from streaminfer.streams.features.faust_app import head_handled


def test_offsets_are_never_committed_past_a_record_at_the_committed_offset_that_was_not_handled():
    assert head_handled(40, 40, marker_may_lead=False)
    assert not head_handled(40, 41, marker_may_lead=False), "Faust's own rule commits past offset 40 here"
    assert not head_handled(0, 1, marker_may_lead=False), "a partition never committed starts at its first offset"


def test_reading_read_committed_one_offset_at_the_committed_one_may_be_a_transaction_marker():
    assert head_handled(40, 41, marker_may_lead=True)
    assert not head_handled(40, 42, marker_may_lead=True)


def test_the_worker_exports_the_records_its_decoders_passed_over():
    registry = CollectorRegistry()
    FeatureAppMetrics(registry, skipped=lambda: {kind: records.SKIPPED[kind] for kind in records.SKIP_KINDS})

    def skipped(kind: str) -> float | None:
        return registry.get_sample_value("streaminfer_feature_records_skipped_total", {"kind": kind})

    before = {kind: skipped(kind) for kind in records.SKIP_KINDS}
    assert records.request_part(b"{not json", {}, 0, "customer") is None
    assert records.prediction_part(b"[]", 0) is None
    assert skipped("request") == before["request"] + 1
    assert skipped("prediction") == before["prediction"] + 1
    assert skipped("dead_letter") == before["dead_letter"]
