"""What `run`, `demo` and the tests hold once the system is up: the two running shapes (a
driver with worker pools, or a group of consuming actors), their side services, and the
supervisor that counts actors, notices restarts and keeps the Prometheus targets current."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
from prometheus_client import CollectorRegistry
from ray.exceptions import RayActorError, RayError

from streaminfer.actors.service import ServiceState
from streaminfer.broker import port_in_use
from streaminfer.errors import PortInUse
from streaminfer.monitoring.observability.discovery import ScrapeTarget, write_targets
from streaminfer.monitoring.observability.endpoint import serve_metrics, stop_serving
from streaminfer.monitoring.observability.metrics import ActorMetrics
from streaminfer.scaling.autoscaler import Autoscaler, ray_capacity
from streaminfer.scaling.lag import LagReader
from streaminfer.scaling.metrics import ScalingMetrics
from streaminfer.schemas.errors import StreamInferError
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.security.authorization import pipeline_refusal
from streaminfer.supervision import ActorWatcher, Sighting, stopped_within
from streaminfer.topology import topology
from streaminfer.workers.routing.served import ServedModels

log = logging.getLogger(__name__)

SUPERVISE_EVERY_S = 1.0


@dataclass
class RunningApp(ABC):
    """What `run`, `demo` and the tests hold: describe it, wait on it, stop it.

    Both shapes share the observability around the pipeline: the driver's metrics endpoint, the
    monitor actor, and a supervisor that counts actors, notices restarts and republishes the
    scrape targets.
    """

    settings: AppSettings
    actors: list[dict[str, object]] = field(default_factory=list)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    metrics_server: object | None = None
    driver_metrics_url: str | None = None
    monitor: ray.actor.ActorHandle | None = None
    alerting: ray.actor.ActorHandle | None = None
    experiments: ray.actor.ActorHandle | None = None
    registry_actor: ray.actor.ActorHandle | None = None
    """Publishes the registry's documents on the control topic and serves model files to actors
    on other nodes (``streaminfer.actors.registry``)."""
    side_states: dict[str, ServiceState] = field(default_factory=dict)
    """What the monitor, alerting and experiment actors last said about themselves, by name."""
    supervisor: asyncio.Task[None] | None = None
    failure: str | None = None
    failure_error: StreamInferError | None = None
    """The failure as a project error, when it is one a user can fix (a missing ACL)."""
    _watcher: ActorWatcher | None = None
    _endpoints: dict[str, tuple[str, str]] = field(default_factory=dict)
    _side_failures: dict[str, str] = field(default_factory=dict)

    @property
    def metrics_urls(self) -> list[str]:
        return [url for url, _component in self._endpoints.values()]

    @property
    def targets_file(self) -> Path | None:
        return self.settings.metrics.targets_file

    @abstractmethod
    async def wait(self) -> None:
        """Until the pipeline stops by itself; raises what stopped it."""

    @abstractmethod
    async def stop(self) -> None:
        """Finish in-flight work, commit it, release actors. Safe to call twice."""

    @abstractmethod
    async def describe(self) -> list[dict[str, object]]:
        """Per consumer: batch sizes seen, pauses, partitions."""

    @abstractmethod
    async def _pipeline_sightings(self) -> list[Sighting]:
        """One supervision round over the pipeline's actors."""

    # observability shared by both shapes -----------------------------------------------------

    def _start_observability(self) -> None:
        self.metrics_server, self.driver_metrics_url = serve_configured_metrics(self.settings, self.registry)
        self._watcher = ActorWatcher(ActorMetrics(self.registry))
        if self.driver_metrics_url:
            self._endpoints["driver"] = (self.driver_metrics_url, "driver")

    def _stop_budget_s(self) -> float:
        """How long an actor's own stop may take before it is released anyway: its pipeline's
        bounded steps (the last fetch, the final commit, leaving the group, each at most
        ``pipeline.stop_step_timeout_s``) and as much again for the rest."""
        return 4 * self.settings.pipeline.stop_step_timeout_s

    def _endpoint(self, name: str, url: object, component: str) -> None:
        if url:
            self._endpoints[name] = (str(url), component)

    def publish_targets(self) -> None:
        if self.targets_file is None:
            return
        targets = [ScrapeTarget(url, component, {"actor": name}) for name, (url, component) in self._endpoints.items()]
        write_targets(self.targets_file, targets)

    async def supervise_once(self) -> None:
        sightings = await self._pipeline_sightings()
        sides = [(name, handle) for name, handle in (("monitor", self.monitor), ("alerting", self.alerting),
                 ("experiments", self.experiments), ("registry", self.registry_actor)) if handle is not None]
        # together: the first round starts each service, seconds of imports apiece
        sightings.extend(await asyncio.gather(*(self._side_actor_sighting(name, handle) for name, handle in sides)))
        assert self._watcher is not None
        self._watcher.observe(sightings)
        self.publish_targets()

    async def _side_actor_sighting(self, name: str, handle: ray.actor.ActorHandle) -> Sighting:
        """Starts the actor again if Ray restarted it; its metrics endpoint joins the targets.

        A side actor that fails to start (its service raised, or Ray is restarting it) is
        counted as down and tried again next round: monitoring, alerting and experiments must
        never end the inference path, which is all ``run`` waits on."""
        try:
            state = self.side_states[name] = await handle.ensure_started.remote()
        except RayActorError:
            return Sighting(name, name, None)
        except RayError as exc:
            if self._side_failures.get(name) != str(exc):  # once per distinct failure, not per round
                log.warning("%s actor failed to start; trying again every %.0f s: %s", name, SUPERVISE_EVERY_S, exc)
            self._side_failures[name] = str(exc)
            return Sighting(name, name, None)
        self._side_failures.pop(name, None)
        self._endpoint(name, state.metrics_url, name)
        return Sighting(name, name, state.pid)

    async def supervise(self) -> None:
        while self.failure is None:
            await asyncio.sleep(SUPERVISE_EVERY_S)
            await self.supervise_once()

    async def _stop_observability(self) -> None:
        if self.supervisor is not None:
            self.supervisor.cancel()
            await asyncio.gather(self.supervisor, return_exceptions=True)
            self.supervisor = None
        names = ("monitor", "alerting", "experiments", "registry")
        for name, handle in zip(names, (self.monitor, self.alerting, self.experiments, self.registry_actor)):
            if handle is not None:
                with contextlib.suppress(Exception):
                    await stopped_within(handle.stop.remote(), self._stop_budget_s(), f"the {name} actor")
                ray.kill(handle, no_restart=True)
        self.monitor = self.alerting = self.experiments = self.registry_actor = None
        server, self.metrics_server = self.metrics_server, None
        stop_serving(server)
        if self.targets_file is not None:
            self._endpoints.clear()
            with contextlib.suppress(OSError):
                self.targets_file.unlink()


