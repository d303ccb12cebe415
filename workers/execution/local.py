"""Inference inside the consuming process, on a worker thread.

ONNX Runtime releases the GIL while it runs, so a batch computing on the worker thread overlaps
with the event loop fetching, decoding and producing the batches around it. Used by consumer
actors, where each actor owns a partition share and a session of its own: no call crosses a
process boundary on the hot path.

ONNX Runtime is imported when a session opens, not with this module: the driver imports it to
describe consumer actors and never runs a session itself (about 20 MiB it would hold for nothing).
"""

from __future__ import annotations

import asyncio
import os
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
        return [{"label": self.label, "pid": os.getpid(), "providers": providers}]

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._runtime is None or self._executor is None:
            raise WorkersUnavailable(self.model.name, "its local session is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._runtime.run, inputs)

    async def stop(self) -> None:
        executor, self._executor, self._runtime = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=True)
