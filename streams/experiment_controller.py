"""The experiment controller: reads what each arm produced and acts on the evidence.

One reader per system (like the monitor) over the predictions, dead letters, shadow outputs and
labels. Records carry the ``experiment`` and ``arm`` headers the pipeline set, so evidence is
kept per running experiment (``monitoring.experiments.evidence``). After every look, once a second:

- a snapshot is appended to ``<snapshots_dir>/<experiment>.jsonl`` (the report reads it) and
  the figures go to ``monitoring.metrics`` as metric events;
- a canary that passed its gates at this step moves to the next one; one that completed the
  last step is promoted to ``production``; one that failed a gate is rolled back at once. Each
  is written to the traffic policy file (which every consumer applies within its poll interval)
  and to the audit log, and a rollback emits an ``experiment_rollback`` metric event that the
  alerting rules turn into an alert.

State is in memory: a restarted controller resumes at the offsets it committed with fresh
evidence, so no record is counted twice, and a canary re-earns its current step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.experiments.evidence import ExperimentEvidence, Snapshot, Verdict
from streaminfer.monitoring.observability.metrics import ExperimentMetrics
from streaminfer.monitoring.settings import ExperimentSettings, MonitorTopics
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import Prediction, decode_prediction
from streaminfer.schemas.deadletter import HEADER_PREFIX, MODEL_FAULTS
from streaminfer.schemas.errors import StreamInferError
from streaminfer.schemas.monitoring_events import MetricEvent, decode_label, encode_event
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.streams.single_reader import Batches, SingleReader, advance
from streaminfer.streams.topics import Topology
from streaminfer.workers.models.registry import AuditEntry, ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.traffic import TrafficPolicy, load_policy, save_policy

log = logging.getLogger(__name__)

CONTROLLER = "experiment-controller"


@dataclass
class _Running:
    policy: TrafficPolicy
    evidence: ExperimentEvidence


class ExperimentController(SingleReader):
    """Reads predictions, dead letters, shadow outputs and labels; writes metric events. Started,
    stopped and watched as every ``SingleReader``; resumes from the group's committed offsets."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, monitor_topics: MonitorTopics,
                 settings: ExperimentSettings, repository: ModelRepository, metrics: ExperimentMetrics,
                 clients: KafkaClients | None = None) -> None:
        topology = Topology(topics, monitor_topics)
        super().__init__(
            "experiments", clients or KafkaClients(kafka), settings.group_id,
            reads=topology.select([topics.predictions, topics.deadletter, topics.shadow, monitor_topics.labels]),
            writes=topology.select([monitor_topics.metrics]),
            poll_timeout_ms=100, max_records=5000,
        )
        self._topics, self._settings = topics, settings
        self._metrics = metrics
        self._labels_topic, self._metrics_topic = monitor_topics.labels, monitor_topics.metrics
        self._registry = ModelRegistry(repository)
        self._running: dict[str, _Running] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._next_look = 0.0
        self.actions: list[tuple[int, str, Verdict]] = []
        """Every canary decision taken: (time in ms, experiment, verdict)."""

    def describe(self) -> dict[str, object]:
        return {
            "experiments": {name: r.policy.experiment for name, r in self._running.items()},
            "actions": [(at_ms, experiment, verdict.action, verdict.gate) for at_ms, experiment, verdict in self.actions],
            "failed": self._failed(),
        }

    # one fetch -------------------------------------------------------------------------------

    def _prepare(self) -> dict[tuple[str, int], int]:
        """State is in memory: nothing to restore but the policies; offsets come from the group."""
        self._load_policies()
        self._next_look = time.monotonic() + self._settings.look_interval_s
        return {}

    async def _process(self, batches: Batches) -> None:
        for records in batches.values():
            for record in records:
                self._handle_or_skip(record)
        advance(self._offsets, batches)
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + self._settings.look_interval_s
            await self._look()
            await self._commit_for_lag_tools(self._offsets)

    def _handle_or_skip(self, record: ConsumerRecord) -> None:
        """A record the controller cannot read is counted and passed over: it is evidence lost,
        not a reason to stop judging every other experiment."""
        try:
            self._handle(record)
        except (StreamInferError, msgspec.MsgspecError, ValueError, TypeError, LookupError, ArithmeticError,
                RecursionError) as exc:
            # ValueError covers UnicodeDecodeError; LookupError and ArithmeticError: outputs of the
            # wrong shape, int() of an infinite score; RecursionError: a label nested past msgspec's limit
            self._metrics.skipped.labels(record.topic).inc()
            log.debug("experiments skipped %s-%d@%d: %r", record.topic, record.partition, record.offset, exc)

    def _handle(self, record: ConsumerRecord) -> None:
        if record.topic == self._labels_topic:
            label = decode_label(record.value)
            truth = label.label if isinstance(label.label, list) else [label.label]
            for each in self._running.values():
                each.evidence.labelled(label.id, truth)
            return
        headers = dict(record.headers)
        experiment = headers.get(h.EXPERIMENT) or headers.get(HEADER_PREFIX + "experiment")  # dead letters: the latter
        if experiment is None:
            return
        model = (headers.get(h.MODEL_NAME) or headers.get(HEADER_PREFIX + "model") or b"").decode()
        running = self._running.get(model)
        if running is None or running.policy.experiment != experiment.decode():
            return
        evidence = running.evidence
        if record.topic == self._topics.deadletter:
            reason = headers.get(HEADER_PREFIX + "reason", b"").decode()
            if reason in MODEL_FAULTS:
                evidence.failed(headers.get(HEADER_PREFIX + "arm", b"").decode(),
                                headers.get(HEADER_PREFIX + "version", b"").decode(), record.key)
            return
        latency_ms = max(0.0, record.timestamp - int(headers.get(h.REQUEST_TIMESTAMP_MS, b"0")))
        request_id = headers.get(h.REQUEST_ID, b"").decode()
        if record.topic == self._topics.shadow:
            if record.value is None:
                evidence.shadowed(request_id, None, [], latency_ms)
                return
            prediction = decode_prediction(record.value)
            evidence.shadowed(request_id, *self._labels_and_scores(prediction), latency_ms)
            return
        prediction = decode_prediction(record.value)
        labels, scores = self._labels_and_scores(prediction)
        evidence.answered(request_id, headers.get(h.ARM, b"").decode(), prediction.model_version, latency_ms,
                          labels, scores, record.key)

    def _labels_and_scores(self, prediction: Prediction) -> tuple[list[int], list[float]]:
        """The predicted class per row, and the score compared across arms: the last column of
        the first output named in ``score_outputs`` (the class itself when there is none)."""
        outputs = {o.name: o for o in prediction.outputs}
        labels = [int(v) for v in outputs["label"].data] if "label" in outputs else []
        for name in self._settings.score_outputs:
            scores = outputs.get(name)
            if scores is not None:
                data = [float(v) for v in scores.data]
                width = scores.shape[1] if len(scores.shape) == 2 else 1
                return labels, data[width - 1::width]
        return labels, [float(v) for v in labels]

    # looking and acting ----------------------------------------------------------------------

    def _load_policies(self) -> None:
        """Pick up experiments started, changed or stopped since the last look."""
        repository = self._registry.repository
        for name in repository.model_names():
            try:
                policy = load_policy(repository.root / name)
            except Exception as exc:  # noqa: BLE001 - a bad file is reported by the CLI that wrote it
                log.warning("model %s: traffic policy not readable: %s", name, exc)
                continue
            running = self._running.get(name)
            if policy is None:
                self._running.pop(name, None)
            elif running is None or running.policy.experiment != policy.experiment:
                self._running[name] = _Running(policy, ExperimentEvidence(name, policy, alpha=self._settings.alpha))
            elif running.policy != policy:
                running.policy = running.evidence.policy = policy

    async def _look(self) -> None:
        self._load_policies()
        now_ms = int(time.time() * 1000)
        events: list[MetricEvent] = []
        for model, running in list(self._running.items()):
            snapshot = running.evidence.look(now_ms)
            if snapshot.arms and not any(arm.requests for arm in snapshot.arms):
                continue
            self._save(snapshot)
            self._export(snapshot)
            events.extend(self._events(snapshot))
            verdict = snapshot.verdict
            if verdict is not None and verdict.action != "wait":
                events.extend(self._act(model, running, verdict, now_ms))
        for event in events:
            await self.producer.send(self._metrics_topic, encode_event(event), key=event.model.encode())

    def _act(self, model: str, running: _Running, verdict: Verdict, now_ms: int) -> list[MetricEvent]:
        policy, canary = running.policy, running.policy.canary
        assert canary is not None
        self.actions.append((now_ms, policy.experiment, verdict))
        if verdict.action == "advance":
            updated = msgspec.structs.replace(canary, step=canary.step + 1)
            action, detail = "canary-step", f"{canary.steps[canary.step]:g}% -> {canary.steps[canary.step + 1]:g}%: {verdict.detail}"
        elif verdict.action == "complete":
            updated = msgspec.structs.replace(canary, status="completed", reason=verdict.detail)
            action, detail = "canary-complete", verdict.detail
        else:
            updated = msgspec.structs.replace(canary, status="rolled-back", reason=f"{verdict.gate}: {verdict.detail}")
            action, detail = "canary-rollback", f"{verdict.gate}: {verdict.detail}"
        new_policy = msgspec.structs.replace(policy, canary=updated)
        candidate = self._registry.resolve_version(model, canary.candidate)
        control = self._registry.resolve_version(model, canary.control)  # before a promotion moves it
        if verdict.action == "complete":
            self._registry.promote(model, candidate, who=CONTROLLER, why=f"canary {policy.experiment} completed")
        save_policy(self._registry.repository.root / model, new_policy)
        self._registry.record(model, AuditEntry(
            at_ms=now_ms, who=CONTROLLER, action=action, alias="traffic",
            from_version=control, to_version=candidate,
            why=f"experiment {policy.experiment}", detail=detail,
        ))
        running.policy = running.evidence.policy = new_policy
        running.evidence.next_step()
        self._metrics.decisions.labels(model, policy.experiment, verdict.action, verdict.gate).inc()
        self._metrics.canary_share.labels(model, policy.experiment).set(new_policy.weighted_arms()[0].weight / 100)
        log.log(logging.WARNING if verdict.action == "rollback" else logging.INFO,
                "experiment %s (%s): %s", policy.experiment, model, detail)
        labels = {"experiment": policy.experiment, "gate": verdict.gate, "action": verdict.action}
        metric = "experiment_rollback" if verdict.action == "rollback" else "experiment_canary_share"
        value = 1.0 if verdict.action == "rollback" else new_policy.weighted_arms()[0].weight
        return [MetricEvent(model=model, version=candidate, metric=metric, value=value, samples=0,
                            window_start_ms=now_ms, window_end_ms=now_ms, emitted_at_ms=now_ms,
                            labels=labels | ({"detail": verdict.detail[:200]} if verdict.detail else {}))]

    def _events(self, snapshot: Snapshot) -> list[MetricEvent]:
        """Per arm: requests, error rate and p99 latency, for dashboards and alert rules."""
        events = []
        for arm in snapshot.arms:
            labels = {"experiment": snapshot.experiment, "arm": arm.arm}
            for metric, value in (("experiment_requests", arm.requests), ("experiment_error_rate", arm.error_rate),
                                  ("experiment_latency_p99_ms", arm.p99_ms)):
                if value is not None:
                    events.append(MetricEvent(model=snapshot.model, version=arm.version, metric=metric,
                                              value=float(value), samples=arm.requests, window_start_ms=snapshot.at_ms,
                                              window_end_ms=snapshot.at_ms, emitted_at_ms=snapshot.at_ms, labels=labels))
        return events

    def _export(self, snapshot: Snapshot) -> None:
        for arm in snapshot.arms:
            labels = (snapshot.model, snapshot.experiment, arm.arm, arm.version)
            self._metrics.arm_requests.labels(*labels).set(arm.requests)
            self._metrics.arm_error_rate.labels(*labels).set(arm.error_rate)
            if arm.p99_ms is not None:
                self._metrics.arm_latency_p99.labels(*labels).set(arm.p99_ms / 1000)
        if snapshot.canary_share is not None:
            self._metrics.canary_share.labels(snapshot.model, snapshot.experiment).set(snapshot.canary_share / 100)
        if snapshot.split_p_value is not None:
            self._metrics.split_p_value.labels(snapshot.model, snapshot.experiment).set(snapshot.split_p_value)

    def _save(self, snapshot: Snapshot) -> None:
        save_snapshot(self._settings.snapshots_dir, snapshot)


def save_snapshot(directory: Path, snapshot: Snapshot) -> None:
    """Append one look to ``<directory>/<experiment>.jsonl``, where the reports read it."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{snapshot.experiment}.jsonl").open("ab") as out:
        out.write(msgspec.json.encode(snapshot) + b"\n")

