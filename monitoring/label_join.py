"""Online accuracy: predictions joined with labels that arrive later, in bounded memory.

Labels come on their own topic keyed by request id, seconds to days after the prediction. Both
sides wait in insertion-ordered tables for their partner, for ``ttl`` of event time (Kafka
timestamps, not the wall clock, so a replay joins exactly as the live stream did):

- a prediction whose label has not come within the TTL is counted ``missing`` and dropped;
- a label whose prediction has expired (its id is remembered, without the payload, until
  ``2 × ttl`` after the prediction) is counted ``late``; one that matches nothing it knows of
  waits for its prediction and, if none comes within the TTL, is ``unmatched``;
- a second label for an id already joined is a ``duplicate`` and does not count twice.

Joined pairs update river's streaming metrics per model version: accuracy, ROC AUC (binary
models) and log-loss. Expiry is driven by the other side's progress: a prediction expires once
the labels stream has moved ``ttl`` past it (or its own stream ``2 × ttl``, so a stalled labels
stream cannot grow memory without bound).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from river import metrics

from streaminfer.schemas.codec import Prediction

JOINED, LATE, MISSING, DUPLICATE, UNMATCHED = "joined", "late", "missing", "duplicate", "unmatched"


@dataclass(frozen=True, slots=True)
class PredictedRows:
    model: str
    version: str
    labels: list[int]
    probabilities: list[list[float]] | None
    timestamp_ms: int


def predicted_rows(prediction: Prediction, score_output: str, timestamp_ms: int) -> PredictedRows:
    """Class and class probabilities per row, from the ``label`` and ``score_output`` outputs."""
    outputs = {o.name: o for o in prediction.outputs}
    probabilities = None
    scores = outputs.get(score_output)
    if scores is not None and len(scores.shape) == 2:
        width = scores.shape[1]
        flat = [float(v) for v in scores.data]
        probabilities = [flat[i : i + width] for i in range(0, len(flat), width)]
    if "label" in outputs:
        labels = [int(v) for v in outputs["label"].data]
    elif probabilities is not None:
        labels = [max(range(len(p)), key=p.__getitem__) for p in probabilities]
    else:
        labels = [int(v) for v in prediction.outputs[0].data]
    return PredictedRows(prediction.model_name, prediction.model_version, labels, probabilities, timestamp_ms)


def prediction_scores(rows: PredictedRows) -> list[float]:
    """The score watched for drift: the last class's probability, else the predicted class."""
    if rows.probabilities is not None:
        return [p[-1] for p in rows.probabilities]
    return [float(v) for v in rows.labels]


@dataclass
class Quality:
    """River's streaming metrics of one model version, and the stretch of stream they cover."""

    accuracy: metrics.Accuracy = field(default_factory=metrics.Accuracy)
    roc_auc: metrics.ROCAUC = field(default_factory=lambda: metrics.ROCAUC(n_thresholds=200))
    log_loss: metrics.LogLoss = field(default_factory=metrics.LogLoss)
    cross_entropy: metrics.CrossEntropy = field(default_factory=metrics.CrossEntropy)
    joined: int = 0
    binary: bool = True
    first_ms: int | None = None
    last_ms: int = 0

    def update(self, rows: PredictedRows, truth: list[int], timestamp_ms: int) -> None:
        if self.first_ms is None:
            self.first_ms = timestamp_ms
        self.last_ms = max(self.last_ms, timestamp_ms)
        for index, (predicted, actual) in enumerate(zip(rows.labels, truth)):
            self.joined += 1
            self.accuracy.update(actual, predicted)
            if rows.probabilities is None:
                continue
            probabilities = rows.probabilities[index]
            if len(probabilities) == 2:
                self.roc_auc.update(bool(actual), {True: probabilities[1], False: probabilities[0]})
                self.log_loss.update(bool(actual), probabilities[1])
            else:
                self.binary = False
                self.cross_entropy.update(actual, dict(enumerate(probabilities)))

    def values(self) -> dict[str, float]:
        figures = {"accuracy": self.accuracy.get()}
        if self.binary:
            figures["roc_auc"] = self.roc_auc.get()
            figures["log_loss"] = self.log_loss.get()
        else:
            figures["log_loss"] = self.cross_entropy.get()
        return figures


