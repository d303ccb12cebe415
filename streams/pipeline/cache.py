"""The prediction cache: answers of deterministic model versions, kept per consumer.

A model version opts in with ``"deterministic": true`` and a ``"cache"`` policy in its metadata
(``workers.models.caching``). Its requests are then split before they reach the batcher: those
whose answer is cached are answered at once, headed ``cached: true``; only the others run.

Guarantees:

* An answer is only ever served for the version that computed it: each served version has a cache
  of its own, its key names the version, and a version's cache is cleared when the version stops
  being served (a promotion or a rollback retires it).
* Arms never mix: the key holds the lane, the experiment arm a request was routed to or
  ``shadow``, so a shadow's outputs never answer a request and arms keep their own entries.
* Memory is bounded per version by ``max_entries`` and ``max_bytes`` (least recently used first),
  and no answer is served older than ``ttl_s`` on the consumer's ``Clock``.
* Models without a policy pay nothing: no cache object exists for them, so their batches go to
  the batcher as before, with no per-request work.

The key hashes the request's tensors (name, dtype, shape and raw bytes, blake2b) and the outputs
it asked for. With ``"shared": true`` a miss also looks in Redis (``streams.pipeline.cache_shared``)
before the model runs, and computed answers are written there with the same TTL.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np

from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import Prediction, ResponseTensor
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.workers.models.caching import CachePolicy
from streaminfer.workers.models.repository import ModelVersion

log = logging.getLogger(__name__)

CACHED_HEADER = (h.CACHED, b"true")
SHADOW_LANE = "shadow"

Outcome = Prediction | BaseException
RunBatch = Callable[[list[Decoded]], Awaitable[list[Outcome]]]

_outputs_encoder = msgspec.json.Encoder()
_outputs_decoder = msgspec.json.Decoder(list[ResponseTensor])


class CachedPrediction(Prediction, gc=False):
    """A prediction answered from the cache; encoded exactly like one the model computed."""


class SharedStore(Protocol):
    """Answers shared between consumers (Redis); failures read as misses, never as errors."""

    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    async def put_many(self, entries: list[tuple[str, bytes]], ttl_s: float) -> None: ...


def input_digest(arrays: dict[str, np.ndarray], outputs: frozenset[str] | None) -> str:
    """A stable hash of a request's tensors (name, dtype, shape, raw bytes) and requested outputs."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\x1f{array.dtype.str}\x1f{array.shape}\x1f".encode())
        digest.update(array.data)
    if outputs is not None:
        digest.update(("\x1e" + "\x1f".join(sorted(outputs))).encode())
    return digest.hexdigest()


@dataclass(slots=True)
class _Entry:
    outputs: list[ResponseTensor]
    size: int
    expires: float


class BoundedTtlCache:
    """An LRU map bounded by entries and bytes, whose entries expire ``ttl_s`` after they were put.

    ``evicted(cause, count)`` is told of every entry dropped: ``size``, ``expired`` or ``cleared``.
    """

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float, clock: Clock = SYSTEM_CLOCK,
                 evicted: Callable[[str, int], None] = lambda cause, count: None) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._clock = clock
        self._evicted = evicted
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> list[ResponseTensor] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock.monotonic():
            self._drop(key, entry)
            self._evicted("expired", 1)
            return None
        self._entries.move_to_end(key)
        return entry.outputs

    def put(self, key: str, outputs: list[ResponseTensor], size: int) -> None:
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = _Entry(outputs, size, self._clock.monotonic() + self.ttl_s)
        self.bytes += size
        dropped = 0
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest_key, oldest = next(iter(self._entries.items()))
            self._drop(oldest_key, oldest)
            dropped += 1
        if dropped:
            self._evicted("size", dropped)

    def clear(self) -> None:
        count = len(self._entries)
        self._entries.clear()
        self.bytes = 0
        if count:
            self._evicted("cleared", count)

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self.bytes -= entry.size


class VersionCache:
    """The cache of one served model version: splits submissions into hits and misses."""

    def __init__(self, entry: ModelVersion, policy: CachePolicy, metrics: PipelineMetrics,
                 clock: Clock = SYSTEM_CLOCK, shared: SharedStore | None = None) -> None:
        self.entry = entry
        self.policy = policy
        self._shared = shared if policy.shared else None
        self._metrics = metrics
        labels = (entry.name, entry.version)
        self._labels = labels
        self._bytes = metrics.cache_bytes.labels(*labels)
        self._local = BoundedTtlCache(policy.max_entries, policy.max_bytes, policy.ttl_s, clock,
                                      lambda cause, n: metrics.cache_evictions.labels(*labels, cause).inc(n))
        self._prefix = f"streaminfer:cache:{entry.name}:{entry.version}:"

    def __len__(self) -> int:
        return len(self._local)

    async def submit(self, items: list[Decoded], lane: str | None, run: RunBatch) -> list[Outcome]:
        """One outcome per item, in order; ``lane``: ``shadow``, or None for each item's own arm."""
        keys = [self._key(lane if lane is not None else item.route.arm, item) for item in items]
        found: list[list[ResponseTensor] | None] = [self._local.get(key) for key in keys]
        missing = [i for i, outputs in enumerate(found) if outputs is None]
        if missing and self._shared is not None:
            await self._read_shared(keys, found, missing)
            missing = [i for i in missing if found[i] is None]
        self._count(items, lane, found)
        results: list[Outcome | None] = [
            None if outputs is None else CachedPrediction(item.request_id, self.entry.name, self.entry.version, outputs)
            for item, outputs in zip(items, found)
        ]
        if missing:
            computed = await run([items[i] for i in missing])
            fresh: list[tuple[str, bytes]] = []
            for i, outcome in zip(missing, computed):
                results[i] = outcome
                if isinstance(outcome, Prediction):
                    encoded = _outputs_encoder.encode(outcome.outputs)
                    self._local.put(keys[i], outcome.outputs, len(encoded))
                    fresh.append((keys[i], encoded))
            if fresh and self._shared is not None:
                await self._shared.put_many(fresh, self.policy.ttl_s)
        self._bytes.set(self._local.bytes)
        return results  # type: ignore[return-value]  # every slot is filled above

    def clear(self) -> None:
        """The version stops being served: nothing of it may answer again from this consumer."""
        self._local.clear()
        self._bytes.set(0)

    def _key(self, lane: str, item: Decoded) -> str:
        return f"{self._prefix}{lane}:{input_digest(item.arrays, item.outputs)}"

    async def _read_shared(self, keys: list[str], found: list[list[ResponseTensor] | None], missing: list[int]) -> None:
        assert self._shared is not None
        values = await self._shared.get_many([keys[i] for i in missing])
        for i, value in zip(missing, values):
            if value is None:
                continue
            try:
                outputs = _outputs_decoder.decode(value)
            except msgspec.DecodeError:
                log.warning("shared prediction cache: an unreadable entry for %s/%s; ignored", *self._labels)
                continue
            found[i] = outputs
            self._local.put(keys[i], outputs, len(value))

    def _count(self, items: list[Decoded], lane: str | None, found: list[list[ResponseTensor] | None]) -> None:
        """Per submission, one counter update per lane, not per request."""
        tally: dict[tuple[str, bool], int] = {}
        for item, outputs in zip(items, found):
            key = (lane if lane is not None else item.route.arm, outputs is not None)
            tally[key] = tally.get(key, 0) + 1
        for (arm, hit), count in tally.items():
            counter = self._metrics.cache_hits if hit else self._metrics.cache_misses
            counter.labels(*self._labels, arm or "primary").inc(count)
