"""Prometheus metrics of the consume → infer → produce path.

Metrics live in a registry passed in by the composition root (never the global default), so two
pipelines in one process, or tests, never share counters by accident. Names follow Prometheus
conventions: ``_total`` for counters and seconds as the unit of time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

PREDICTED = "predicted"


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "streaminfer_requests_total",
            "Requests ended, by model, version and outcome (predicted or a dead-letter reason).",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "streaminfer_inference_duration_seconds",
            "Time of one batch on the worker pool, including the Ray call.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "streaminfer_end_to_end_latency_seconds",
            "From the request's Kafka timestamp to its prediction being acknowledged.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "streaminfer_batch_size",
            "Requests per inference batch.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.inflight_batches = Gauge(
            "streaminfer_inflight_batches",
            "Batches between fetch and acknowledgement.",
            registry=registry,
        )
        self.pending_records = Gauge(
            "streaminfer_pending_records",
            "Records read from Kafka and not yet ended as a prediction or dead letter.",
            registry=registry,
        )
        self.paused = Gauge(
            "streaminfer_consumer_paused",
            "1 while the consumer has paused its partitions because every batch slot is taken.",
            registry=registry,
        )
