"""Turning a slice of consumed records into model batches and back into outgoing records.

Pure functions over decoded requests: no Kafka client and no Ray here, so the rules (which reason
a bad record gets, how rows map back to requests) are tested without services.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from aiokafka.structs import ConsumerRecord

from streaminfer.schemas.codec import BatchOutputs, Prediction, decode_request, request_tensors
from streaminfer.schemas.errors import SchemaViolation
from streaminfer.schemas.headers import RequestHeaders, parse_request_headers
from streaminfer.streams.pipeline.outgoing import fallback_request_id
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

    @property
    def served(self) -> ServedModel:
        return self.route.served


def decode_record(record: ConsumerRecord, models: ServedModels) -> Decoded:
    """Decode and validate one record; every failure is a ``RequestError`` with its reason.
    The route is chosen by the record's key (else its request id), so assignment is sticky."""
    try:
        headers = parse_request_headers(record.headers)
    except ValueError as exc:
        raise SchemaViolation(f"header deadline-ms must be epoch milliseconds: {exc}") from exc
    request = decode_request(record.value)
    request_id = request.id or headers.request_id or fallback_request_id(record)
    route = models.route(headers.model_name, headers.model_version, record.key or request_id.encode())
    arrays, rows = request_tensors(request, route.served.entry.request_signature)
    return Decoded(record, request_id, headers, route, arrays, rows, request.parameters)


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
                outputs=columns.rows(start, stop),
            )
        )
        start = stop
    total = next(iter(outputs.values())).shape[0] if outputs else 0
    if start != total:
        raise ValueError(f"model returned {total} rows for a batch of {start}")
    return predictions
