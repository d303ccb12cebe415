"""Settings of the Kafka clients, the topics, and the consume → infer → produce loop."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from streaminfer.monitoring.cost.settings import CostSettings
from streaminfer.monitoring.settings import MonitorTopics
from streaminfer.streams.security.settings import KafkaSecuritySettings


class TopicSettings(BaseModel):
    """The inference path's topics, and the layout of every topic the system creates
    (``streams.topics`` says which topic gets which)."""

    requests: str = "inference.requests"
    predictions: str = "inference.predictions"
    deadletter: str = "inference.deadletter"
    shadow: str = "inference.shadow"
    """Outputs of shadow versions (traffic experiments): for comparison, never for clients."""

    control: str = "inference.control"
    """The registry's documents (aliases, traffic policies, tags, audit log, version manifests),
    compacted, one record per document: how consumers on other nodes follow the registry
    (``streams.control``)."""

    health_reports: bool = True
    """Whether each consumer reports its error rate, p99 latency and lag. They go to the
    monitoring metrics topic, ``monitor.topics.metrics`` (``STREAMINFER_MONITOR__TOPICS__METRICS``),
    where the alerting rules read them: the health topic is derived from that setting and has
    none of its own, so the two cannot diverge. ``topics.health=None`` (the former setting) still
    turns the reports off; a topic name there is refused with a pointer to the metrics setting."""

    partitions: int = Field(4, ge=1)
    """Partitions of the topics streaminfer creates (but silences, refused notifications and the
    outbox, see ``streams.topics``); consumption scales with the requests topic's."""

    replication_factor: int = Field(1, ge=1)
    """Replicas of every topic streaminfer creates."""

    _metrics_topic: str = PrivateAttr(default_factory=lambda: MonitorTopics().metrics)

    @model_validator(mode="before")
    @classmethod
    def _health_follows_the_metrics_topic(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "health" not in data:
            return data
        data = dict(data)
        health = data.pop("health")
        if health not in (None, "", "none", "None", "null"):
            raise ValueError(
                f"topics.health={health!r}: health reports go to the monitoring metrics topic; set "
                "monitor.topics.metrics (STREAMINFER_MONITOR__TOPICS__METRICS) to move them, or "
                "topics.health_reports=false to turn them off"
            )
        data["health_reports"] = False
        return data

    @property
    def health(self) -> str | None:
        """Where each consumer reports its health: the monitoring metrics topic these settings
        were bound to (``reporting_to``; the default metrics topic until then), or None."""
        return self._metrics_topic if self.health_reports else None

    def reporting_to(self, monitor: MonitorTopics) -> TopicSettings:
        """These settings with health reports going to ``monitor.metrics``."""
        bound = self.model_copy()
        bound._metrics_topic = monitor.metrics
        return bound


class KafkaSettings(KafkaSecuritySettings):
    """Every Kafka client's settings; TLS and SASL are inherited from ``KafkaSecuritySettings``."""

    bootstrap: str = "127.0.0.1:9092"
    group_id: str = "streaminfer"
    client_id: str = "streaminfer"

    session_timeout_ms: int = Field(10_000, ge=1000)
    """A group join waits up to half of it on some brokers (the embedded one: 5 s at 10,000, 3 s at
    6,000, before any consumer answers). Shorter starts and restarts quicker, but a member whose
    heartbeats stall that long (a starved machine) is dropped and the group rebalances: 10 s
    keeps that rare; lower it where start-up matters more."""

    heartbeat_interval_ms: int = Field(1_000, ge=100)
    rebalance_timeout_ms: int = Field(10_000, ge=1000)

    fetch_max_wait_ms: int = Field(10, ge=0)
    """Small on purpose: the embedded broker does not wake a waiting fetch when data arrives."""

    linger_ms: int = Field(0, ge=0)
    """Producer batching delay. The pipeline already hands the producer one record batch per
    partition per fetched batch, so waiting longer only adds latency."""

    request_timeout_ms: int = Field(30_000, ge=1000)
    compression: str | None = Field(None, pattern="^(gzip|snappy|lz4|zstd)$")

    isolation_level: Literal["read_uncommitted", "read_committed"] = "read_uncommitted"
    """What every consumer built from these settings reads: ``read_committed`` skips records of
    open and aborted transactions. Set to ``read_committed`` for you when
    ``pipeline.guarantee`` is ``exactly_once`` (``streaminfer.settings.AppSettings``)."""


class PipelineSettings(BaseModel):
    default_model: str = "breast-cancer"
    """Model for requests without a ``model-name`` header."""

    consumers: int = Field(2, ge=0)
    """Consuming Ray actors, each with its own Kafka consumer in the group and its own ONNX Runtime
    sessions (no process hop per batch). Size it to the cores you give the pipeline, at most the
    requests topic's partitions. 0 consumes in the driver and runs inference on the Ray worker
    pool instead (``pool.*``): the choice for GPUs on other nodes or many models."""

    max_batch_size: int = Field(256, ge=1)
    """Most rows in one inference batch."""

    max_wait_ms: float = Field(0.5, ge=0)
    """Longest a request waits for others to fill its batch when the model is idle. While the
    model is busy, requests queue and the next batch leaves as full as the queue allows anyway."""

    deadline_margin_ms: float = Field(2.0, ge=0)
    """A batch leaves this long before the earliest deadline in it, so it can still make it."""

    fetch_max_records: int = Field(1024, ge=1)
    """Most records taken from Kafka in one go (across partitions)."""

    max_inflight_batches: int = Field(4, ge=1)
    """Fetched batches between fetch and acknowledgement at once, while a backlog waits
    (``overlap_from_backlog``). When all are in flight the consumer pauses its partitions, so the
    backlog waits in Kafka, not in memory."""

    overlap_from_backlog: int = Field(256, ge=0)
    """Requests waiting in the consumer's partitions (fetched or not) from which fetched batches
    overlap, up to ``max_inflight_batches``. Below it the consumer keeps up, and the next fetch
    waits for the batch in flight to be acknowledged: what arrived meanwhile comes in one fetch
    instead of several small ones, each with its own produce request and hand-off to the model.
    Overlapping a keeping-up consumer's batches spent the CPU per fetch that the tail latency
    needs (at 5,000 requests/s, two consumer actors on 2 cores: p99 32 ms with overlap, 15 ms
    without); overlapping a backlog doubles throughput. 0: always overlap."""

    poll_timeout_ms: int = Field(50, ge=1)

    gc_gen0_threshold: int | None = Field(None, ge=0)
    """Net new container objects between garbage collections in a pipeline process; 0 keeps
    Python's defaults (700, which made the collector half the CPU per message). None (the
    default): ``gc_threshold``, derived from what the consumer may hold in flight."""

    @property
    def gc_threshold(self) -> int:
        """The first-generation threshold a pipeline process runs with.

        Python counts container objects allocated minus freed, and collects the young generation
        when the count passes the threshold. A request in flight holds about a dozen (its record
        and headers, the decoded request, its answer record and headers), so at defaults
        (``max_inflight_batches`` 4 × ``fetch_max_records`` 1,024) about 50,000 live at once. A
        threshold at that size made the collector walk the whole in-flight set every 10,000
        answers or so, for 5-12 ms each time, and find nothing to free: 0.4-1.2 µs per answer and
        a pause in the tail. Four times the in-flight set (48 objects per request in flight, at
        least 50,000) leaves collections to what only a collector frees: reference cycles."""
        if self.gc_gen0_threshold is not None:
            return self.gc_gen0_threshold
        return max(50_000, 48 * self.max_inflight_batches * self.fetch_max_records)

    health_interval_s: float = Field(10.0, gt=0)
    """How often each consumer reports its health (on the monitoring metrics topic, see
    ``TopicSettings.health_reports``)."""

    commit_interval_ms: int = Field(200, ge=0)
    """Offsets are committed at most this often (and always on rebalance and shutdown)."""

    max_request_bytes: int = Field(1_048_576, ge=1)
    """A request value larger than this is dead-lettered as ``payload_too_large`` before it is
    decoded (1 MiB by default, Kafka's default record size limit: far above any OIP request of a
    tabular model, so only garbage or a misdirected producer reaches it)."""

    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """``at_least_once``: nothing accepted is lost; after a crash or a rebalance some requests may
    be answered twice. ``exactly_once`` (Apache Kafka only; refused on the embedded broker):
    predictions, dead letters, shadow outputs and the consumed offsets commit in one Kafka
    transaction, so a ``read_committed`` reader sees every request answered exactly once
    (``streams.pipeline.transactional``)."""

    transaction_interval_ms: int = Field(100, ge=1)
    """With ``exactly_once``: how often the outputs gathered since the last transaction are
    committed in the next one. Longer: fewer, larger transactions (throughput); shorter: answers
    visible to ``read_committed`` readers sooner (latency)."""

    routing_poll_s: float = Field(0.5, gt=0)
    """How often each consumer checks the registry's aliases and the traffic policies for changes:
    a promotion, a rollback or a canary step reaches every consumer within about this long."""

    stop_step_timeout_s: float = Field(10.0, gt=0)
    """On shutdown, the longest each step that needs the broker (the last fetch, the final commit,
    leaving the group) may take. A group stuck in a rebalance (a member that left and is still
    awaited) would otherwise hold the shutdown for ever; what could not be committed in time is
    redelivered to the next owner, so nothing is lost."""

    cost: CostSettings = CostSettings()
    """Prices and daily budgets that turn each consumer's measured CPU- and GPU-seconds into
    money (``monitoring.cost``); here so every consumer has them."""
