"""Each model's privacy masking, by the model name (and version) a request names.

For readers outside the pipeline (the feature worker), which see requests, not routes: a request
that names no model is the default model's; one that names no version gets the newest version's
policy. Lookups are cached and looked up again every ``refresh_s``, so a new version's policy is
picked up without reading the disk per record.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streaminfer.schemas.errors import StreamInferError
from streaminfer.workers.errors import UnknownModel
from streaminfer.workers.models.privacy import Masking
from streaminfer.workers.models.repository import ModelRepository


class ModelMaskings:
    def __init__(self, repository: ModelRepository, default_model: str, refresh_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._repository = repository
        self._default_model = default_model
        self._refresh_s = refresh_s
        self._clock = clock
        self._cache: dict[tuple[str, str | None], tuple[Masking | None, float]] = {}

    def of(self, model: str | None, version: str | None = None) -> Masking | None:
        """The masking of the named model version; None for a model the repository lacks (the
        pipeline dead-letters its requests: no policy of ours applies). A policy that hashes
        without a key raises ``HashKeyMissing``: storing the value unmasked is never the fallback."""
        key = (model or self._default_model, version)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is None or now - cached[1] > self._refresh_s:
            try:
                masking: Masking | None = self._repository.resolve(*key).masking
            except UnknownModel:
                masking = None
            except StreamInferError:
                if cached is None:
                    raise
                masking = cached[0]  # a version being written: keep the last policy read
            cached = self._cache[key] = (masking, now)
        return cached[0]