@dataclass
class LabelJoin:
    ttl_ms: int
    _predictions: OrderedDict[str, PredictedRows] = field(default_factory=OrderedDict)
    _labels: OrderedDict[str, tuple[list[int], int]] = field(default_factory=OrderedDict)
    _expired: OrderedDict[str, tuple[str, str, int]] = field(default_factory=OrderedDict)
    _joined: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _joined_models: dict[str, tuple[str, str]] = field(default_factory=dict)
    quality: dict[tuple[str, str], Quality] = field(default_factory=dict)
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _prediction_clock: int = 0
    _label_clock: int = 0

    def add_prediction(self, request_id: str, rows: PredictedRows) -> list[tuple[str, str]]:
        """Returns the (model, version) whose quality changed."""
        self._prediction_clock = max(self._prediction_clock, rows.timestamp_ms)
        self._expire()  # before joining: what is past its TTL at this point of the stream is out
        waiting = self._labels.pop(request_id, None)
        changed = []
        if waiting is not None:
            changed.append(self._join(request_id, rows, waiting[0], rows.timestamp_ms))
        elif request_id not in self._joined:
            self._predictions[request_id] = rows
        return changed

    def add_label(self, request_id: str, truth: list[int], timestamp_ms: int) -> list[tuple[str, str]]:
        self._label_clock = max(self._label_clock, timestamp_ms)
        self._expire()
        changed = []
        rows = self._predictions.pop(request_id, None)
        if rows is not None:
            changed.append(self._join(request_id, rows, truth, timestamp_ms))
        elif request_id in self._joined:
            model, version = self._joined_model(request_id)
            self._count(model, version, DUPLICATE)
        elif request_id in self._expired:
            model, version, _ = self._expired.pop(request_id)
            self._count(model, version, LATE)
        else:
            self._labels[request_id] = (truth, timestamp_ms)
        return changed

    def pending(self) -> tuple[int, int]:
        return len(self._predictions), len(self._labels)

    def outcome_count(self, model: str, version: str, outcome: str) -> int:
        return self.counts.get((model, version, outcome), 0)

    def _join(self, request_id: str, rows: PredictedRows, truth: list[int], timestamp_ms: int) -> tuple[str, str]:
        key = (rows.model, rows.version)
        self.quality.setdefault(key, Quality()).update(rows, truth, timestamp_ms)
        self._joined[request_id] = rows.timestamp_ms
        self._joined_models[request_id] = key
        self._count(rows.model, rows.version, JOINED)
        return key

    def _joined_model(self, request_id: str) -> tuple[str, str]:
        return self._joined_models.get(request_id, ("unknown", "unknown"))

    def _count(self, model: str, version: str, outcome: str) -> None:
        key = (model, version, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def _expire(self) -> None:
        prediction_horizon = max(self._label_clock - self.ttl_ms, self._prediction_clock - 2 * self.ttl_ms)
        while self._predictions:
            request_id, rows = next(iter(self._predictions.items()))
            if rows.timestamp_ms >= prediction_horizon:
                break
            del self._predictions[request_id]
            self._count(rows.model, rows.version, MISSING)
            self._expired[request_id] = (rows.model, rows.version, rows.timestamp_ms)
        label_horizon = max(self._prediction_clock - self.ttl_ms, self._label_clock - 2 * self.ttl_ms)
        while self._labels:
            request_id, (_, timestamp_ms) = next(iter(self._labels.items()))
            if timestamp_ms >= label_horizon:
                break
            del self._labels[request_id]
            self._count("unknown", "unknown", UNMATCHED)
        memory_horizon = max(self._label_clock, self._prediction_clock) - 2 * self.ttl_ms
        tables: tuple[OrderedDict[str, tuple[str, str, int]] | OrderedDict[str, int], ...] = (self._expired, self._joined)
        for table in tables:
            while table:
                request_id = next(iter(table))
                value = table[request_id]
                timestamp_ms = value[2] if isinstance(value, tuple) else value
                if timestamp_ms >= memory_horizon:
                    break
                del table[request_id]
                self._joined_models.pop(request_id, None)
