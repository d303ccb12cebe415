"""One dynamic batcher per served model version, and the live swap of versions.

A promotion, rollback or traffic policy change reaches a consumer through ``ServedModels.refresh``,
which starts the new versions' pools before it switches the routes. A version no longer routed
to keeps its batcher and pool until every batch fetched before the switch has ended: only those
can still hold requests routed to it.

A version whose metadata opts into the prediction cache gets a ``VersionCache`` next to its
batcher (``streams.pipeline.cache``): ``submit`` answers what is cached and sends the rest on.
A version no longer served has its cache cleared at once. Each batch's time in its session is
reported to the ``CostMeter`` (``monitoring.cost``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from streaminfer.monitoring.cost.meter import CostMeter, Device
from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.schemas.codec import Prediction
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock
from streaminfer.streams.errors import DeadlineExceeded
from streaminfer.streams.pipeline.batcher import DynamicBatcher
from streaminfer.streams.pipeline.cache import SHADOW_LANE, Outcome, SharedStore, VersionCache
from streaminfer.streams.pipeline.decoding import Decoded, split_predictions, stack_inputs
from streaminfer.streams.settings import PipelineSettings
from streaminfer.workers.errors import InferenceFailed
from streaminfer.workers.routing.served import ServedModel, ServedModels, VersionKey

log = logging.getLogger(__name__)

ModelBatcher = DynamicBatcher[Decoded, Prediction]


class ModelBatchers:
    def __init__(self, models: ServedModels, settings: PipelineSettings, metrics: PipelineMetrics,
                 concurrent_batches: int, clock: Clock = SYSTEM_CLOCK, shared_cache: SharedStore | None = None,
                 cost: CostMeter | None = None) -> None:
        """``concurrent_batches``: inference batches per model version at once (the pool's
        worker count); ``clock``: what the batchers' wait budgets, deadlines and cache TTLs are
        measured on; ``shared_cache``: where versions with a shared cache policy share answers;
        ``cost``: told each batch's inference time."""
        self._models = models
        self._settings = settings
        self._metrics = metrics
        self._concurrent_batches = concurrent_batches
        self._clock = clock
        self._batchers: dict[VersionKey, ModelBatcher] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._shared_cache = shared_cache
        self._caches: dict[VersionKey, VersionCache] = {}
        self._cost = cost
        self._placements: dict[VersionKey, tuple[Device, bool]] = {}

    def start(self) -> None:
        for served in self._models.all():
            self.for_served(served)

    def for_served(self, served: ServedModel) -> ModelBatcher:
        batcher = self._batchers.get(served.key)
        if batcher is None:
            batcher = self._batchers[served.key] = self._make(served)
            batcher.start()
            if self._cost is not None:
                self._cost.serving(*served.key)
            policy = served.entry.metadata.cache
            if policy is not None:
                self._caches[served.key] = VersionCache(served.entry, policy, self._metrics, self._clock, self._shared_cache)
        return batcher

    async def submit(self, served: ServedModel, items: list[Decoded], shadow: bool = False) -> list[Outcome]:
        """One outcome per item: from the version's cache where it has one, else from its batcher.
        ``shadow``: the items are mirrored to ``served`` as a shadow (their own cache lane)."""
        batcher = self.for_served(served)
        cache = self._caches.get(served.key)
        if cache is None:
            return await batcher.submit(items)
        return await cache.submit(items, SHADOW_LANE if shadow else None, batcher.submit)

    async def refresh(self, fetched_before: list[asyncio.Task[None]]) -> None:
        """Pick up registry and policy changes; versions no longer served retire once the
        batches in ``fetched_before`` have ended."""
        retired = await self._models.refresh()
        for served in retired:
            cache = self._caches.pop(served.key, None)
            if cache is not None:
                cache.clear()
        if retired:
            task = asyncio.create_task(self._retire(retired, fetched_before))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def batch_sizes(self) -> list[int]:
        """Recent inference batch sizes, all versions together."""
        return [size for b in self._batchers.values() for size in b.batch_sizes]

    async def stop(self) -> None:
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for batcher in self._batchers.values():
            await batcher.stop()
        if self._shared_cache is not None:  # the batchers own the store they were given
            await self._shared_cache.close()

    async def _retire(self, retired: list[ServedModel], fetched_before: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*fetched_before, return_exceptions=True)
        for served in retired:
            batcher = self._batchers.pop(served.key, None)
            if batcher is not None:
                await batcher.stop()
            await served.pool.stop()
            log.info("retired %s/%s", *served.key)

    def _make(self, served: ServedModel) -> ModelBatcher:
        model = served.entry.name
        clock = self._clock

        def expired(item: Decoded) -> DeadlineExceeded:
            return _expired(item, clock.time())

        async def run(items: list[Decoded]) -> list[Prediction]:
            started = time.perf_counter()
            outputs = await served.pool.infer(stack_inputs(items))
            elapsed = time.perf_counter() - started
            self._metrics.inference_seconds.labels(model).observe(elapsed)
            if self._cost is not None:
                device, in_process = self._placements.get(served.key) or await self._place(served)
                self._cost.inference(model, served.entry.version, elapsed, device, in_process)
            self._metrics.batch_size.labels(model).observe(len(items))
            return split_predictions(items, outputs, served.entry)

        return DynamicBatcher(
            run,
            max_batch_size=self._settings.max_batch_size,
            max_wait_ms=self._settings.max_wait_ms,
            max_concurrent=self._concurrent_batches,
            rows_of=lambda item: item.rows,
            deadline_of=_deadline_s,
            expired=expired,
            split_on=(InferenceFailed,),
            deadline_margin_ms=self._settings.deadline_margin_ms,
            clock=clock,
        )

    async def _place(self, served: ServedModel) -> tuple[Device, bool]:
        """Where a version computes: on a GPU or not, and in this process or not (asked once)."""
        described = await served.pool.describe()
        providers = {p for d in described for p in d.get("providers", ())}  # type: ignore[attr-defined]
        device: Device = "gpu" if "CUDAExecutionProvider" in providers else "cpu"
        placement = self._placements[served.key] = (device, any(d.get("pid") == os.getpid() for d in described))
        return placement


def _deadline_s(item: Decoded) -> float | None:
    deadline_ms = item.headers.deadline_ms
    return deadline_ms / 1000 if deadline_ms is not None else None


def _expired(item: Decoded, now_s: float) -> DeadlineExceeded:
    deadline_ms = item.headers.deadline_ms or 0
    return DeadlineExceeded(deadline_ms, int(now_s * 1000) - deadline_ms)
