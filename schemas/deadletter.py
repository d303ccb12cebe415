"""Dead-letter reason codes and the headers that describe why a record was dead-lettered.

A dead letter keeps the request's value, key and headers untouched and appends headers under
``__streaminfer.errors.`` (the convention Kafka Connect uses with ``__connect.errors.``), so a
replay tool can strip our headers and send the original record again. ``retriable`` (``true`` or
``false``, from the error's ``retriable`` attribute) says whether a replay of the same record can
succeed once the cause has passed (workers back, feature store up) or will fail the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

HEADER_PREFIX = "__streaminfer.errors."


class Reason(str, Enum):
    """Why a record could not become a prediction. Values are stable wire strings."""

    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    INVALID_HEADER = "invalid_header"
    """A routing header that cannot be read (not UTF-8, or a deadline that is not a number)."""
    PAYLOAD_TOO_LARGE = "payload_too_large"
    """The value is over ``pipeline.max_request_bytes``; it was not decoded."""
    WRONG_SHAPE_OR_DTYPE = "wrong_shape_or_dtype"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    """Values the input's datatype cannot hold (``1e308`` in FP32), or not finite."""
    UNKNOWN_MODEL = "unknown_model"
    INFERENCE_ERROR = "inference_error"
    WORKERS_UNAVAILABLE = "workers_unavailable"
    """No inference worker answered within the retry budget: a replay later can succeed."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    FEATURE_MISSING = "feature_missing"
    """The model enriches requests from the feature store, and the named entity (or one of its
    required features) is not there."""
    FEATURE_STORE_UNAVAILABLE = "feature_store_unavailable"
    FEATURE_WRITE_FAILED = "feature_write_failed"
    """Not a request: features the sink could not write to the feature store after its retries."""


_INT_FIELDS = ("partition", "offset")
_BOOL_FIELDS = ("retriable",)


#: Reasons that are the serving version's fault, not the request's: what canary gates count.
#: Workers that stay down count too, as they did while they were dead-lettered as inference errors.
MODEL_FAULTS = frozenset({Reason.INFERENCE_ERROR.value, Reason.DEADLINE_EXCEEDED.value,
                          Reason.WORKERS_UNAVAILABLE.value})


def error_headers(
    *,
    reason: Reason,
    message: str,
    topic: str,
    partition: int,
    offset: int,
    retriable: bool | None = None,
    model: str | None = None,
    version: str | None = None,
    request_id: str | None = None,
    experiment: str = "",
    arm: str = "",
) -> list[tuple[str, bytes]]:
    """The headers appended to a dead letter, in a fixed order; ``retriable`` is written as
    ``true`` or ``false`` (left out when ``None``: the writer does not say)."""
    fields: dict[str, object] = {
        "reason": reason.value,
        "message": message,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
    if retriable is not None:
        fields["retriable"] = "true" if retriable else "false"
    if model is not None:
        fields["model"] = model
    if version is not None:
        fields["version"] = version
    if request_id is not None:
        fields["request_id"] = request_id
    if experiment:
        fields["experiment"] = experiment
        fields["arm"] = arm
    return [(HEADER_PREFIX + name, str(value).encode()) for name, value in fields.items()]


def read_error_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, object]:
    """Read our error headers back into one object (the shape ``deadletter.schema.json`` fixes)."""
    out: dict[str, object] = {}
    for name, value in headers:
        if not name.startswith(HEADER_PREFIX):
            continue
        field = name[len(HEADER_PREFIX) :]
        text = value.decode("utf-8", errors="replace")
        if field in _INT_FIELDS:
            out[field] = int(text)
        elif field in _BOOL_FIELDS:
            out[field] = text == "true"
        else:
            out[field] = text
    return out


def original_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The request's own headers, without ours: what a replay sends again."""
    return [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]


def headers_dict(headers: Iterable[tuple[str, bytes]]) -> Mapping[str, bytes]:
    """Last value wins, as Kafka clients usually read a header by name."""
    return dict(headers)
