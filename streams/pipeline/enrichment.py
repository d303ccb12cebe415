"""Enrichment: online features from the feature store added to requests before inference.

Only models whose metadata asks for it (``workers.models.repository.Enrichment``) are enriched. One read
of the online store per fetched batch and feature set, in a thread: Feast's online reads are
blocking calls, and the event loop must keep fetching and producing meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from streaminfer.schemas.errors import RequestError, StreamInferError
from streaminfer.streams.errors import FeatureMissing, FeatureStoreUnavailable
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.workers.models.repository import Enrichment


class FeatureReader(Protocol):
    def read(self, entities: list[str], refs: list[str]) -> dict[str, dict[str, Any]]: ...


Outcome = tuple[Decoded, StreamInferError | None]


def feast_enricher(settings: FeatureSettings) -> Enricher:
    """Reads the Feast repository of ``settings`` (opened on the first enriched request: every
    consumer builds an enricher, and pyarrow and the store come only with a model that needs them)."""

    def open_reader() -> FeatureReader:
        from streaminfer.streams.features.online import OnlineFeatures

        return OnlineFeatures(settings)

    return Enricher(open_reader, settings.entity_parameter)


class Enricher:
    def __init__(self, reader_factory: Callable[[], FeatureReader], entity_parameter: str = "entity_id") -> None:
        """``reader_factory`` opens the store on first use, so pipelines of models that are
        never enriched do not need a feature repository."""
        self._reader_factory = reader_factory
        self._reader: FeatureReader | None = None
        self._entity_parameter = entity_parameter

    @staticmethod
    def wanted(item: Decoded) -> Enrichment | None:
        return item.served.entry.metadata.enrichment

    async def enrich_fetch(self, items: list[Decoded]) -> tuple[list[Decoded], list[tuple[Decoded, StreamInferError]]]:
        """A fetch's items, those of enriched models with their features, and apart the items
        whose features could not be read with why (they become dead letters)."""
        wanted = [item for item in items if self.wanted(item) is not None]
        if not wanted:
            return items, []
        refused = [(item, error) for item, error in await self.enrich(wanted) if error is not None]
        if not refused:
            return items, []
        failed = {id(item) for item, _error in refused}
        return [item for item in items if id(item) not in failed], refused

    async def enrich(self, items: list[Decoded]) -> list[Outcome]:
        """Each item with its features appended, or with the error that makes it a dead letter."""
        by_features: dict[tuple[str, ...], list[Decoded]] = {}
        for item in items:
            spec = self.wanted(item)
            assert spec is not None
            by_features.setdefault(tuple(spec.features), []).append(item)
        outcomes: list[Outcome] = []
        for refs, group in by_features.items():
            outcomes.extend(await self._enrich_group(list(refs), group))
        return outcomes

    async def _enrich_group(self, refs: list[str], items: list[Decoded]) -> list[Outcome]:
        entities = {id(item): self._entity_of(item) for item in items}
        named = sorted({e for e in entities.values() if e is not None})
        try:
            values = await asyncio.to_thread(self._read, named, refs) if named else {}
        except Exception as exc:  # noqa: BLE001 - whatever the store raised, the request can be replayed
            error = FeatureStoreUnavailable(exc)
            return [(item, error) for item in items]
        return [(item, _append(item, entities[id(item)], values, refs, self._entity_parameter)) for item in items]

    def _read(self, entities: list[str], refs: list[str]) -> dict[str, dict[str, Any]]:
        if self._reader is None:
            self._reader = self._reader_factory()
        return self._reader.read(entities, refs)

    def _entity_of(self, item: Decoded) -> str | None:
        """The entity to look up: hashed when the model's privacy policy hashes it, as the feature
        worker stored it."""
        value = (item.parameters or {}).get(self._entity_parameter)
        if value is None or value == "":
            return None
        entry = item.served.entry
        privacy = entry.metadata.privacy
        if privacy is not None and privacy.parameter_action(self._entity_parameter) == "hash":
            return entry.masking.hash(str(value))
        return str(value)


def _append(item: Decoded, entity: str | None, values: dict[str, dict[str, Any]], refs: list[str],
            entity_parameter: str) -> RequestError | None:
    """Append the entity's values as the input's last columns; the error if it cannot."""
    spec = Enricher.wanted(item)
    assert spec is not None
    names = [ref.split(":", 1)[1] for ref in refs]
    if entity is None:
        if spec.required:
            return FeatureMissing(f"model {item.served.entry.name} needs an entity: set parameters.{entity_parameter}")
        row = [spec.default] * len(names)
    else:
        found = values.get(entity, {})
        missing = [ref for ref, name in zip(refs, names) if found.get(name) is None]
        if missing and spec.required:
            privacy = item.served.entry.metadata.privacy  # a dropped entity is not named in a dead letter
            named = "the request's entity" if privacy and privacy.parameter_action(entity_parameter) == "drop" else f"entity {entity!r}"
            return FeatureMissing(f"{named} has no {', '.join(missing)} in the online feature store")
        row = [spec.default if found.get(name) is None else found[name] for name in names]
    array = item.arrays[spec.input]
    extra = np.broadcast_to(np.asarray(row, dtype=array.dtype), (array.shape[0], len(row)))
    item.arrays[spec.input] = np.concatenate([array, extra], axis=-1)
    return None
