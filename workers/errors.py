"""Errors of the model repository and the worker pool.

::

    StreamInferError
    ├── RequestError
    │   ├── UnknownModel            request names a model or version the repository lacks
    │   └── InferenceFailed         ONNX Runtime rejected the batch (deterministic: no retry)
    ├── ModelFileMissing            a repository entry without its model.onnx or metadata
    └── WorkersUnavailable          actors stayed dead past the retry budget (transient)
"""

from __future__ import annotations

from pathlib import Path

from streaminfer.schemas.deadletter import Reason
from streaminfer.schemas.errors import RequestError, StreamInferError


class UnknownModel(RequestError):
    reason = Reason.UNKNOWN_MODEL

    def __init__(self, name: str, version: str | None, known: list[str]) -> None:
        self.name, self.version, self.known = name, version, known
        wanted = f"{name!r}" if version is None else f"{name!r} version {version!r}"
        super().__init__(f"model {wanted} is not in the repository (known: {', '.join(known) or 'none'})")

    def __reduce__(self):  # keep picklable across Ray's process boundary
        return (UnknownModel, (self.name, self.version, self.known))


class InferenceFailed(RequestError):
    """ONNX Runtime raised while running a batch; the same input fails again, so never retry it."""

    reason = Reason.INFERENCE_ERROR


class ModelFileMissing(StreamInferError):
    def __init__(self, path: Path, hint: str) -> None:
        self.path, self.hint = path, hint
        super().__init__(f"{path} is missing: {hint}")

    def __reduce__(self):
        return (ModelFileMissing, (self.path, self.hint))


class WorkersUnavailable(StreamInferError):
    """No actor answered within the retry budget; the batch is failed with ``inference_error``."""

    reason = Reason.INFERENCE_ERROR
