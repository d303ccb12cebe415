"""What flows between the stages of the feature app, and what the sink writes to Feast.

Every stage re-keys its output by what the next stage groups on, so a stage's table and its
input are always co-partitioned, whatever keys the applications used for their requests."""

from __future__ import annotations

from collections import Counter

import msgspec

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import Prediction, decode_prediction, decode_request
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.schemas.errors import StreamInferError
from streaminfer.workers.models.maskings import ModelMaskings


class Part(msgspec.Struct, omit_defaults=True, gc=False):
    """One side of a request/prediction pair, keyed by request id on ``features.joinable``."""

    kind: str  # "request" | "prediction" | "dead_letter" | "pair" (both halves: see streams.features.join)
    request_id: str
    ts_ms: int
    entity: str | None = None
    model: str | None = None
    inputs: str | None = None  # the request's inputs exactly as received (OIP JSON)
    version: str | None = None
    score: float | None = None


class Scored(msgspec.Struct, gc=False):
    """A request joined with its prediction, keyed by entity on ``features.scored``."""

    request_id: str
    entity: str
    ts_ms: int
    score: float


class PredictionLog(msgspec.Struct, gc=False):
    """The exact inputs a prediction was made on, with what it said: the training log."""

    request_id: str
    entity: str
    ts_ms: int
    model: str
    version: str
    inputs: str
    score: float


class FeatureRow(msgspec.Struct, gc=False):
    """One entity's features as of ``ts_ms``, keyed by entity. ``created_us`` orders rows for the
    same time (a later one corrects an earlier one); ``current`` marks the row as of the entity's
    latest request, the only kind the online store takes."""

    entity: str
    ts_ms: int
    created_us: int
    current: bool
    values: dict[str, float]


_encoder = msgspec.json.Encoder()
encode = _encoder.encode
decode_part = msgspec.json.Decoder(Part).decode
decode_scored = msgspec.json.Decoder(Scored).decode
decode_log = msgspec.json.Decoder(PredictionLog).decode
decode_row = msgspec.json.Decoder(FeatureRow).decode


#: Records the feature app's extract stage passed over, by kind (request, prediction,
#: dead_letter): the pipeline gives each a reason of its own; here they only have nothing to join.
#: A per-process tally (the Faust worker is one process) for the worker to export.
SKIPPED: Counter[str] = Counter()
SKIP_KINDS = ("request", "prediction", "dead_letter")

#: What a malformed record can raise here: our decoders' errors, msgspec's, and Python's on
#: decoded values of the wrong kind (a score that is a string, a header that is not UTF-8).
_UNREADABLE = (StreamInferError, msgspec.MsgspecError, ValueError, TypeError, LookupError, ArithmeticError,
               RecursionError)


def request_part(value: bytes | None, headers: dict[str, bytes], ts_ms: int, entity_parameter: str,
                 maskings: ModelMaskings | None = None) -> Part | None:
    """None for a request the pipeline will dead-letter anyway (it cannot be decoded); never raises.
    With ``maskings``, the inputs and entity are masked by the model's privacy policy."""
    try:
        request = decode_request(value)
        request_id = request.id or _text(headers.get(h.REQUEST_ID))
        if not request_id:
            SKIPPED["request"] += 1
            return None
        entity = (request.parameters or {}).get(entity_parameter)
        tensors = [{"name": t.name, "shape": t.shape, "data": t.data} for t in request.inputs]
        masking = maskings.of(_text(headers.get(h.MODEL_NAME)), _text(headers.get(h.MODEL_VERSION))) if maskings else None
        if masking is not None and masking.masks_anything:
            tensors = masking.mask_inputs(tensors)
            entity = None if entity is None else masking.mask_parameter(entity_parameter, str(entity))
        inputs = _encoder.encode(tensors).decode()
        return Part("request", request_id, ts_ms, entity=None if entity is None else str(entity),
                    model=_text(headers.get(h.MODEL_NAME)), inputs=inputs)
    except _UNREADABLE:
        SKIPPED["request"] += 1
        return None


def prediction_part(value: bytes | None, ts_ms: int) -> Part | None:
    """None for a value that is not a prediction; never raises."""
    try:
        prediction = decode_prediction(value or b"")
        return Part("prediction", prediction.id, ts_ms, model=prediction.model_name,
                    version=prediction.model_version, score=score_of(prediction))
    except _UNREADABLE:
        SKIPPED["prediction"] += 1
        return None


def dead_letter_part(headers: list[tuple[str, bytes]], ts_ms: int) -> Part | None:
    """A request that ended as a dead letter never gets a prediction: its waiting half is dropped."""
    try:
        request_id = read_error_headers(headers).get("request_id")
    except _UNREADABLE:  # error headers written by someone else, badly
        SKIPPED["dead_letter"] += 1
        return None
    return Part("dead_letter", str(request_id), ts_ms) if request_id else None


def score_of(prediction: Prediction) -> float:
    """The positive-class probability when the model gives class probabilities (mean over the
    request's rows), else the first output's first value."""
    outputs = {o.name: o for o in prediction.outputs}
    probabilities = outputs.get("probabilities")
    if probabilities is not None and len(probabilities.shape) == 2 and probabilities.shape[1] >= 2:
        width = probabilities.shape[1]
        rows = probabilities.data[width - 1 :: width]
        return float(sum(rows) / len(rows)) if rows else 0.0
    first = prediction.outputs[0].data if prediction.outputs else []
    return float(first[0]) if first else 0.0


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None
