"""Reading entities' features back from the online store."""

from __future__ import annotations

from typing import Any

from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import ENTITY_KEY, open_store


class OnlineFeatures:
    """One ``FeatureStore`` per reader: opening one loads the registry, reading is then cheap."""

    def __init__(self, settings: FeatureSettings) -> None:
        self._store = open_store(settings)

    def read(self, entities: list[str], refs: list[str]) -> dict[str, dict[str, Any]]:
        """``{entity: {feature: value or None}}``: None where the store holds nothing."""
        if not entities:
            return {}
        unique = list(dict.fromkeys(entities))
        result = self._store.get_online_features(
            features=refs, entity_rows=[{ENTITY_KEY: e} for e in unique]
        ).to_dict()
        names = [ref.split(":", 1)[1] for ref in refs]
        return {entity: {name: result[name][i] for name in names} for i, entity in enumerate(unique)}
