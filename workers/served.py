"""The models one pipeline serves: an inference pool per model, looked up by request headers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from workers.errors import UnknownModel
from workers.repository import ModelRepository, ModelVersion


class InferencePool(Protocol):
    """What the pipeline needs of a pool: Ray actors (``WorkerPool``) or in-process (``LocalPool``)."""

    @property
    def names(self) -> list[str]: ...

    async def start(self) -> list[dict[str, object]]: ...

    async def describe(self) -> list[dict[str, object]]: ...

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    async def stop(self) -> None: ...


PoolFactory = Callable[[ModelVersion], InferencePool]


@dataclass(frozen=True, slots=True)
class ServedModel:
    entry: ModelVersion
    pool: InferencePool


class ServedModels:
    """Resolves ``(model-name, model-version)`` headers to a running pool, or ``UnknownModel``."""

    def __init__(self, repository: ModelRepository, default_model: str, make_pool: PoolFactory) -> None:
        self.repository = repository
        self.default_model = default_model
        self._make_pool = make_pool
        self._served: dict[str, ServedModel] = {}

    async def serve(self, name: str) -> ServedModel:
        """Start a pool for the newest version of ``name`` (raises ``UnknownModel`` if absent)."""
        if name in self._served:
            return self._served[name]
        entry = self.repository.resolve(name)
        served = ServedModel(entry=entry, pool=self._make_pool(entry))
        await served.pool.start()
        self._served[name] = served
        return served

    def resolve(self, name: str | None, version: str | None) -> ServedModel:
        served = self._served.get(name or self.default_model)
        if served is None:
            raise UnknownModel(name or self.default_model, version, sorted(self._served))
        if version is not None and version != served.entry.version:
            raise UnknownModel(served.entry.name, version, [f"{served.entry.name}/{served.entry.version}"])
        return served

    def all(self) -> list[ServedModel]:
        return list(self._served.values())

    async def stop(self) -> None:
        served, self._served = list(self._served.values()), {}
        await asyncio.gather(*(s.pool.stop() for s in served))
