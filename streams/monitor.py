"""The monitor's Kafka side: reads requests, predictions and labels, emits drift and quality events.

The detection itself lives in ``monitoring`` (detectors, windows, the label join); this module
is the consumer around it. One process reads all partitions of the three topics, because its
per-model state cannot be split by partition, and keeps, per model version:

- river detectors on every input feature and on the prediction score (``monitoring.drift.detectors``),
- an evidently window over the input features (``monitoring.drift.windows``),
- the join of predictions with their delayed labels and the streaming quality metrics it feeds
  (``monitoring.label_join``).

Records are processed in event-time order across partitions and fetches (``streams.event_time``),
so a window holds the rows produced together even when the monitor reads a backlog one
partition's worth at a time.

Detections go to ``monitoring.drift`` and quality figures to ``monitoring.metrics`` (schemas in
``schemas/``), and everything is exported as Prometheus metrics. State is checkpointed with the
offsets it reflects (``monitoring.checkpoint``), so a restarted monitor carries on where its
state stopped instead of starting blind. The partitions are assigned, not balanced by a group
(one reader per system), but the offsets are also committed under the monitor's group id so
its lag shows up in the usual tools.

Input features a model's privacy policy drops or hashes are not watched at all (no detector, no
window, nothing of them in a report or the checkpoint); drift is computed on the others.

Records the monitor cannot read (they are dead letters of the pipeline anyway, or labels for
unknown models) are counted under ``stream="skipped"``, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.checkpoint import load_checkpoint, save_checkpoint
from streaminfer.monitoring.drift.model_watch import ModelWatch, MonitorState, new_watch
from streaminfer.monitoring.drift.windows import WindowResult
from streaminfer.monitoring.label_join import LabelJoin, predicted_rows, prediction_scores
from streaminfer.monitoring.observability.metrics import MonitorMetrics
from streaminfer.monitoring.settings import MonitorSettings
from streaminfer.schemas.codec import decode_prediction, decode_request, request_tensors
from streaminfer.schemas.errors import StreamInferError
from streaminfer.schemas.headers import parse_request_headers
from streaminfer.schemas.monitoring_events import DriftEvent, MetricEvent, decode_label, encode_event
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.event_time import EventTimeMerge
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.streams.single_reader import Batches, SingleReader, advance_past
from streaminfer.streams.topics import Topology
from streaminfer.workers.models.repository import ModelRepository

log = logging.getLogger(__name__)

REQUESTS, PREDICTIONS, LABELS, SKIPPED = "requests", "predictions", "labels", "skipped"
#: What reading a malformed record can raise, from our decoders (``StreamInferError``), msgspec,
#: or the Python and numpy work on decoded values of the wrong kind (a prediction whose ``data``
#: holds strings, a label past an int's range), and msgspec's RecursionError on JSON nested past
#: its limit where no decoder of ours maps it (labels): skipped and counted, never a crash.
_UNREADABLE = (StreamInferError, msgspec.MsgspecError, ValueError, TypeError, LookupError, ArithmeticError,
               RecursionError)
RESOLVE_EVERY_S = 10.0


class Monitor(SingleReader):
    """Reads requests, predictions and labels; writes drift and metric events. Started, stopped
    and watched as every ``SingleReader``; resumes from its checkpoint, or without one from the
    group's committed offsets."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: MonitorSettings,
        repository: ModelRepository,
        default_model: str,
        metrics: MonitorMetrics,
        clients: KafkaClients | None = None,
    ) -> None:
        topology = Topology(topics, settings.topics)
        super().__init__(
            "monitor", clients or KafkaClients(kafka), settings.group_id,
            reads=topology.select([topics.requests, topics.predictions, settings.topics.labels]),
            writes=topology.select([settings.topics.drift, settings.topics.metrics]),
            poll_timeout_ms=200, max_records=settings.fetch_max_records,
        )
        self._topics = topics
        self._settings = settings
        self._repository = repository
        self._default_model = default_model
        self._metrics = metrics
        self._state = MonitorState(join=LabelJoin(int(settings.label_ttl_s * 1000)))
        self._last_checkpoint = time.monotonic()
        self._unknown: set[tuple[str, str | None]] = set()
        self._resolved: dict[tuple[str, str | None], tuple[tuple[str, str] | None, float]] = {}
        self._label_counts: dict[tuple[str, str, str], int] = {}
        self._order = EventTimeMerge(settings.order_max_wait_s, settings.order_max_records, settings.order_grace_s)
        self.restored = False

    @property
    def state(self) -> MonitorState:
        return self._state

    # restoring -------------------------------------------------------------------------------

    def _prepare(self) -> dict[tuple[str, int], int]:
        self._restore()
        return self._state.offsets

    def _source(self) -> str:
        """What a checkpoint's offsets refer to; one taken from other topics or another cluster's
        bootstrap must not be applied here."""
        topics = (self._topics.requests, self._topics.predictions, self._settings.topics.labels)
        return f"{self.kafka.bootstrap}|{'|'.join(topics)}"

    def _restore(self) -> None:
        self._state.source = self._source()
        saved = load_checkpoint(self._settings.checkpoint_dir)
        if saved is None:
            return
        if saved.source != self._state.source:
            log.warning(
                "monitor checkpoint in %s is for %s, not %s: starting from fresh state",
                self._settings.checkpoint_dir, saved.source, self._state.source,
            )
            return
        for watch in saved.watches.values():
            watch.restore(self._repository)
            if watch.window is not None:
                watch.window.reports_dir = self._settings.reports_dir
        self._state = saved
        self.restored = True
        log.info("monitor resumes from its checkpoint at %d partitions' offsets", len(saved.offsets))

    # one fetch -------------------------------------------------------------------------------

    async def _process(self, batches: Batches) -> None:
        drift: list[DriftEvent] = []
        closed: list = []
        self._order.add(batches)
        released = self._order.release(*await self._read_positions())
        for record in released:
            self._handle(record, drift, closed)
        advance_past(self._state.offsets, released)
        for watch, window in closed:
            result = await asyncio.to_thread(watch.window.evaluate, window)
            drift.extend(result.events)
            self._record_window(result)
        await self._emit(drift, self._metric_events())
        self._export()
        if time.monotonic() - self._last_checkpoint >= self._settings.checkpoint_interval_s:
            await self._checkpoint()

    async def _finish(self) -> None:
        await self._checkpoint()

    def _handle(self, record: ConsumerRecord, drift: list[DriftEvent], closed: list) -> None:
        try:
            if record.topic == self._topics.requests:
                self._on_request(record, drift, closed)
            elif record.topic == self._topics.predictions:
                self._on_prediction(record, drift)
            else:
                self._on_label(record)
        except _UNREADABLE as exc:
            self._skip(record, exc)

    def _skip(self, record: ConsumerRecord, why: object) -> None:
        self._metrics.samples.labels(model="", stream=SKIPPED).inc()
        self._count(SKIPPED)
        # our errors never quote a request's values; Python's and numpy's may, so only their type
        shown = why if isinstance(why, str | StreamInferError) else type(why).__name__
        log.debug("monitor skipped %s-%d@%d: %s", record.topic, record.partition, record.offset, shown)

    def _count(self, stream: str) -> None:
        self._state.records[stream] = self._state.records.get(stream, 0) + 1

    def _on_request(self, record: ConsumerRecord, drift: list[DriftEvent], closed: list) -> None:
        headers = parse_request_headers(record.headers)
        watch = self._watch(headers.model_name or self._default_model, headers.model_version)
        if watch is None or watch.input_name is None:
            self._skip(record, "not a watched model")
            return
        tensors, _rows = request_tensors(decode_request(record.value), watch.signature)
        rows = watch.watched(tensors[watch.input_name])  # personal features are never watched
        drift.extend(watch.sample.update_features(rows, record.timestamp))
        if watch.window is not None:
            closed.extend((watch, window) for window in watch.window.add(rows, record.timestamp))
        self._metrics.samples.labels(model=watch.entry_name, stream=REQUESTS).inc()
        self._count(REQUESTS)

    def _on_prediction(self, record: ConsumerRecord, drift: list[DriftEvent]) -> None:
        prediction = decode_prediction(record.value)
        rows = predicted_rows(prediction, self._settings.score_output, record.timestamp)
        watch = self._watch(prediction.model_name, prediction.model_version)
        if watch is not None:
            drift.extend(watch.sample.update_scores(prediction_scores(rows), record.timestamp))
        assert self._state.join is not None
        self._state.join.add_prediction(prediction.id, rows)
        self._metrics.samples.labels(model=prediction.model_name, stream=PREDICTIONS).inc()
        self._count(PREDICTIONS)

    def _on_label(self, record: ConsumerRecord) -> None:
        label = decode_label(record.value)
        truth = label.label if isinstance(label.label, list) else [label.label]
        assert self._state.join is not None
        self._state.join.add_label(label.id, truth, record.timestamp)
        self._metrics.samples.labels(model="", stream=LABELS).inc()
        self._count(LABELS)

    def _watch(self, model: str, version: str | None) -> ModelWatch | None:
        """The watch of a model version, created on first sight; None for models not in the
        repository (logged once). Which version "newest" means is looked up again every
        ``RESOLVE_EVERY_S``, so a new version is picked up without reading the disk per record."""
        now = time.monotonic()
        cached = self._resolved.get((model, version))
        if cached is None or now - cached[1] > RESOLVE_EVERY_S:
            try:
                entry = self._repository.resolve(model, version)
                found = (entry.name, entry.version)
                if found not in self._state.watches:
                    self._state.watches[found] = new_watch(entry, self._settings)
                key: tuple[str, str] | None = found
            except StreamInferError:
                key = None
                if (model, version) not in self._unknown:
                    self._unknown.add((model, version))
                    log.warning("monitor: %s %s is not in the model repository; not watched", model, version or "")
            cached = self._resolved[(model, version)] = (key, now)
        key_seen = cached[0]
        return self._state.watches[key_seen] if key_seen is not None else None

    # outputs ---------------------------------------------------------------------------------

    def _metric_events(self) -> list[MetricEvent]:
        join = self._state.join
        assert join is not None
        events = []
        now_ms = int(time.time() * 1000)
        for (model, version), quality in join.quality.items():
            last = self._state.joined_at_last_event.get((model, version), 0)
            if quality.joined - last < self._settings.metric_event_every:
                continue
            self._state.joined_at_last_event[(model, version)] = quality.joined
            figures = dict(quality.values())
            figures["labels_missing"] = join.outcome_count(model, version, "missing")
            figures["labels_late"] = join.outcome_count(model, version, "late")
            for metric, value in figures.items():
                events.append(
                    MetricEvent(model=model, version=version, metric=metric, value=float(value),
                                samples=quality.joined, window_start_ms=quality.first_ms or 0,
                                window_end_ms=quality.last_ms, emitted_at_ms=now_ms)
                )
        return events

    async def _emit(self, drift: list[DriftEvent], quality: list[MetricEvent]) -> None:
        producer = self.producer
        for event in drift:
            await producer.send(self._settings.topics.drift, encode_event(event), key=event.model.encode())
            self._metrics.drift_events.labels(event.model, event.version, event.feature, event.detector).inc()
            self._state.drift_events += 1
        for metric in quality:
            await producer.send(self._settings.topics.metrics, encode_event(metric), key=metric.model.encode())

    def _record_window(self, result: WindowResult) -> None:
        for feature, score in result.scores.items():
            self._metrics.drift_score.labels(result.model, result.version, feature, "evidently").set(score)
        drifted = "true" if result.drifted else "false"
        self._metrics.drift_windows.labels(result.model, result.version, drifted).inc()
        self._count("windows")
        if result.drifted:
            self._count("windows_drifted")

    def _export(self) -> None:
        metrics = self._metrics
        for (model, version), watch in self._state.watches.items():
            for feature, kind, value in watch.sample.statistics():
                metrics.drift_score.labels(model, version, feature, kind.value).set(value)
        join = self._state.join
        assert join is not None
        for (model, version), quality in join.quality.items():
            figures = quality.values()
            metrics.accuracy.labels(model, version).set(figures["accuracy"])
            metrics.log_loss.labels(model, version).set(figures["log_loss"])
            if "roc_auc" in figures:
                metrics.roc_auc.labels(model, version).set(figures["roc_auc"])
        for key, count in join.counts.items():
            seen = self._label_counts.get(key, 0)
            if count > seen:
                metrics.labels.labels(*key).inc(count - seen)
                self._label_counts[key] = count
        waiting_predictions, waiting_labels = join.pending()
        metrics.join_pending.labels("predictions").set(waiting_predictions)
        metrics.join_pending.labels("labels").set(waiting_labels)

    async def _checkpoint(self) -> None:
        """Events first (so none is behind a checkpoint without being acknowledged), then state
        with its offsets, then the group's offsets for lag tools."""
        await self.producer.flush()
        save_checkpoint(self._settings.checkpoint_dir, self._state)
        self._last_checkpoint = time.monotonic()
        await self._commit_for_lag_tools(self._state.offsets)

    def describe(self) -> dict[str, object]:
        join = self._state.join
        assert join is not None
        return {
            "models": [f"{m}/{v}" for m, v in self._state.watches],
            "drift_events": self._state.drift_events,
            "records": dict(self._state.records),
            "restored": self.restored,
            "held_for_order": len(self._order),
            "quality": {f"{m}/{v}": q.values() for (m, v), q in join.quality.items()},
            "labels": {"/".join(k): c for k, c in join.counts.items()},
            "failed": self._failed(),
        }
