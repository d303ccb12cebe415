"""Wiring: Ray, the served models, the metrics endpoints, and the pipeline, in order.

Two shapes, chosen by ``pipeline.consumers``:

- consumer actors (default): N Ray actors, each a full pipeline with in-process sessions, share
  the requests topic's partitions as one consumer group;
- driver + worker pool (``consumers=0``): this process consumes, and batches go to a pool of Ray
  actors per model (for GPUs on other nodes, or when one process should own the consumer).

Both shapes also start the monitor (a Ray actor named ``monitor``) unless it is switched off,
serve the driver's own ``/metrics`` (actor count and restarts), and keep a Prometheus
``file_sd`` file listing every process's metrics endpoint up to date as actors come and go.

Everything is built from an ``AppSettings`` passed in; nothing here reads the environment except
Ray's own switch for dashboard authentication on a loopback-only local cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import ray
from prometheus_client import CollectorRegistry
from ray.exceptions import RayActorError, RayError

from streaminfer.monitoring.alerting.config import load_config
from streaminfer.monitoring.observability.discovery import ScrapeTarget, write_targets
from streaminfer.monitoring.observability.endpoint import serve_metrics, stop_serving
from streaminfer.monitoring.observability.metrics import ActorMetrics, PipelineMetrics
from streaminfer.broker import port_in_use
from streaminfer.actors.consumer import ConsumerActor
from streaminfer.errors import PortInUse
from streaminfer.actors.service import AlertingBuilder, ExperimentsBuilder, MonitorBuilder, ServiceActor, ServiceBuilder, ServiceState
from streaminfer.process import tune_gc_for_streaming
from streaminfer.settings import AppSettings
from streaminfer.supervision import ActorWatcher, Sighting
from streaminfer.topology import topology
from streaminfer.streams.clients import check_reachable, ensure_topics
from streaminfer.streams.pipeline.enrichment import feast_enricher
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.workers.execution.pool import WorkerPool
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from streaminfer.workers.settings import RaySettings

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
SUPERVISE_EVERY_S = 1.0


def start_ray(settings: RaySettings, log_to_driver: bool = True) -> str | None:
    """Join a cluster, or start a local Ray whose dashboard listens on loopback only.

    Ray 2.60's dashboard answers 401 without a token; for a local, loopback-only dashboard we
    turn authentication off so a user can open it. Never for any other bind address.
    """
    if ray.is_initialized():
        return _dashboard_url()
    if settings.address:
        ray.init(address=settings.address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
        return _dashboard_url()
    if settings.dashboard_host in LOOPBACK_HOSTS:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray renices its workers to 15 by default: right for batch jobs, wrong for a latency-bound
    # consumer that shares cores with the broker and its producers.
    os.environ.setdefault("RAY_worker_niceness", str(settings.worker_niceness))
    context = ray.init(
        num_cpus=settings.num_cpus,
        include_dashboard=True,
        dashboard_host=settings.dashboard_host,
        dashboard_port=settings.dashboard_port,
        _temp_dir=settings.temp_dir,
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
    )
    return _http(context.dashboard_url)


def _dashboard_url() -> str | None:
    from ray._private.worker import get_dashboard_url

    return _http(get_dashboard_url())


def _http(url: str | None) -> str | None:
    return f"http://{url}" if url and not url.startswith("http") else url


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
    side_states: dict[str, ServiceState] = field(default_factory=dict)
    """What the monitor, alerting and experiment actors last said about themselves, by name."""
    supervisor: asyncio.Task[None] | None = None
    failure: str | None = None
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
        self.metrics_server, self.driver_metrics_url = _serve_metrics(self.settings, self.registry)
        self._watcher = ActorWatcher(ActorMetrics(self.registry))
        if self.driver_metrics_url:
            self._endpoints["driver"] = (self.driver_metrics_url, "driver")

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
        for name, handle in (("monitor", self.monitor), ("alerting", self.alerting), ("experiments", self.experiments)):
            if handle is not None:
                sightings.append(await self._side_actor_sighting(name, handle))
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
        for handle in (self.monitor, self.alerting, self.experiments):
            if handle is not None:
                with contextlib.suppress(Exception):
                    await handle.stop.remote()
                ray.kill(handle, no_restart=True)
        self.monitor = self.alerting = self.experiments = None
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
        assert self.pipeline is not None
        await self.pipeline.wait()

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


@dataclass
class ConsumerGroupApp(RunningApp):
    handles: list[ray.actor.ActorHandle] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

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
            self._endpoint(name, state.get("metrics_url"), "consumer")
            sightings.append(Sighting(name, "consumer", int(state["pid"])))
        return sightings

    async def wait_until_assigned(self, timeout_s: float = 60.0, stable_s: float = 2.0) -> None:
        """Until the group has settled: every partition owned, every consumer owning some when
        there are enough partitions, and no change for ``stable_s``. Requests sent earlier are
        not lost, but they would wait out the rebalances that members joining one by one cause."""
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
        assert self.supervisor is not None
        await self.supervisor
        if self.failure:
            raise RuntimeError(self.failure)

    async def describe(self) -> list[dict[str, object]]:
        return list(await asyncio.gather(*(h.describe.remote() for h in self.handles)))

    async def stop(self) -> None:
        await self._stop_observability()
        handles, self.handles = self.handles, []
        await asyncio.gather(*(h.stop.remote() for h in handles), return_exceptions=True)
        for handle in handles:
            ray.kill(handle, no_restart=True)


async def start_app(settings: AppSettings, registry: CollectorRegistry | None = None) -> RunningApp:
    """Check the broker, create topics, then start the chosen shape."""
    await check_reachable(settings.kafka.bootstrap)
    system = topology(settings)
    await ensure_topics(settings.kafka, system.select(system.pipeline_topics()))
    repository = ModelRepository(settings.model_repository)
    for name in settings.served_model_names():
        repository.resolve(name)  # fail here, in one line, before any actor starts
    if settings.pipeline.consumers > 0:
        app: RunningApp = ConsumerGroupApp(settings, registry=registry or CollectorRegistry())
    else:
        app = DriverApp(settings, registry=registry or CollectorRegistry())
    try:
        app._start_observability()
        if settings.monitor.enabled:
            app.monitor = _start_monitor(settings)
        if settings.alerting.rules_file is not None:
            app.alerting = _start_alerting(settings)
        if settings.experiments.enabled:
            app.experiments = _start_experiments(settings)
        if isinstance(app, ConsumerGroupApp):
            await _start_consumer_group(app)
        else:
            await _start_driver(app, repository)
        await app.supervise_once()
    except BaseException:
        await app.stop()
        raise
    app.supervisor = asyncio.create_task(app.supervise(), name="supervise")
    return app


def consumer_actor_name(settings: AppSettings, index: int) -> str:
    return f"{'+'.join(settings.served_model_names())}-{index}"


def _metrics_host(settings: AppSettings) -> str | None:
    return settings.metrics.host if settings.metrics.port is not None else None


def _start_service(settings: AppSettings, build: ServiceBuilder, env: dict[str, str] | None = None) -> ray.actor.ActorHandle:
    """A side service in its own actor, named after it; Ray restarts the process if it dies."""
    options: dict[str, object] = {"name": build.label, "namespace": settings.pool.namespace, "max_restarts": -1, "num_cpus": 0}
    if env:
        options["runtime_env"] = {"env_vars": env}
    return ray.remote(ServiceActor).options(**options).remote(build, _metrics_host(settings))


def _start_monitor(settings: AppSettings) -> ray.actor.ActorHandle:
    """Paths are made absolute here: a Ray worker's working directory is not the driver's."""
    monitor_settings = settings.monitor.model_copy(
        update={
            "reports_dir": settings.monitor.reports_dir.resolve(),
            "checkpoint_dir": settings.monitor.checkpoint_dir.resolve(),
        }
    )
    return _start_service(settings, MonitorBuilder(
        settings.model_repository.resolve(), settings.pipeline.default_model, settings.kafka, settings.topics,
        monitor_settings,
    ))


def _start_experiments(settings: AppSettings) -> ray.actor.ActorHandle:
    experiments = settings.experiments.model_copy(update={"snapshots_dir": settings.experiments.snapshots_dir.resolve()})
    return _start_service(settings, ExperimentsBuilder(
        settings.model_repository.resolve(), settings.kafka, settings.topics, settings.monitor.topics, experiments,
    ))


def _start_alerting(settings: AppSettings) -> ray.actor.ActorHandle:
    """The rules file is read here first, so a bad one fails `run` in one line before any actor."""
    assert settings.alerting.rules_file is not None
    config, _receivers = load_config(settings.alerting.rules_file)
    # the receivers' secrets reach the actor's process as environment, as they reached ours
    secrets = {entry.secret_env: os.environ[entry.secret_env] for entry in config.receivers}
    absolute = settings.model_copy(update={"alerting": settings.alerting.model_copy(update={
        "rules_file": settings.alerting.rules_file.resolve(),
        "checkpoint_dir": settings.alerting.checkpoint_dir.resolve(),
    })})
    return _start_service(settings, AlertingBuilder(absolute), env=secrets)


async def _start_consumer_group(app: ConsumerGroupApp) -> None:
    settings = app.settings
    remote = ray.remote(ConsumerActor)
    for index in range(settings.pipeline.consumers):
        name = consumer_actor_name(settings, index)
        app.names.append(name)
        app.handles.append(
            remote.options(
                name=name,
                namespace=settings.pool.namespace,
                max_restarts=-1,
                num_cpus=settings.pool.actor_num_cpus,
                num_gpus=settings.pool.actor_num_gpus,
            ).remote(
                index, name, str(settings.model_repository.resolve()), settings.served_model_names(),
                settings.kafka, topology(settings).pipeline, settings.pipeline, settings.runtime, _metrics_host(settings),
                _absolute_features(settings),
            )
        )
    app.actors = list(await asyncio.gather(*(h.ensure_started.remote() for h in app.handles)))
    await app.wait_until_assigned()


async def _start_driver(app: DriverApp, repository: ModelRepository) -> None:
    settings = app.settings
    app.models = ServedModels(
        repository, settings.pipeline.default_model, lambda entry: WorkerPool(entry, settings.pool, settings.runtime)
    )
    for name in settings.served_model_names():
        served = await app.models.serve(name)
        app.actors.extend(await served.pool.describe())
    tune_gc_for_streaming(settings.pipeline.gc_gen0_threshold)
    app.pipeline = Pipeline(
        settings.kafka, topology(settings).pipeline, settings.pipeline, app.models, PipelineMetrics(app.registry),
        concurrent_batches=settings.pool.size, enricher=feast_enricher(_absolute_features(settings)),
    )
    await app.pipeline.start()


def _absolute_features(settings: AppSettings) -> FeatureSettings:
    """Actors may run elsewhere than the driver's working directory."""
    features = settings.features
    return features.model_copy(update={"repo_path": features.repo_path.resolve()})


def _serve_metrics(settings: AppSettings, registry: CollectorRegistry) -> tuple[object | None, str | None]:
    port = settings.metrics.port
    if port is None:
        return None, None
    if port and port_in_use(settings.metrics.host, port):
        raise PortInUse(settings.metrics.host, port, "--metrics-port")
    return serve_metrics(settings.metrics.host, port, registry)
