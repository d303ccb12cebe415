"""Settings of the monitor: which detectors watch which model, windows, labels, checkpoints."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel, Field

from streaminfer.monitoring.alerting.receivers import DeliverySettings


class DetectorKind(str, Enum):
    """River's drift detectors; values are what drift events carry in ``detector``."""

    ADWIN = "adwin"
    KSWIN = "kswin"
    PAGE_HINKLEY = "page_hinkley"


class MonitorTopics(BaseModel):
    labels: str = "inference.labels"
    drift: str = "monitoring.drift"
    metrics: str = "monitoring.metrics"
    """Metric events: the monitor's quality figures, the experiment controller's, and every
    pipeline consumer's health reports; the alerting rules read them here. The one setting for
    all of them: the pipeline's health topic (``TopicSettings.health``) is derived from it."""


class MonitorSettings(BaseModel):
    enabled: bool = True
    """Start the monitor with ``streaminfer run`` (a Ray actor named ``monitor``)."""

    group_id: str = "streaminfer-monitor"
    """Consumer group whose committed offsets show how far the monitor has read (lag); the
    monitor itself resumes from the offsets stored in its checkpoint."""

    topics: MonitorTopics = MonitorTopics()

    detectors: list[DetectorKind] = [DetectorKind.ADWIN]
    """Per-sample detectors for every model without an entry in ``model_detectors``."""

    model_detectors: dict[str, list[DetectorKind]] = {}
    """Per model: which detectors watch each input feature and the prediction score."""

    detector_params: dict[DetectorKind, dict[str, float]] = {}
    """Overrides of river's parameters, e.g. ``{"adwin": {"delta": 0.0001}}``."""

    seed: int = 42
    """Seed of KSWIN's sampling, so a replayed stream fires at the same samples."""

    score_output: str = "probabilities"
    """Output whose last column is the prediction score watched for drift and used for ROC AUC
    and log-loss; the first output is used when a model has no output of that name."""

    window_seconds: float = Field(60.0, gt=0)
    """Evidently window length in event time (tumbling)."""

    window_rows: int | None = Field(None, ge=20)
    """Also close a window after this many rows (for low-volume streams and demos)."""

    window_max_rows: int = Field(5000, ge=20)
    """Rows kept per window, as a uniform sample: bounds memory and the test's cost."""

    window_min_rows: int = Field(50, ge=5)
    """A window whose time is up with fewer rows stays open and takes in the next period's."""

    window_method: str = "ks"
    """Evidently's per-feature test: ``ks``, ``mannw``, ``anderson``... (p-values) or
    ``wasserstein``, ``psi``, ``jensenshannon``... (distances)."""

    window_drift_threshold: float = Field(0.05, gt=0)
    """For p-value tests a family-wise level over all features (Bonferroni: each feature is
    held to threshold / features); for distances the distance each feature may not exceed."""

    reports_dir: Path = Path("reports/drift")
    checkpoint_dir: Path = Path(".streaminfer/monitor")
    checkpoint_interval_s: float = Field(2.0, gt=0)

    label_ttl_s: float = Field(3600.0, gt=0)
    """How long (event time) a prediction waits for its label, and a label for its prediction,
    before it is counted as missing or late and dropped from memory."""

    metric_event_every: int = Field(100, ge=1)
    """Emit accuracy, ROC AUC and log-loss events every this many joined labels."""

    fetch_max_records: int = Field(2000, ge=1)

    order_max_wait_s: float = Field(5.0, ge=0)
    """Records are processed in event-time order across partitions: how long one may wait
    for a partition that is behind before it is processed anyway."""

    order_max_records: int = Field(50_000, ge=1)
    """At most this many records wait for order; beyond it the oldest are processed."""

    order_grace_s: float = Field(1.0, ge=0)
    """A partition read to its end may still receive records produced up to this long before
    its end was seen (linger, batching, clock skew between hosts): a live stream is processed
    this far behind, in order."""

    def detectors_for(self, model: str) -> list[DetectorKind]:
        return self.model_detectors.get(model, self.detectors)


class AlertTopics(BaseModel):
    silences: str = "monitoring.silences"
    outbox: str = "monitoring.alerts.outbox"
    """Notifications to deliver, keyed by receiver: the durable outbox."""

    deadletter: str = "monitoring.alerts.deadletter"
    """Notifications a receiver refused (4xx), with its answer."""


class AlertingSettings(BaseModel):
    rules_file: Path | None = None
    """The rules file (see infra/alerts/rules.yml); `run` starts alerting when it is set."""

    group_id: str = "streaminfer-alerting"
    delivery_group_id: str = "streaminfer-alert-delivery"
    topics: AlertTopics = AlertTopics()
    checkpoint_dir: Path = Path(".streaminfer/alerting")
    checkpoint_interval_s: float = Field(2.0, gt=0)
    check_receivers: bool = True
    """Refuse to start when a receiver's host does not accept connections (a typo in the URL
    would otherwise only show as undelivered alerts)."""

    delivery: DeliverySettings = DeliverySettings()
    """How the webhook delivery worker reads the outbox and retries (``STREAMINFER_ALERTING__DELIVERY__...``)."""


class ExperimentSettings(BaseModel):
    """The experiment controller: evidence per arm, canary gates, snapshots for the report."""

    enabled: bool = True
    """Start the controller with ``streaminfer run`` (a Ray actor named ``experiments``). Without
    it, traffic policies still apply, but no canary moves on or rolls back."""

    group_id: str = "streaminfer-experiments"
    look_interval_s: float = Field(1.0, gt=0)
    """How often every running experiment is looked at: snapshot, gates, decisions."""

    alpha: float = Field(0.05, gt=0, lt=1)
    """Error rate of the always-valid tests, whatever the number of looks."""

    score_outputs: list[str] = ["probabilities", "score"]
    """Outputs compared across arms (the first present; its last column for class probabilities)."""

    snapshots_dir: Path = Path(".streaminfer/experiments")
    """One ``<experiment>.jsonl`` per experiment: the looks the report plots."""
