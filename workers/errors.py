"""Errors of the model repository, the registry, traffic routing and the worker pool.

Their place in the project's tree, with reasons and ``retriable``, is in ``streaminfer.schemas.errors``.
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


class InferenceFailed(RequestError):
    """ONNX Runtime raised while running a batch; the same input fails again, so never retry it."""

    reason = Reason.INFERENCE_ERROR


class WorkersUnavailable(StreamInferError):
    """No worker of a model version could run a batch (actors dead past the retry budget, or the
    pool not started): each request of the batch is dead-lettered, and a replay later can succeed."""

    reason = Reason.WORKERS_UNAVAILABLE
    retriable = True

    def __init__(self, workers: str, detail: str) -> None:
        """``workers``: whose workers (a model name, or an actor's name); ``detail``: what happened."""
        self.workers, self.detail = workers, detail
        super().__init__(f"no worker of {workers} is available: {detail}")


class ModelFileMissing(StreamInferError):
    def __init__(self, path: Path, hint: str) -> None:
        self.path, self.hint = path, hint
        super().__init__(f"{path} is missing: {hint}")


class ArtifactInvalid(StreamInferError):
    """A model file a node cannot get (its source cannot be read), or whose sha256 differs from
    the version's manifest (``workers.models.distribution``)."""

    def __init__(self, what: str, problem: str) -> None:
        self.what, self.problem = what, problem
        super().__init__(f"{what} {problem}")


class RegistryError(StreamInferError):
    """A registry change that cannot be made; the message says what to do instead."""


class PolicyInvalid(StreamInferError):
    """A traffic policy file that cannot be served; ``problem`` says what to change."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class PrivacyPolicyInvalid(StreamInferError):
    """A policy naming features the model does not have (a typo would leave data unmasked)."""

    def __init__(self, model: str, version: str, unknown: list[str], known: list[str]) -> None:
        self.model, self.version, self.unknown, self.known = model, version, unknown, known
        super().__init__(
            f"privacy policy of {model} {version} names unknown features {', '.join(unknown)} "
            f"(feature_names: {', '.join(known) or 'none'})"
        )


class HashKeyMissing(StreamInferError):
    """A policy hashes values but no key is set: an unkeyed hash of an id is guessable."""

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        super().__init__(
            f"privacy policy of {model} {version} hashes values: set privacy.hash_key "
            "(STREAMINFER_PRIVACY__HASH_KEY)"
        )


class CachePolicyInvalid(StreamInferError):
    """A prediction cache a version may not have (a model not declared deterministic), or bounds
    that cannot work; ``problem`` says what to change."""

    def __init__(self, model: str, version: str, problem: str) -> None:
        self.model, self.version, self.problem = model, version, problem
        super().__init__(f"prediction cache of {model} {version}: {problem}")
