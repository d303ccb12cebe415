"""Prometheus metrics of the consume → infer → produce path.

Metrics live in a registry passed in by the composition root (never the global default), so two
pipelines in one process, or tests, never share counters by accident. Names follow Prometheus
conventions: ``_total`` for counters and seconds as the unit of time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from streaminfer.monitoring.observability.batch_histogram import BatchHistogram

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
        self.end_to_end_seconds = BatchHistogram(  # observed a fetch's answers at a time
            "streaminfer_end_to_end_latency_seconds",
            "From the request's Kafka timestamp to its prediction being acknowledged.",
            ["model"],
            _LATENCY_BUCKETS,
            registry,
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
        self.consumer_lag = Gauge(
            "streaminfer_consumer_lag_records",
            "Records in a partition after the last one this consumer has ended (high watermark "
            "minus next offset to commit), as of the latest fetch.",
            ["topic", "partition"],
            registry=registry,
        )
        self.broker_connected = Gauge(
            "streaminfer_broker_connected",
            "0 while the broker cannot take this consumer's predictions or commits (they are retried "
            "until it is back), 1 otherwise.",
            registry=registry,
        )
        self.broker_connected.set(1)
        self.cache_hits = Counter(
            "streaminfer_prediction_cache_hits",
            "Requests answered from the prediction cache (in-process or shared), by model, version "
            "and lane (the arm, or shadow).",
            ["model", "version", "lane"], registry=registry,
        )
        self.cache_misses = Counter(
            "streaminfer_prediction_cache_misses",
            "Requests of a cached model version that the model had to answer.",
            ["model", "version", "lane"], registry=registry,
        )
        self.cache_evictions = Counter(
            "streaminfer_prediction_cache_evictions",
            "Answers dropped from a consumer's prediction cache, by cause: size (entries or bytes "
            "bound), expired (past ttl_s), cleared (the version stopped being served).",
            ["model", "version", "cause"], registry=registry,
        )
        self.cache_bytes = Gauge(
            "streaminfer_prediction_cache_bytes",
            "Bytes a consumer's prediction cache holds per version (inputs and encoded answers).",
            ["model", "version"], registry=registry,
        )
        self.cost_cpu_seconds = Counter(
            "streaminfer_cost_cpu_seconds",
            "CPU-seconds spent per model version, by part: consumer (this process's measured CPU time "
            "less in-process inference, shared by answers) and inference (inference time on a CPU "
            "session times its cores).",
            ["model", "version", "part"], registry=registry,
        )
        self.cost_gpu_seconds = Counter(
            "streaminfer_cost_gpu_seconds",
            "GPU-seconds of inference per model version (inference time of a CUDA session).",
            ["model", "version"], registry=registry,
        )
        self.cost_answers = Counter(
            "streaminfer_cost_answers",
            "Predictions (cached ones included) the cost above was spent on, per model version.",
            ["model", "version"], registry=registry,
        )
        self.cost_spend = Counter(
            "streaminfer_cost_spend",
            "Money spent per model version: CPU-seconds at cost.core_hour_price, GPU-seconds at "
            "cost.gpu_hour_price (in the prices' currency).",
            ["model", "version"], registry=registry,
        )
        self.cost_projected_daily_spend = Gauge(
            "streaminfer_cost_projected_daily_spend",
            "This consumer's spend today (UTC) on a model, extrapolated to the whole day at today's rate.",
            ["model"], registry=registry,
        )
        self.cost_daily_budget = Gauge(
            "streaminfer_cost_daily_budget",
            "A model's daily budget (cost.daily_budgets), for the alert on projected spend.",
            ["model"], registry=registry,
        )
        self.partitions_fenced = Counter(
            "streaminfer_partitions_fenced",
            "Exactly-once: input partitions this consumer gave up because another member had taken over "
            "their transactional ids (it was paused or cut off past its session); it rejoins the group.",
            registry=registry,
        )


class ActorMetrics:
    """Kept by the process that supervises the actors (the driver), which sees them come and go."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.actors = Gauge(
            "streaminfer_actors",
            "Ray actors answering, by role (consumer, worker, monitor).",
            ["role"],
            registry=registry,
        )
        self.restarts = Counter(
            "streaminfer_actor_restarts_total",
            "Times Ray restarted an actor (seen as a new process behind the same name).",
            ["actor", "role"],
            registry=registry,
        )