@dataclass
class DriverApp(RunningApp):
    models: ServedModels | None = None
    pipeline: Pipeline | None = None

    async def wait(self) -> None:
        """Until the pipeline stops; a missing ACL is raised as the error that names it."""
        assert self.pipeline is not None
        try:
            await self.pipeline.wait()
        except Exception as exc:
            refusal = pipeline_refusal(exc, self.settings.kafka, topology(self.settings).pipeline)
            if refusal is None:
                raise
            raise refusal from exc

    async def stop(self) -> None:
        await self._stop_observability()
        if self.pipeline is not None:
            await self.pipeline.stop()
        if self.models is not None:
            await self.models.stop()

    async def describe(self) -> list[dict[str, object]]:
        assert self.pipeline is not None
        return [{"label": "driver", "batch_sizes": self.pipeline.batch_sizes(), "pauses": self.pipeline.pauses}]

    async def _pipeline_sightings(self) -> list[Sighting]:
        sightings = []
        if self.models is not None:
            for served in self.models.all():
                for name, state in await served.pool.describe_each():  # type: ignore[attr-defined]
                    sightings.append(Sighting(name, "worker", int(state["pid"]) if state else None))
        return sightings


Spawn = Callable[[AppSettings, int], tuple[str, ray.actor.ActorHandle]]
"""Creates the consumer actor of an index: ``streaminfer.app.spawn_consumer``."""


