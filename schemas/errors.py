"""Errors raised while reading a request off the wire.

Exception tree (the project's root error lives here because every package imports ``schemas``)::

    StreamInferError
    └── RequestError                 a record that can never succeed; carries a dead-letter reason
        ├── InvalidJson              value is not JSON
        ├── SchemaViolation          JSON, but not an OIP v2 request
        │   ├── NestingTooDeep       JSON nested deeper than the decoder's recursion limit
        │   └── UndecodableRequest   decoding raised something unforeseen (a bug of ours)
        └── WrongShapeOrDtype        an OIP request whose tensors do not fit the model

Other packages add their own subclasses (unknown model, inference failure, deadline). Callers
branch on the ``reason`` attribute, never on message text.
"""

from __future__ import annotations

from streaminfer.schemas.deadletter import Reason


class StreamInferError(Exception):
    """Root of every error this project raises on purpose."""


class RequestError(StreamInferError):
    """A request that no retry can fix: it belongs in dead letters under ``reason``."""

    reason: Reason = Reason.SCHEMA_VIOLATION


class InvalidJson(RequestError):
    reason = Reason.INVALID_JSON


class SchemaViolation(RequestError):
    reason = Reason.SCHEMA_VIOLATION


class WrongShapeOrDtype(RequestError):
    reason = Reason.WRONG_SHAPE_OR_DTYPE


class NestingTooDeep(SchemaViolation):
    """JSON nested deeper than msgspec can follow (about 1,000 levels, less on a deep stack).

    msgspec raises ``RecursionError`` for it, which is not a decode error: left alone it escaped
    every reader as a crash, so a 2 KB record stopped a consumer for good. No OIP v2 request
    nests deeper than four levels, so this is a schema violation whatever the rest holds.
    """

    def __init__(self, what: str = "value") -> None:
        super().__init__(f"{what} nests JSON deeper than the decoder allows (about 1,000 levels)")
        self.what = what


class UndecodableRequest(SchemaViolation):
    """Decoding a record raised an error no rule foresaw.

    That is a bug of ours, but the record must still end somewhere: left to propagate, it stops
    the consumer, its offset is never committed, and a restart reads it again, so the partition
    is blocked for good. As a dead letter it keeps its bytes for a replay once the bug is fixed.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"the request could not be decoded: {type(cause).__name__}: {cause}")
        self.cause = cause
