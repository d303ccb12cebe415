"""Kafka header names on requests and predictions.

Headers let a router or a tracing system read the routing facts without parsing the body.
Trace context follows W3C Trace Context (``traceparent`` / ``tracestate``) and is copied from a
request onto its prediction or dead letter unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from streaminfer.schemas.errors import InvalidHeader

REQUEST_ID = "request-id"
MODEL_NAME = "model-name"
MODEL_VERSION = "model-version"
DEADLINE_MS = "deadline-ms"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: On predictions: the request record's timestamp, so consumers can measure end-to-end latency.
REQUEST_TIMESTAMP_MS = "request-timestamp-ms"
#: On predictions, shadow outputs and dead letters of requests under a traffic experiment.
EXPERIMENT = "experiment"
ARM = "arm"
#: On shadow outputs only: the error the shadow version failed with (its reason code).
SHADOW_ERROR = "shadow-error"
#: On replayed requests (``streaminfer deadletters replay``): the dead letter they were sent
#: again from, as ``topic/partition/offset``, and how many times this request has been replayed.
REPLAY_OF = "replay-of"
REPLAY_COUNT = "replay-count"
#: On a dead letter whose value is the request masked by the model's privacy policy (or dropped),
#: not the original bytes: ``true``. ``streaminfer deadletters replay`` does not send those.
PRIVACY_MASKED = "__streaminfer.privacy.masked"
#: On predictions and shadow outputs answered from the prediction cache (``streams.pipeline.cache``)
#: instead of by running the model: ``true``.
CACHED = "cached"

TRACE_HEADERS = (TRACEPARENT, TRACESTATE)


class RequestHeaders(msgspec.Struct, frozen=True, gc=False):
    """The routing facts a request's headers carry; every field is optional on the wire.

    A frozen msgspec struct rather than a frozen dataclass: one is built per request, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost 0.6 µs of the 0.9 µs that
    reading a request's headers took; this costs 0.05 µs."""

    request_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    deadline_ms: int | None = None
    trace: tuple[tuple[str, bytes], ...] = ()


def parse_request_headers(headers: Iterable[tuple[str, bytes]]) -> RequestHeaders:
    """Read the routing headers; one that cannot be read raises ``InvalidHeader`` naming it.
    A header given twice counts with its last value; trace headers are kept in order."""
    request_id: bytes | None = None
    model_name: bytes | None = None
    model_version: bytes | None = None
    deadline: bytes | None = None
    trace: list[tuple[str, bytes]] = []
    for name, value in headers:  # once per request: plain comparisons, no dict per record
        if name == REQUEST_ID:
            request_id = value
        elif name == MODEL_NAME:
            model_name = value
        elif name == MODEL_VERSION:
            model_version = value
        elif name == DEADLINE_MS:
            deadline = value
        elif name in TRACE_HEADERS:
            trace.append((name, value))
    return RequestHeaders(
        _text(REQUEST_ID, request_id) if request_id else None,
        _text(MODEL_NAME, model_name) if model_name else None,
        _text(MODEL_VERSION, model_version) if model_version else None,
        _deadline(deadline) if deadline else None,
        tuple(trace) if trace else (),
    )


def _text(name: str, value: bytes | None) -> str | None:
    if not value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidHeader(name, f"is not UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _deadline(value: bytes | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidHeader(DEADLINE_MS, f"must be epoch milliseconds, not {value[:40]!r}") from exc
