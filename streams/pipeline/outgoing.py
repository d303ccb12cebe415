"""Outgoing records: a prediction or a dead letter, each remembering the request it answers."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import Prediction, encode
from streaminfer.schemas.deadletter import Reason, error_headers
from streaminfer.workers.models.privacy import Masking

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    source: TopicPartition
    source_offset: int
    #: Set on dead letters only, for metrics and tests.
    reason: Reason | None = None
    model: str | None = None
    version: str | None = None
    request_timestamp_ms: int = 0
    #: A shadow output: sent with its batch, but it does not end the request (its answer does).
    mirror: bool = False


@functools.lru_cache(maxsize=4096)
def _partition(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


def source_of(record: ConsumerRecord) -> TopicPartition:
    """Shared ``TopicPartition`` objects: one per partition, not one per record."""
    return _partition(record.topic, record.partition)


def fallback_request_id(record: ConsumerRecord) -> str:
    """Deterministic, so a redelivered request keeps the id its first attempt had."""
    return f"{record.topic}-{record.partition}-{record.offset}"


def experiment_headers(experiment: str, arm: str) -> Headers:
    """Which experiment and arm served a request (none outside experiments)."""
    return [(h.EXPERIMENT, experiment.encode()), (h.ARM, arm.encode())] if experiment else []


@functools.lru_cache(maxsize=256)
def _model_headers(model: str, version: str) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """The model headers of an answer: encoded once per version, not once per record."""
    return (h.MODEL_NAME, model.encode()), (h.MODEL_VERSION, version.encode())


def prediction_record(
    topic: str,
    record: ConsumerRecord,
    prediction: Prediction,
    trace: tuple[tuple[str, bytes], ...],
    experiment: Headers | None = None,
) -> Outgoing:
    headers: Headers = [
        (h.REQUEST_ID, prediction.id.encode()),
        *_model_headers(prediction.model_name, prediction.model_version),
        (h.REQUEST_TIMESTAMP_MS, str(record.timestamp).encode()),
        *(experiment or ()),
        *trace,
    ]
    # positional: keywords cost a dataclass __init__ twice as much, once per answer
    return Outgoing(topic, record.key, encode(prediction), headers, source_of(record), record.offset, None,
                    prediction.model_name, prediction.model_version, record.timestamp)


def dead_letter_record(
    topic: str,
    record: ConsumerRecord,
    reason: Reason,
    message: str,
    *,
    retriable: bool = False,
    model: str | None = None,
    version: str | None = None,
    request_id: str | None = None,
    experiment: str = "",
    arm: str = "",
    masking: Masking | None = None,
) -> Outgoing:
    """The original value, key and headers, plus our error headers; never re-encoded.
    ``retriable``: whether replaying the record can succeed once the cause has passed.
    Under a ``masking`` that masks anything, the value is the request masked by it instead (none
    when the request cannot be read), headed ``__streaminfer.privacy.masked: true``."""
    value = record.value
    privacy: Headers = []
    if masking is not None and masking.masks_anything:
        too_large = reason is Reason.PAYLOAD_TOO_LARGE  # refused unread: it is not read here either
        value, privacy = None if too_large else masking.mask_request(value), [(h.PRIVACY_MASKED, b"true")]
    headers = list(record.headers) + privacy + error_headers(
        reason=reason,
        message=message,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        retriable=retriable,
        model=model,
        version=version,
        request_id=request_id,
        experiment=experiment,
        arm=arm,
    )
    return Outgoing(
        topic=topic,
        key=record.key,
        value=value,
        headers=headers,
        source=source_of(record),
        source_offset=record.offset,
        reason=reason,
        model=model,
        version=version,
    )


def shadow_record(
    topic: str,
    record: ConsumerRecord,
    request_id: str,
    model: str,
    version: str,
    outcome: Prediction | str,
    experiment: Headers,
) -> Outgoing:
    """A shadow version's output (or, as a string, the reason it failed): for comparison only."""
    headers: Headers = [
        (h.REQUEST_ID, request_id.encode()),
        (h.MODEL_NAME, model.encode()),
        (h.MODEL_VERSION, version.encode()),
        (h.REQUEST_TIMESTAMP_MS, str(record.timestamp).encode()),
        *experiment,
    ]
    if isinstance(outcome, str):
        headers.append((h.SHADOW_ERROR, outcome.encode()))
    return Outgoing(
        topic=topic,
        key=record.key,
        value=encode(outcome) if not isinstance(outcome, str) else None,
        headers=headers,
        source=source_of(record),
        source_offset=record.offset,
        model=model,
        version=version,
        request_timestamp_ms=record.timestamp,
        mirror=True,
    )
