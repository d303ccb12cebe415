"""Errors raised while reading a request off the wire.

Exception tree (the project's root error lives here because every package imports ``schemas``)::

    StreamInferError
    └── RequestError                 a record that can never succeed; carries a dead-letter reason
        ├── InvalidJson              value is not JSON
        ├── SchemaViolation          JSON, but not an OIP v2 request
        └── WrongShapeOrDtype        an OIP request whose tensors do not fit the model

Other packages add their own subclasses (unknown model, inference failure, deadline). Callers
branch on the ``reason`` attribute, never on message text.
"""

from __future__ import annotations

from schemas.deadletter import Reason


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
