"""A model version's prediction cache policy, as its ``metadata.json`` states it.

Caching is opt-in per version, and only for deterministic models: the same input tensors must
give the same answer, or a cached answer would be a different answer than the model's. So the
metadata must say both::

    "deterministic": true,
    "cache": {"max_entries": 10000, "max_bytes": 67108864, "ttl_s": 300, "shared": false}

The cache itself lives in the consumers (``streams.pipeline.cache``).
"""

from __future__ import annotations

import msgspec

from streaminfer.workers.errors import CachePolicyInvalid


class CachePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_entries: int = 10_000
    """Most answers one consumer keeps for this version; the least recently used go first."""

    max_bytes: int = 64 * 1024 * 1024
    """Most bytes one consumer keeps for this version: the inputs that key its answers and the
    answers, encoded."""

    ttl_s: float = 300.0
    """How long an answer may be served from the cache after it was computed."""

    shared: bool = False
    """Also share answers between consumers through Redis (the feature store's Redis, when
    ``features.online_store = "redis"``); without Redis, each consumer keeps its own."""


def check_cache(policy: CachePolicy, deterministic: bool, model: str, version: str) -> None:
    """Raise ``CachePolicyInvalid`` for a cache a version may not have, or bounds that cannot work."""
    if not deterministic:
        raise CachePolicyInvalid(model, version, 'only a deterministic model may cache; set "deterministic": true '
                                 "if the same input always gives the same answer, else remove \"cache\"")
    if policy.max_entries < 1 or policy.max_bytes < 1 or policy.ttl_s <= 0:
        raise CachePolicyInvalid(model, version, "max_entries, max_bytes and ttl_s must be above 0")
