"""Inference inside the consuming process, on a worker thread.

ONNX Runtime releases the GIL while it runs, so a batch computing on the worker thread overlaps
with the event loop fetching, decoding and producing the batches around it. Used by consumer
actors, where each actor owns a partition share and a session of its own: no call crosses a
process boundary on the hot path.

The hop to the worker thread and back is not free: a future, a wake-up of each thread, and the
two threads contending for the GIL while the batch computes. For the demo model it cost about
2.5 µs of CPU per answer, more than computing the batch (its gradient-boosted trees take about
1 µs a row). So a batch expected to take under ``runtime.inline_below_ms`` runs on the event
loop's own thread. The expectation is the session's last time per row times the batch's rows; the first batch
always goes to the worker thread, and so does every batch of a model that turns out slower.

ONNX Runtime is imported when a session opens, not with this module: the driver imports it to
describe consumer actors and never runs a session itself (about 20 MiB it would hold for nothing).
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from streaminfer.workers.errors import WorkersUnavailable
from streaminfer.workers.models.repository import ModelVersion
from streaminfer.workers.settings import RuntimeSettings

if TYPE_CHECKING:
    from streaminfer.workers.execution.runtime import ModelRuntime


class LocalPool:
    def __init__(self, model: ModelVersion, runtime: RuntimeSettings, label: str) -> None:
        self.model = model
        self._settings = runtime
        self.label = label
        self._runtime: ModelRuntime | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._seconds_per_row: float | None = None
        self._inline_below_s = runtime.inline_below_ms / 1000
        self.batches_inline = 0
        self.batches_threaded = 0

    @property
    def names(self) -> list[str]:
        return [self.label]

    async def start(self) -> list[dict[str, object]]:
        if self._runtime is None:
            from streaminfer.workers.execution.runtime import ModelRuntime

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{self.model.name}")
            loop = asyncio.get_running_loop()
            self._runtime = await loop.run_in_executor(self._executor, ModelRuntime, self.model.model_path, self._settings)
        return await self.describe()

    async def describe(self) -> list[dict[str, object]]:
        providers = self._runtime.providers if self._runtime else []
        return [{"label": self.label, "pid": os.getpid(), "providers": providers,
                 "batches_inline": self.batches_inline, "batches_threaded": self.batches_threaded}]

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._runtime is None or self._executor is None:
            raise WorkersUnavailable(self.model.name, "its local session is not started")
        rows = max(next(iter(inputs.values())).shape[0], 1) if inputs else 1
        if self._seconds_per_row is not None and self._seconds_per_row * rows < self._inline_below_s:
            self.batches_inline += 1
            return self._timed(self._runtime, inputs, rows)
        self.batches_threaded += 1
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, self._runtime, inputs, rows)

    def _timed(self, runtime: ModelRuntime, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        outputs = runtime.run(inputs)
        self._seconds_per_row = (time.perf_counter() - started) / rows
        return outputs

    async def stop(self) -> None:
        executor, self._executor, self._runtime = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=True)
