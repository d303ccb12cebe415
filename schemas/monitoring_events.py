"""Wire formats of the monitoring topics: drift events, metric events and delayed labels.

Drift and metric events are what alerting consumes, so their fields are explicit and stable:
which model and version, which feature and detector, the statistic that crossed which
threshold, and the stretch of the stream (event time, epoch milliseconds) it was seen over.
JSON Schemas for all three are next to this module.
"""

from __future__ import annotations

from enum import Enum

import msgspec

from streaminfer.schemas.codec import decode_bounded

#: The feature name drift events use for the model's prediction score.
PREDICTION_FEATURE = "__prediction__"


class DriftKind(str, Enum):
    SAMPLE = "sample"
    """A river detector fired on one sample."""

    WINDOW = "window"
    """Evidently found the feature drifted over a tumbling window."""


class DriftEvent(msgspec.Struct, omit_defaults=True):
    model: str
    version: str
    feature: str
    detector: str
    kind: DriftKind
    statistic: float
    threshold: float
    window_start_ms: int
    window_end_ms: int
    samples: int
    """Samples the detector has seen for this feature (per-sample) or rows in the window."""

    detected_at_ms: int
    report: str | None = None
    """Path of the evidently HTML report for window events."""


class MetricEvent(msgspec.Struct, omit_defaults=True):
    """A figure at a point of the stream: model quality from joined labels (accuracy, ROC AUC,
    log-loss, label counts), or pipeline health from each consumer (error rate, p99 latency,
    lag), emitted periodically."""

    model: str
    version: str
    metric: str
    value: float
    samples: int
    window_start_ms: int
    window_end_ms: int
    emitted_at_ms: int
    labels: dict[str, str] = {}
    """More labels telling series apart, e.g. the consumer that measured a health figure."""


class Label(msgspec.Struct):
    """A ground-truth label for an earlier request, on ``inference.labels`` keyed by request id.

    ``label`` is one class index per row of the request (a bare number for one-row requests).
    """

    id: str
    label: int | list[int]


_drift_decoder = msgspec.json.Decoder(DriftEvent)
_metric_decoder = msgspec.json.Decoder(MetricEvent)
_label_decoder = msgspec.json.Decoder(Label)
_encoder = msgspec.json.Encoder()


def encode_event(event: DriftEvent | MetricEvent | Label) -> bytes:
    return _encoder.encode(event)


def decode_drift_event(body: bytes) -> DriftEvent:
    return decode_bounded(_drift_decoder, body, "drift event")


def decode_metric_event(body: bytes) -> MetricEvent:
    return decode_bounded(_metric_decoder, body, "metric event")


def decode_label(body: bytes) -> Label:
    return decode_bounded(_label_decoder, body, "label")
