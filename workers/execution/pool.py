"""A pool of named Ray actors for one model version, with retry across actor deaths.

Actors are restarted by Ray (``max_restarts=-1``) and a call that was running on an actor when it
died is retried: Ray resubmits it once the actor is back (``max_task_retries``), and if that budget
runs out the pool keeps retrying on whichever actor answers, until ``retry_timeout_s``. Only
ONNX Runtime's own errors are final, because the same batch would fail again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

import numpy as np
import ray
from ray.exceptions import RayActorError

from streaminfer.workers.errors import InferenceFailed, WorkersUnavailable
from streaminfer.workers.execution.actor import InferenceActor
from streaminfer.workers.models.repository import ModelVersion
from streaminfer.workers.settings import PoolSettings, RuntimeSettings

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 1.0


def actor_name(model_name: str, version: str, index: int) -> str:
    """Stable, human-readable names: the dashboard shows ``<model>-<version>-<index>``, and two
    versions served at once (a canary, a shadow) get pools of their own."""
    return f"{model_name}-{version}-{index}"


class WorkerPool:
    def __init__(self, model: ModelVersion, pool: PoolSettings, runtime: RuntimeSettings) -> None:
        self.model = model
        self._pool = pool
        self._runtime = runtime
        self._actors: list[ray.actor.ActorHandle] = []
        self._model_file: ray.ObjectRef | None = None
        self._inflight: list[int] = []
        self._next = 0
        self.restarts_seen = 0

    @property
    def names(self) -> list[str]:
        return [actor_name(self.model.name, self.model.version, i) for i in range(self._pool.size)]

    async def start(self) -> list[dict[str, object]]:
        """Create the actors and wait until each has opened its session; returns their descriptions."""
        if self._actors:
            return await self.describe()
        remote_cls = ray.remote(InferenceActor)
        # the model's bytes go through the object store, so an actor on a node without the
        # driver's disk has them too; the pool holds the reference for restarts
        self._model_file = ray.put(self.model.model_path.read_bytes())
        for name in self.names:
            await _wait_until_name_is_free(name, self._pool.namespace)
            handle = remote_cls.options(
                name=name,
                namespace=self._pool.namespace,
                max_restarts=-1,
                max_task_retries=3,
                num_cpus=self._pool.actor_num_cpus,
                num_gpus=self._pool.actor_num_gpus,
                scheduling_strategy=self._pool.placement,
            ).remote(str(self.model.model_path), self._runtime.model_dump(), name, self._model_file)
            self._actors.append(cast("ray.actor.ActorHandle", handle))  # Ray's stubs type .remote() as handle or class
            self._inflight.append(0)
        return await self.describe()

    async def describe(self) -> list[dict[str, object]]:
        return list(await asyncio.gather(*(a.describe.remote() for a in self._actors)))

    async def describe_each(self, timeout_s: float = 2.0) -> list[tuple[str, dict[str, object] | None]]:
        """Each actor's description, or None for one that does not answer in time (dead, or
        being restarted by Ray): for supervision, which must not hang on a restarting actor."""

        async def one(handle: ray.actor.ActorHandle) -> dict[str, object] | None:
            try:
                return await asyncio.wait_for(handle.describe.remote(), timeout_s)
            except (asyncio.TimeoutError, RayActorError):
                return None

        states = await asyncio.gather(*(one(a) for a in self._actors))
        return list(zip(self.names, states))

    async def stop(self) -> None:
        actors, self._actors, self._inflight = self._actors, [], []
        for handle in actors:
            ray.kill(handle, no_restart=True)

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch on the least busy actor; survive actor deaths within the retry budget."""
        if not self._actors:
            raise WorkersUnavailable(self.model.name, "its pool is not started")
        deadline = time.monotonic() + self._pool.retry_timeout_s
        backoff = _BACKOFF_START_S
        while True:
            index = self._pick_actor()
            self._inflight[index] += 1
            try:
                return await self._actors[index].infer.remote(inputs)
            except InferenceFailed as exc:
                raise InferenceFailed(str(getattr(exc, "cause", exc))) from exc
            except RayActorError as exc:
                self.restarts_seen += 1
                if time.monotonic() + backoff > deadline:
                    raise WorkersUnavailable(
                        self.model.name, f"no actor answered within {self._pool.retry_timeout_s:.0f} s: {exc}"
                    ) from exc
                log.warning("actor %s failed (%s); retrying the batch", actor_name(self.model.name, self.model.version, index), type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            finally:
                if index < len(self._inflight):
                    self._inflight[index] -= 1

    def _pick_actor(self) -> int:
        """Least in-flight calls first; ties go round-robin so idle actors share the load."""
        size = len(self._actors)
        order = [(self._next + i) % size for i in range(size)]
        index = min(order, key=lambda i: self._inflight[i])
        self._next = (index + 1) % size
        return index


async def _wait_until_name_is_free(name: str, namespace: str, timeout_s: float = 10.0) -> None:
    """A killed actor keeps its name briefly; wait so a restarted pipeline can reuse the name."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        await asyncio.sleep(0.1)
    raise WorkersUnavailable(name, f"a Ray actor of that name already exists in namespace {namespace!r}; stop the other pipeline or use another namespace")
