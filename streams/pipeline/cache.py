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

The key is the request's tensors (name, dtype, shape and raw bytes) and the outputs it asked for.
In a consumer's own cache the key is those bytes themselves: the map hashes them and a hit
compares them whole, so two inputs can never share an answer. With ``"shared": true`` a miss also
looks in Redis (``streams.pipeline.cache_shared``) under a blake2b digest of the key before the
model runs, and computed answers are written there with the same TTL.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import NamedTuple, Protocol

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
    """A prediction answered from the cache; encoded exactly like one the model computed. Its
    ``outputs`` are the cached answer's encoded JSON (``msgspec.Raw``), copied into the message
    as they are."""


class SharedStore(Protocol):
    """Answers shared between consumers (Redis); failures read as misses, never as errors."""

    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    async def put_many(self, entries: list[tuple[str, bytes]], ttl_s: float) -> None: ...

    async def close(self) -> None: ...


def input_key(arrays: dict[str, np.ndarray], outputs: frozenset[str] | None) -> bytes:
    """A request's tensors as bytes (each one's name, dtype and shape, then its raw bytes, in C
    order) and the outputs it asked for: equal exactly when the model would see the same input."""
    parts = []
    for name in sorted(arrays) if len(arrays) > 1 else arrays:
        array = arrays[name]
        parts.append(_tensor_header(name, array.dtype.str, array.shape))
        parts.append(array.tobytes())
    if outputs is not None:
        parts.append(_outputs_part(outputs))
    return b"".join(parts)


def input_digest(arrays: dict[str, np.ndarray], outputs: frozenset[str] | None) -> str:
    """A stable digest of ``input_key`` (blake2b, 128 bits): the key in the shared store."""
    return hashlib.blake2b(input_key(arrays, outputs), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=1024)
def _tensor_header(name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    header = f"{name}\x1f{dtype}\x1f{','.join(map(str, shape))}".encode()
    return len(header).to_bytes(4, "little") + header


@functools.lru_cache(maxsize=256)
def _outputs_part(outputs: frozenset[str]) -> bytes:
    return ("\x1eoutputs\x1f" + "\x1f".join(sorted(outputs))).encode()


class _Entry(NamedTuple):
    """A tuple of bytes and numbers: the garbage collector stops tracking it, so a full cache
    adds nothing to each collection's walk (a list of Python floats per answer would)."""

    outputs: bytes
    size: int
    expires: float


class BoundedTtlCache:
    """An LRU map of encoded answers bounded by entries and bytes, whose entries expire ``ttl_s``
    after they were put.

    ``evicted(cause, count)`` is told of every entry dropped: ``size``, ``expired`` or ``cleared``.
    """

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float, clock: Clock = SYSTEM_CLOCK,
                 evicted: Callable[[str, int], None] = lambda cause, count: None) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._clock = clock
        self._evicted = evicted
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock.monotonic():
            self._drop(key, entry)
            self._evicted("expired", 1)
            return None
        self._entries.move_to_end(key)
        return entry.outputs

    def put(self, key: Hashable, outputs: bytes, size: int) -> None:
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

    def _drop(self, key: Hashable, entry: _Entry) -> None:
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
        evictions = {cause: metrics.cache_evictions.labels(*labels, cause) for cause in ("size", "expired", "cleared")}
        self._local = BoundedTtlCache(policy.max_entries, policy.max_bytes, policy.ttl_s, clock,
                                      lambda cause, n: evictions[cause].inc(n))
        self._prefix = f"streaminfer:cache:{entry.name}:{entry.version}:"

    def __len__(self) -> int:
        return len(self._local)

    async def submit(self, items: list[Decoded], lane: str | None, run: RunBatch) -> list[Outcome]:
        """One outcome per item, in order; ``lane``: ``shadow``, or None for each item's own arm."""
        keys = [(lane if lane is not None else item.route.arm, input_key(item.arrays, item.outputs)) for item in items]
        found: list[bytes | None] = [self._local.get(key) for key in keys]
        missing = [i for i, outputs in enumerate(found) if outputs is None]
        if missing and self._shared is not None:
            await self._read_shared(keys, found, missing)
            missing = [i for i in missing if found[i] is None]
        self._count(items, lane, found)
        results: list[Outcome | None] = [
            None if outputs is None
            else CachedPrediction(item.request_id, self.entry.name, self.entry.version, msgspec.Raw(outputs))  # type: ignore[arg-type]
            for item, outputs in zip(items, found)
        ]
        if missing:
            computed = await run([items[i] for i in missing])
            fresh: list[tuple[str, bytes]] = []
            for i, outcome in zip(missing, computed):
                results[i] = outcome
                if isinstance(outcome, Prediction):
                    encoded = _outputs_encoder.encode(outcome.outputs)
                    self._local.put(keys[i], encoded, len(keys[i][1]) + len(encoded))
                    if self._shared is not None:
                        fresh.append((self._shared_key(keys[i]), encoded))
            if fresh and self._shared is not None:
                await self._shared.put_many(fresh, self.policy.ttl_s)
        self._bytes.set(self._local.bytes)
        return results  # type: ignore[return-value]  # every slot is filled above

    def clear(self) -> None:
        """The version stops being served: nothing of it may answer again from this consumer."""
        self._local.clear()
        self._bytes.set(0)

    def _shared_key(self, key: tuple[str, bytes]) -> str:
        lane, raw = key
        return f"{self._prefix}{lane}:{hashlib.blake2b(raw, digest_size=16).hexdigest()}"

    async def _read_shared(self, keys: list[tuple[str, bytes]], found: list[bytes | None], missing: list[int]) -> None:
        assert self._shared is not None
        values = await self._shared.get_many([self._shared_key(keys[i]) for i in missing])
        for i, value in zip(missing, values):
            if value is None:
                continue
            try:
                _outputs_decoder.decode(value)  # only what the model's answers look like is served
            except msgspec.DecodeError:
                log.warning("shared prediction cache: an unreadable entry for %s/%s; ignored", *self._labels)
                continue
            found[i] = value
            self._local.put(keys[i], value, len(keys[i][1]) + len(value))

    def _count(self, items: list[Decoded], lane: str | None, found: list[bytes | None]) -> None:
        """Per submission, one counter update per lane, not per request."""
        tally: dict[tuple[str, bool], int] = {}
        for item, outputs in zip(items, found):
            key = (lane if lane is not None else item.route.arm, outputs is not None)
            tally[key] = tally.get(key, 0) + 1
        for (arm, hit), count in tally.items():
            counter = self._metrics.cache_hits if hit else self._metrics.cache_misses
            counter.labels(*self._labels, arm or "primary").inc(count)