@dataclass
class ConsumerGroupApp(RunningApp):
    """Consumer actors in one group. With ``scaling.enabled`` an autoscaler adds and drains them;
    ``names`` and ``handles`` list the members (a draining one is no longer listed), and they
    change only between supervision rounds."""

    handles: list[ray.actor.ActorHandle] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    autoscaler: Autoscaler | None = None
    _spawn: Spawn | None = None
    _next_index: int = 0
    _membership: asyncio.Lock = field(default_factory=asyncio.Lock)
    _leaving: dict[str, ray.actor.ActorHandle] = field(default_factory=dict)

    async def supervise_once(self) -> None:
        async with self._membership:  # members come and go between rounds, never during one
            await super().supervise_once()

    async def start_autoscaler(self, spawn: Spawn) -> None:
        """Scale the group on its lag from now on; new members are made by ``spawn``, numbered
        after the ones there now (names are never reused: a restart shows as a new process behind
        a name, and a released actor's name may linger in Ray for a moment)."""
        self._spawn, self._next_index = spawn, len(self.names)
        settings = self.settings
        self.autoscaler = Autoscaler(
            settings.scaling, self, LagReader(KafkaClients(settings.kafka), topology(settings).pipeline.requests),
            ray_capacity(settings.pool.actor_num_cpus, settings.pool.actor_num_gpus), ScalingMetrics(self.registry),
        )
        await self.autoscaler.start()

    @property
    def running(self) -> int:
        return len(self.handles)

    @property
    def draining(self) -> list[str]:
        """Consumers being drained: no longer members, not released yet."""
        return list(self._leaving)

    async def add_consumers(self, count: int) -> list[str]:
        """Start ``count`` consumer actors and return once each owns partitions (or
        ``scaling.action_timeout_s`` passed). They are supervised from the round after they answered.
        Actors that do not start within that time (Ray found no node for them) are killed and the
        step fails; the autoscaler tries again after its cool-down."""
        assert self._spawn is not None, "start_autoscaler() first"
        spawned = []
        for _ in range(count):
            index, self._next_index = self._next_index, self._next_index + 1
            spawned.append(self._spawn(self.settings, index))
        try:  # bounded: an actor the cluster has no room for after all (free CPUs split over nodes) waits for ever
            await asyncio.wait_for(asyncio.gather(*(handle.ensure_started.remote() for _, handle in spawned)),
                                   self.settings.scaling.action_timeout_s)
        except BaseException:
            for _, handle in spawned:
                ray.kill(handle, no_restart=True)
            raise
        async with self._membership:
            for name, handle in spawned:
                self.names.append(name)
                self.handles.append(handle)
        await self._until_owning([handle for _, handle in spawned])
        return [name for name, _ in spawned]

    async def _until_owning(self, handles: list[ray.actor.ActorHandle]) -> None:
        deadline = time.monotonic() + self.settings.scaling.action_timeout_s
        while time.monotonic() < deadline:
            states: list[dict[str, object]] = await asyncio.gather(*(handle.describe.remote() for handle in handles))
            if all(state["partitions"] for state in states):
                return
            await asyncio.sleep(0.1)
        log.warning("new consumers own no partitions after %.0f s; going on", self.settings.scaling.action_timeout_s)

    async def remove_consumers(self, count: int) -> list[str]:
        """Drain, then release, the ``count`` newest consumers (never the last one). Each stops its
        pipeline first: it finishes what it holds, commits it and leaves the group
        (``ConsumerActor.stop``); the partitions' next owners start after its last commit."""
        async with self._membership:
            count = min(count, len(self.handles) - 1)
            if count <= 0:
                return []
            leaving = list(zip(self.names[-count:], self.handles[-count:]))
            del self.names[-count:], self.handles[-count:]
            for name, handle in leaving:
                self._leaving[name] = handle
                self._endpoints.pop(name, None)
                if self._watcher is not None:
                    self._watcher.forget(name, "consumer")
        await asyncio.gather(*(self._drain(name, handle) for name, handle in leaving))
        self.publish_targets()
        return [name for name, _ in leaving]

    async def _drain(self, name: str, handle: ray.actor.ActorHandle) -> None:
        try:
            await stopped_within(handle.stop.remote(), self.settings.scaling.action_timeout_s, f"consumer {name}")
        except RayError as exc:
            log.warning("consumer %s did not drain (%r); released anyway: what it had not committed is "
                        "answered again by its partitions' next owners", name, exc)
        finally:
            ray.kill(handle, no_restart=True)
            self._leaving.pop(name, None)

    async def _pipeline_sightings(self) -> list[Sighting]:
        """Restart pipelines in actors Ray has restarted; stop on a pipeline that failed."""
        sightings = []
        for name, handle in zip(self.names, self.handles):
            try:
                state = await handle.ensure_started.remote()
            except RayActorError:
                sightings.append(Sighting(name, "consumer", None))  # being restarted by Ray
                continue
            if state.get("failed"):
                self.failure = f"consumer {state['label']} stopped: {state['failed']}"
                self.failure_error = state.get("not_authorized") or self.failure_error
            self._endpoint(name, state.get("metrics_url"), "consumer")
            sightings.append(Sighting(name, "consumer", int(state["pid"])))
        return sightings

    async def wait_until_assigned(self, timeout_s: float = 60.0, stable_s: float | None = None) -> None:
        """Until the group has settled: every partition owned, every consumer owning some when
        there are enough partitions, and no change for ``stable_s`` (default: one heartbeat
        interval, within which a member that joined late makes the others rejoin). Requests sent
        earlier are not lost, but they would wait out the rebalances that members joining one by
        one cause."""
        if stable_s is None:
            stable_s = self.settings.kafka.heartbeat_interval_ms / 1000
        deadline = time.monotonic() + timeout_s
        partitions = self.settings.topics.partitions
        last: list[object] = []
        settled_since = time.monotonic()
        while time.monotonic() < deadline:
            owned = [d["partitions"] for d in await self.describe()]
            counts = [len(p) for p in owned]  # type: ignore[arg-type]
            if owned != last:
                last, settled_since = owned, time.monotonic()
            complete = sum(counts) >= partitions and (len(counts) > partitions or all(counts))
            if complete and time.monotonic() - settled_since >= stable_s:
                return
            await asyncio.sleep(0.2)
        log.warning("consumer group did not settle within %.0f s; continuing", timeout_s)

    async def wait(self) -> None:
        """Until the pipeline stops; raises why. A missing ACL is raised as the project error
        that names it, which the command line prints in one line (exit 2)."""
        assert self.supervisor is not None
        await self.supervisor
        if self.failure_error is not None:
            raise self.failure_error
        if self.failure:
            raise RuntimeError(self.failure)

    async def describe(self) -> list[dict[str, object]]:
        return list(await asyncio.gather(*(h.describe.remote() for h in list(self.handles))))

    async def stop(self) -> None:
        if self.autoscaler is not None:  # first: a drain in progress finishes and commits
            await self.autoscaler.stop()
        await self._stop_observability()
        handles, self.handles = [*self.handles, *self._leaving.values()], []
        budget = self._stop_budget_s()
        await asyncio.gather(*(stopped_within(h.stop.remote(), budget, "a consumer actor") for h in handles),
                             return_exceptions=True)
        for handle in handles:
            ray.kill(handle, no_restart=True)


def serve_configured_metrics(settings: AppSettings, registry: CollectorRegistry) -> tuple[object | None, str | None]:
    """The process's ``/metrics`` as ``settings.metrics`` asks: off, on a free port, or on a set one."""
    port = settings.metrics.port
    if port is None:
        return None, None
    if port and port_in_use(settings.metrics.host, port):
        raise PortInUse(settings.metrics.host, port, "--metrics-port")
    return serve_metrics(settings.metrics, port, registry)
