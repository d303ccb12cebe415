"""The models one pipeline serves, and which version answers each request.

Per model: the ``production`` version, and the versions its traffic policy names (split arms, a
canary's candidate, a shadow). Each version has its own inference pool. ``refresh`` re-reads the
registry and the policy when their files change: pools for new versions start first, then the
routes switch in one assignment, and only then are pools nobody routes to handed back to the
caller to retire once their in-flight batches are done. A swap therefore never leaves a request
without a running version.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from streaminfer.workers.errors import UnknownModel
from streaminfer.workers.models.registry import ALIASES_FILE, ModelRegistry
from streaminfer.workers.models.repository import ModelRepository, ModelVersion
from streaminfer.workers.routing.traffic import TRAFFIC_FILE, TrafficPolicy, assign, load_policy, mirrored

log = logging.getLogger(__name__)

VersionKey = tuple[str, str]


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

    @property
    def key(self) -> VersionKey:
        return (self.entry.name, self.entry.version)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the version that answers, under which arm, and a shadow if any."""

    served: ServedModel
    experiment: str = ""
    arm: str = ""
    shadow: ServedModel | None = None


@dataclass(frozen=True)
class _ModelRoutes:
    production: ServedModel
    policy: TrafficPolicy | None
    arms: dict[str, ServedModel]
    shadow: ServedModel | None
    stamp: tuple[int, ...]

    @functools.cached_property
    def to_production(self) -> Route:
        """The route of a request without a policy: one shared object, not one per request."""
        return Route(self.production)


class ServedModels:
    """Resolves a request to a ``Route``, or raises ``UnknownModel``."""

    def __init__(self, repository: ModelRepository, default_model: str, make_pool: PoolFactory) -> None:
        self.repository = repository
        self.registry = ModelRegistry(repository)
        self.default_model = default_model
        self._make_pool = make_pool
        self._pools: dict[VersionKey, ServedModel] = {}
        self._routes: dict[str, _ModelRoutes] = {}
        self._unloadable: dict[str, tuple[int, ...]] = {}
        """Per model, the file stamps whose routes failed to load: reported once, not every poll."""

        self._lock = asyncio.Lock()

    async def serve(self, name: str) -> ServedModel:
        """Start serving ``name`` as its registry and traffic policy say; returns production."""
        if name not in self._routes:
            async with self._lock:
                await self._load(name)
        return self._routes[name].production

    def route(self, name: str | None, version: str | None, key: bytes) -> Route:
        """The route for a request: a pinned ``version`` if it names one being served, else the
        arm the policy assigns ``key`` to (production when there is no policy)."""
        model = name or self.default_model
        routes = self._routes.get(model)
        if routes is None:
            raise UnknownModel(model, version, sorted(self._routes))
        policy = routes.policy
        if version is not None:
            served = self._pools.get((model, version))
            if served is None or not self._routed(model, version):
                raise UnknownModel(model, version, [f"{model}/{v}" for v in self.versions_of(model)])
            return Route(served)
        if policy is None:
            return routes.to_production
        arms = policy.weighted_arms()
        served, arm = routes.production, "primary"
        if arms:
            chosen = assign(arms, key, policy.experiment)
            served, arm = routes.arms[chosen.name], chosen.name
        shadow = routes.shadow
        if shadow is not None and policy.shadow is not None and mirrored(policy.shadow, key, policy.experiment):
            return Route(served, policy.experiment, arm, shadow)
        return Route(served, policy.experiment, arm)

    def versions_of(self, name: str) -> list[str]:
        return sorted(v for (n, v) in self._pools if n == name and self._routed(n, v))

    def all(self) -> list[ServedModel]:
        return list(self._pools.values())

    def policy(self, name: str) -> TrafficPolicy | None:
        routes = self._routes.get(name)
        return routes.policy if routes else None

    async def refresh(self) -> list[ServedModel]:
        """Reload models whose registry or policy files changed; returns the pools no route uses
        any more (the caller stops them once nothing in flight needs them)."""
        async with self._lock:
            for name, routes in list(self._routes.items()):
                stamp = self._stamp(name)
                if stamp in (routes.stamp, self._unloadable.get(name)):
                    continue
                try:
                    await self._load(name)
                except Exception as exc:  # noqa: BLE001 - a bad policy file must not stop serving the old one
                    self._unloadable[name] = stamp
                    log.error("model %s: keeping its current routes; the new ones failed to load: %s", name, exc)
            retired = [served for key, served in self._pools.items() if not self._routed(*key)]
            for served in retired:
                del self._pools[served.key]
            return retired

    async def stop(self) -> None:
        served, self._pools, self._routes = list(self._pools.values()), {}, {}
        await asyncio.gather(*(s.pool.stop() for s in served))

    # internals -------------------------------------------------------------------------------

    async def _load(self, name: str) -> None:
        stamp = self._stamp(name)
        policy = load_policy(self.repository.root / name)
        production = await self._pool_for(name, self.registry.production(name))
        arms = {}
        shadow = None
        if policy is not None:
            for arm in policy.weighted_arms():
                if arm.weight <= 0:
                    continue  # a rolled-back canary's candidate: nothing routes there
                arms[arm.name] = await self._pool_for(name, self.registry.resolve_version(name, arm.version))
            if policy.shadow is not None:
                shadow = await self._pool_for(name, self.registry.resolve_version(name, policy.shadow.version))
        self._routes[name] = _ModelRoutes(production, policy, arms, shadow, stamp)
        log.info("model %s: production %s%s", name, production.entry.version,
                 f", experiment {policy.experiment}" if policy else "")

    async def _pool_for(self, name: str, version: str) -> ServedModel:
        served = self._pools.get((name, version))
        if served is None:
            entry = self.repository.load(name, version)
            served = ServedModel(entry=entry, pool=self._make_pool(entry))
            await served.pool.start()
            self._pools[served.key] = served
        return served

    def _routed(self, name: str, version: str) -> bool:
        routes = self._routes.get(name)
        if routes is None:
            return False
        used = {routes.production.entry.version, *(s.entry.version for s in routes.arms.values())}
        if routes.shadow is not None:
            used.add(routes.shadow.entry.version)
        return version in used

    def _stamp(self, name: str) -> tuple[int, ...]:
        """What the routes were loaded from: the files' modification times (0 when absent)."""
        directory: Path = self.repository.root / name
        stamps: list[int] = []
        for file in (ALIASES_FILE, TRAFFIC_FILE):
            try:
                status = (directory / file).stat()
                stamps.extend((status.st_mtime_ns, status.st_ino))  # replaced files get a new inode
            except FileNotFoundError:
                stamps.extend((0, 0))
        return tuple(stamps)