class MonitorMetrics:
    """Drift and online accuracy, kept by the monitor."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.samples = Counter(
            "streaminfer_monitor_records_total",
            "Records the monitor has read, by model and stream (requests, predictions, labels).",
            ["model", "stream"],
            registry=registry,
        )
        self.drift_score = Gauge(
            "streaminfer_drift_score",
            "Latest drift statistic per feature and detector (per-sample detectors: the "
            "detector's statistic; evidently windows: the per-feature test's score).",
            ["model", "version", "feature", "detector"],
            registry=registry,
        )
        self.drift_events = Counter(
            "streaminfer_drift_events_total",
            "Drift detections, per feature and detector.",
            ["model", "version", "feature", "detector"],
            registry=registry,
        )
        self.drift_windows = Counter(
            "streaminfer_drift_windows_total",
            "Evidently windows evaluated, by whether any feature drifted.",
            ["model", "version", "drifted"],
            registry=registry,
        )
        self.accuracy = Gauge(
            "streaminfer_online_accuracy_ratio",
            "Accuracy of predictions joined with their delayed labels, since the monitor started.",
            ["model", "version"],
            registry=registry,
        )
        self.roc_auc = Gauge(
            "streaminfer_online_roc_auc",
            "ROC AUC of predictions joined with their delayed labels.",
            ["model", "version"],
            registry=registry,
        )
        self.log_loss = Gauge(
            "streaminfer_online_log_loss",
            "Log-loss of predictions joined with their delayed labels.",
            ["model", "version"],
            registry=registry,
        )
        self.labels = Counter(
            "streaminfer_labels_total",
            "Labels by join outcome: joined, late (its prediction had expired), missing (a "
            "prediction expired without one), duplicate.",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.join_pending = Gauge(
            "streaminfer_label_join_pending",
            "Predictions waiting for their label, and labels waiting for their prediction.",
            ["side"],
            registry=registry,
        )


class FeatureSinkMetrics:
    """Writes of the feature sink to the feature store."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rows_written = Counter(
            "streaminfer_feature_rows_written_total",
            "Rows written to the feature store, by feature view and store (online, offline).",
            ["view", "store"],
            registry=registry,
        )
        self.write_seconds = Histogram(
            "streaminfer_feature_write_seconds",
            "Duration of one batched write to the feature store, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.write_retries = Counter(
            "streaminfer_feature_write_retries_total",
            "Failed writes to the feature store that were tried again.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "streaminfer_feature_dead_letters_total",
            "Rows the sink could not write after its retries, sent to the features dead-letter topic.",
            ["view"],
            registry=registry,
        )


class FeatureAppMetrics:
    """Records the feature app (Faust) passed over because it could not decode them, by kind
    (request, prediction, dead_letter). The app's decoders keep a per-process tally (the Faust
    worker is one process), read here at each scrape."""

    def __init__(self, registry: CollectorRegistry, skipped: Callable[[], Mapping[str, int]]) -> None:
        self.registry = registry
        registry.register(_Tally("streaminfer_feature_records_skipped",
                                 "Records the feature app could not decode and passed over, by kind.", "kind", skipped))


class _Tally(Collector):
    """A counter family read from a tally kept elsewhere, at scrape time."""

    def __init__(self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]) -> None:
        self._name, self._documentation, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in sorted(self._read().items()):
            family.add_metric([value], count)
        yield family


class ExperimentMetrics:
    """Running experiments, per arm, as the experiment controller sees them at each look."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        arm_labels = ["model", "experiment", "arm", "version"]
        self.arm_requests = Gauge(
            "streaminfer_experiment_arm_requests",
            "Requests an arm ended (answers and model errors) since the controller started.",
            arm_labels, registry=registry,
        )
        self.arm_error_rate = Gauge(
            "streaminfer_experiment_arm_error_ratio",
            "Share of an arm's requests that ended as model errors (inference_error, deadline_exceeded).",
            arm_labels, registry=registry,
        )
        self.arm_latency_p99 = Gauge(
            "streaminfer_experiment_arm_latency_p99_seconds",
            "End-to-end p99 latency of an arm's answers.",
            arm_labels, registry=registry,
        )
        self.canary_share = Gauge(
            "streaminfer_experiment_canary_share_ratio",
            "Share of requests a canary's candidate receives now (0 once rolled back).",
            ["model", "experiment"], registry=registry,
        )
        self.split_p_value = Gauge(
            "streaminfer_experiment_split_p_value",
            "Sample-ratio-mismatch chi-square p-value of a split (below 0.001: the split is off).",
            ["model", "experiment"], registry=registry,
        )
        self.decisions = Counter(
            "streaminfer_experiment_decisions_total",
            "Canary decisions: advance, complete or rollback (with the gate that failed).",
            ["model", "experiment", "action", "gate"], registry=registry,
        )
        self.skipped = Counter(
            "streaminfer_experiment_records_skipped_total",
            "Records the controller could not read (malformed predictions or labels), by topic.",
            ["topic"], registry=registry,
        )


class RegistryBridgeMetrics:
    """The driver's side of the control topic (``streams.control.bridge``), in the registry actor."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "streaminfer_control_published_total",
            "Records the registry bridge published on the control topic: documents and tombstones.",
            ["kind"], registry=registry,
        )
        self.documents = Gauge(
            "streaminfer_control_documents",
            "Registry documents the control topic holds, as the bridge last published them.",
            registry=registry,
        )
        self.last_change = Gauge(
            "streaminfer_control_last_publish_timestamp_seconds",
            "When the bridge last published a change (Unix time); 0 before the first.",
            registry=registry,
        )


class MirrorMetrics:
    """A consumer's node-local mirror of the registry (``streams.control.mirror``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter(
            "streaminfer_control_mirror_applied_total",
            "Control-topic records applied to this consumer's mirror.",
            registry=registry,
        )
        self.lag = Gauge(
            "streaminfer_control_mirror_lag_records",
            "Control-topic records published and not yet applied to this consumer's mirror.",
            registry=registry,
        )
        self.refused = Gauge(
            "streaminfer_control_mirror_refused_versions",
            "Versions left out of the mirror: files missing or not matching their manifest.",
            registry=registry,
        )
