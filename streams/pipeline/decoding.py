"""Turning a slice of consumed records into model batches and back into outgoing records.

Pure functions over decoded requests: no Kafka client and no Ray here, so the rules (which reason
a bad record gets, how rows map back to requests) are tested without services.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from aiokafka.structs import ConsumerRecord

from streaminfer.schemas.codec import BatchOutputs, Prediction, decode_request, request_tensors, requested_outputs
from streaminfer.schemas.errors import PayloadTooLarge, RequestError, RequestFacts
from streaminfer.schemas.headers import RequestHeaders, parse_request_headers
from streaminfer.streams.pipeline.outgoing import fallback_request_id
from streaminfer.workers.errors import HashKeyMissing, UnknownModel
from streaminfer.workers.models.privacy import Masking, PrivacyPolicy
from streaminfer.workers.models.repository import ModelVersion
from streaminfer.workers.routing.served import Route, ServedModel, ServedModels


@dataclass(slots=True)
class Decoded:
    """A request that passed every check that does not need the model to run."""

    record: ConsumerRecord
    request_id: str
    headers: RequestHeaders
    route: Route
    arrays: dict[str, np.ndarray]
    rows: int
    parameters: dict[str, object] | None = None
    outputs: frozenset[str] | None = None
    """The outputs the request asked for; None: every output."""

    @property
    def served(self) -> ServedModel:
        return self.route.served


def decode_record(record: ConsumerRecord, models: ServedModels, max_bytes: int | None = None) -> Decoded:
    """Decode and validate one record; every failure is a ``RequestError`` with its reason, and
    carries the request id and model (``RequestError.facts``) once they are known. A value over
    ``max_bytes`` is refused before any decoding. The route is chosen by the record's key (else
    its request id), so assignment is sticky."""
    try:
        return _decode(record, models, max_bytes)
    except RequestError as exc:
        facts = exc.facts or RequestFacts()
        exc.about(replace(facts, masking=_masking(models, record, facts)))
        raise


def _masking(models: ServedModels, record: ConsumerRecord, facts: RequestFacts) -> object:
    """The privacy masking of the model the request names, for its dead letter (headers that
    cannot be read name the default model); None for a model not served: no policy applies."""
    try:
        headers = parse_request_headers(record.headers)
        name, version = facts.model or headers.model_name, facts.version or headers.model_version
    except RequestError:
        name, version = facts.model, facts.version
    try:
        route = models.route(name, version, record.key or b"")
    except UnknownModel:
        return None
    try:
        return route.served.entry.masking
    except HashKeyMissing:  # a version served since start-up hashes, and no key is set: keep nothing
        return Masking(PrivacyPolicy(), (), None, withhold=True)


def _decode(record: ConsumerRecord, models: ServedModels, max_bytes: int | None) -> Decoded:
    value = record.value
    if max_bytes is not None and value is not None and len(value) > max_bytes:
        raise PayloadTooLarge(len(value), max_bytes)
    headers = parse_request_headers(record.headers)
    request = decode_request(value)
    request_id = request.id or headers.request_id or fallback_request_id(record)
    try:
        route = models.route(headers.model_name, headers.model_version, record.key or request_id.encode())
    except UnknownModel as exc:
        exc.about(RequestFacts(exc.name, exc.version, request_id))
        raise
    entry = route.served.entry
    try:
        arrays, rows = request_tensors(request, entry.request_signature)
        outputs = requested_outputs(request, entry.request_signature) if request.outputs else None
    except RequestError as exc:
        exc.about(RequestFacts(entry.name, entry.version, request_id))
        raise
    return Decoded(record, request_id, headers, route, arrays, rows, request.parameters, outputs)


def stack_inputs(items: list[Decoded]) -> dict[str, np.ndarray]:
    """One array per model input: the items' rows, in order."""
    names = items[0].arrays.keys()
    if len(items) == 1:
        return dict(items[0].arrays)
    return {name: np.concatenate([item.arrays[name] for item in items]) for name in names}


def split_predictions(items: list[Decoded], outputs: dict[str, np.ndarray], entry: ModelVersion) -> list[Prediction]:
    """Cut a batch that ``entry`` computed back into one prediction per request."""
    predictions = []
    start = 0
    columns = BatchOutputs(outputs)
    for item in items:
        stop = start + item.rows
        predictions.append(
            Prediction(
                id=item.request_id,
                model_name=entry.name,
                model_version=entry.version,
                outputs=columns.rows(start, stop, item.outputs),
            )
        )
        start = stop
    total = next(iter(outputs.values())).shape[0] if outputs else 0
    if start != total:
        raise ValueError(f"model returned {total} rows for a batch of {start}")
    return predictions
