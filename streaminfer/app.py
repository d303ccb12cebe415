"""Wiring: Ray, the served models, the metrics endpoints, and the pipeline, in order.

Two shapes, chosen by ``pipeline.consumers``:

- consumer actors (default): N Ray actors, each a full pipeline with in-process sessions, share
  the requests topic's partitions as one consumer group;
- driver + worker pool (``consumers=0``): this process consumes, and batches go to a pool of Ray
  actors per model (for GPUs on other nodes, or when one process should own the consumer).

On a cluster (``ray.address``), consumer actors and worker pools spread over the nodes
(``pool.placement``; actors reserving GPUs only where there are GPUs). The side services (monitor,
alerting, experiments) run on the driver's node: they read and write files there (the registry,
which the experiment controller changes; checkpoints, reports, the rules file) that the driver's
machine holds. So does the registry actor, which publishes the registry on the control topic and
serves model files to consumers on nodes that cannot read the repository (``ray.repository``).

Both shapes also start the monitor (a Ray actor named ``monitor``) unless it is switched off,
serve the driver's own ``/metrics`` (actor count and restarts), and keep a Prometheus
``file_sd`` file listing every process's metrics endpoint up to date as actors come and go.

Everything is built from an ``AppSettings`` passed in; nothing here reads the environment except
Ray's own switch for dashboard authentication on a loopback-only local cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import cast

import ray
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from ray.exceptions import AuthenticationError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from streaminfer.actors.consumer import ConsumerActor
from streaminfer.actors.registry import RegistryActor, RegistryBuilder
from streaminfer.actors.service import (
    AlertingBuilder,
    ExperimentsBuilder,
    MonitorBuilder,
    ServiceActor,
    ServiceBuilder,
)
from streaminfer.errors import ActorsNotPlaced, RayUnreachable
from streaminfer.monitoring.alerting.config import load_config
from streaminfer.monitoring.observability.endpoint import MetricsAccess
from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.process import tune_gc_for_streaming
from streaminfer.running import ConsumerGroupApp, DriverApp, RunningApp
from streaminfer.schemas.errors import StreamInferError
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import KafkaClients, check_reachable, ensure_topics
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.pipeline.cache_shared import shared_store
from streaminfer.streams.pipeline.enrichment import feast_enricher
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.pipeline.transactional import check_transactions
from streaminfer.topology import topology
from streaminfer.workers.execution.pool import WorkerPool
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from streaminfer.workers.settings import RaySettings

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def start_ray(settings: RaySettings, log_to_driver: bool = True) -> str | None:
    """Join a cluster, or start a local Ray whose dashboard listens on loopback only.

    Ray 2.60's dashboard answers 401 without a token; for a local, loopback-only dashboard we
    turn authentication off so a user can open it. Never for any other bind address.
    """
    if ray.is_initialized():
        return _dashboard_url()
    if settings.address:
        if not _listening(settings.address):  # Ray itself would retry for minutes
            raise RayUnreachable(settings.address, auth=False)
        try:
            ray.init(address=settings.address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
        except (ConnectionError, RayError) as exc:
            raise RayUnreachable(settings.address, auth=_refused_for_token(exc)) from None
        return _dashboard_url()
    if settings.dashboard_host in LOOPBACK_HOSTS:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray renices its workers to 15 by default: right for batch jobs, wrong for a latency-bound
    # consumer that shares cores with the broker and its producers.
    os.environ.setdefault("RAY_worker_niceness", str(settings.worker_niceness))
    context = ray.init(
        num_cpus=settings.num_cpus,
        include_dashboard=settings.include_dashboard,
        dashboard_host=settings.dashboard_host,
        dashboard_port=settings.dashboard_port,
        _temp_dir=settings.temp_dir,
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
    )
    return _http(context.dashboard_url)


def _listening(address: str, timeout_s: float = 5.0) -> bool:
    """Whether something accepts connections at a ``host:port`` or ``ray://host:port`` address;
    ``auto`` (Ray finds the local cluster itself) is taken as yes."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return True
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def _refused_for_token(exc: BaseException) -> bool:
    """Whether joining failed because the cluster wants a token (the cause may sit a few levels down)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AuthenticationError) or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _dashboard_url() -> str | None:
    from ray._private.worker import get_dashboard_url

    return _http(get_dashboard_url())


def _http(url: str | None) -> str | None:
    return f"http://{url}" if url and not url.startswith("http") else url


async def start_app(settings: AppSettings, registry: CollectorRegistry | None = None) -> RunningApp:
    """Check the broker, create topics, then start the chosen shape."""
    settings = settings.reading_committed()
    await check_reachable(settings.kafka)
    if settings.pipeline.guarantee == "exactly_once":
        await check_transactions(KafkaClients(settings.kafka))  # refused in one line on the embedded broker
    system = topology(settings)
    await ensure_topics(settings.kafka, system.select(system.pipeline_topics()))
    repository = ModelRepository(settings.model_repository, settings.privacy.hash_key)
    for name in settings.served_model_names():
        _ = repository.resolve(name).masking  # fail here, in one line, before any actor starts
    if settings.pipeline.consumers > 0:
        app: RunningApp = ConsumerGroupApp(settings, registry=registry or CollectorRegistry())
    else:
        app = DriverApp(settings, registry=registry or CollectorRegistry())
    try:
        app._start_observability()
        # built first (a bad rules file fails `run` in one line before any actor), started after
        # the pipeline: their processes would otherwise take Ray's prestarted workers and the
        # cores while the consumers start, and they read their topics from the earliest offset
        monitor = _monitor_builder(settings) if settings.monitor.enabled else None
        alerting = _alerting_builder(settings) if settings.alerting.rules_file is not None else None
        experiments = _experiments_builder(settings) if settings.experiments.enabled else None
        if isinstance(app, ConsumerGroupApp) and serves_mirrors(settings):
            app.registry_actor = await _start_registry(settings)
        if isinstance(app, ConsumerGroupApp):
            await _start_consumer_group(app)
        else:
            assert isinstance(app, DriverApp)
            await _start_driver(app, repository)
        app.monitor = _start_service(settings, monitor) if monitor is not None else None
        app.alerting = _start_service(settings, alerting) if alerting is not None else None
        app.experiments = _start_service(settings, experiments) if experiments is not None else None
        await app.supervise_once()
    except BaseException:
        await app.stop()
        raise
    app.supervisor = asyncio.create_task(app.supervise(), name="supervise")
    return app


def consumer_actor_name(settings: AppSettings, index: int) -> str:
    return f"{'+'.join(settings.served_model_names())}-{index}"


def _metrics_host(settings: AppSettings) -> MetricsAccess | None:
    """Host, basic auth and TLS of the actors' endpoints; the password travels inside the pickled
    argument as ``SecretStr``, never as a runtime_env variable (which the Ray dashboard shows)."""
    return settings.metrics if settings.metrics.port is not None else None


def _start_service(settings: AppSettings, build: ServiceBuilder, actor: type[ServiceActor] = ServiceActor) -> ray.actor.ActorHandle:
    """A side service in its own actor, named after it, on the driver's node; Ray restarts the
    process if it dies."""
    options: dict[str, object] = {
        "name": build.label, "namespace": settings.pool.namespace, "max_restarts": -1, "num_cpus": 0,
        "scheduling_strategy": on_the_driver_node(),
    }
    handle = ray.remote(actor).options(**options).remote(build, _metrics_host(settings))
    return cast("ray.actor.ActorHandle", handle)  # Ray's stubs type .remote() as handle or class


def on_the_driver_node() -> NodeAffinitySchedulingStrategy:
    """Where the files the side services read and write are: the driver's machine."""
    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def serves_mirrors(settings: AppSettings) -> bool:
    """Whether consumers may need the registry actor: on a cluster (``ray.address``), unless
    ``ray.repository`` says they all read the repository; a local Ray is one node."""
    mode = settings.ray.repository
    return mode == "mirror" or (mode == "auto" and settings.ray.address is not None)


async def _start_registry(settings: AppSettings) -> ray.actor.ActorHandle:
    """Started, and the registry published once, before any consumer follows it."""
    control = topology(settings).select([settings.topics.control])[0]
    build = RegistryBuilder(settings.model_repository.resolve(), settings.kafka, control, settings.ray.publish_every_s)
    handle = _start_service(settings, build, RegistryActor)
    try:
        await handle.ensure_started.remote()
    except RayTaskError as exc:
        ray.kill(handle, no_restart=True)
        if isinstance(exc.cause, StreamInferError):  # a broker or ACL problem, in one line
            raise exc.cause from None
        raise
    return handle


def _monitor_builder(settings: AppSettings) -> MonitorBuilder:
    """Paths are made absolute here: a Ray worker's working directory is not the driver's."""
    monitor_settings = settings.monitor.model_copy(
        update={
            "reports_dir": settings.monitor.reports_dir.resolve(),
            "checkpoint_dir": settings.monitor.checkpoint_dir.resolve(),
        }
    )
    return MonitorBuilder(
        settings.model_repository.resolve(), settings.pipeline.default_model, settings.kafka, settings.topics,
        monitor_settings,
    )


def _experiments_builder(settings: AppSettings) -> ExperimentsBuilder:
    experiments = settings.experiments.model_copy(update={"snapshots_dir": settings.experiments.snapshots_dir.resolve()})
    return ExperimentsBuilder(
        settings.model_repository.resolve(), settings.kafka, settings.topics, settings.monitor.topics, experiments,
    )


def _alerting_builder(settings: AppSettings) -> AlertingBuilder:
    """The rules file is read here first, so a bad one fails `run` in one line before any actor."""
    assert settings.alerting.rules_file is not None
    config, _receivers = load_config(settings.alerting.rules_file)
    # the receivers' secrets travel inside the (pickled) builder, never as runtime_env variables,
    # which the Ray dashboard shows
    secrets = {entry.secret_env: SecretStr(os.environ[entry.secret_env]) for entry in config.receivers}
    absolute = settings.model_copy(update={"alerting": settings.alerting.model_copy(update={
        "rules_file": settings.alerting.rules_file.resolve(),
        "checkpoint_dir": settings.alerting.checkpoint_dir.resolve(),
    })})
    return AlertingBuilder(absolute, secrets)


def spawn_consumer(settings: AppSettings, index: int) -> tuple[str, ray.actor.ActorHandle]:
    """One consuming actor, named ``<models>-<index>``; it joins the group on ``ensure_started``.

    The one place a consumer actor is created: at start-up for each of ``pipeline.consumers``,
    and by anything that adds consumers later."""
    name = consumer_actor_name(settings, index)
    handle = ray.remote(ConsumerActor).options(
        name=name,
        namespace=settings.pool.namespace,
        max_restarts=-1,
        num_cpus=settings.pool.actor_num_cpus,
        num_gpus=settings.pool.actor_num_gpus,
        scheduling_strategy=settings.pool.placement,
    ).remote(
        index, name, str(settings.model_repository.resolve()), settings.served_model_names(),
        settings.kafka, topology(settings).pipeline, settings.pipeline, settings.runtime, _metrics_host(settings),
        _absolute_features(settings), settings.privacy.hash_key, settings.ray, settings.pool.namespace,
    )
    return name, cast("ray.actor.ActorHandle", handle)  # Ray's stubs type .remote() as handle or class


async def placed(settings: AppSettings, names: list[str], handles: list[ray.actor.ActorHandle]) -> None:
    """Until Ray has created every actor (their constructors are cheap; loading models comes after).

    An actor asking for resources the cluster lacks (a GPU where there is none) would otherwise
    wait for them forever, and ``run`` with it, saying nothing."""
    ready: list[ray.ObjectRef[bool]] = [h.__ray_ready__.remote() for h in handles]
    _done, pending = await asyncio.to_thread(ray.wait, ready, num_returns=len(ready),
                                             timeout=settings.pool.placement_timeout_s)
    if pending:
        stuck = [name for name, ref in zip(names, ready, strict=True) if ref in pending]
        asked = {"CPU": settings.pool.actor_num_cpus, "GPU": settings.pool.actor_num_gpus}
        totals = {kind: float(amount) for kind, amount in ray.cluster_resources().items() if kind in asked}
        for handle in handles:  # an actor never placed would hold its stop() call (and `run`) forever
            ray.kill(handle, no_restart=True)
        raise ActorsNotPlaced(stuck, asked, totals, settings.pool.placement_timeout_s)


async def _start_consumer_group(app: ConsumerGroupApp) -> None:
    settings = app.settings
    for index in range(settings.pipeline.consumers):
        name, handle = spawn_consumer(settings, index)
        app.names.append(name)
        app.handles.append(handle)
    await placed(settings, app.names, app.handles)
    try:
        app.actors = list(await asyncio.gather(*(h.ensure_started.remote() for h in app.handles)))
    except RayTaskError as exc:
        if isinstance(exc.cause, StreamInferError):  # one line for the user, not the actor's traceback
            raise exc.cause from None
        raise
    await app.wait_until_assigned()
    if settings.scaling.enabled:
        await app.start_autoscaler(spawn_consumer)


async def _start_driver(app: DriverApp, repository: ModelRepository) -> None:
    settings = app.settings
    app.models = ServedModels(
        repository, settings.pipeline.default_model, lambda entry: WorkerPool(entry, settings.pool, settings.runtime)
    )
    for name in settings.served_model_names():
        served = await app.models.serve(name)
        app.actors.extend(await served.pool.describe())
    tune_gc_for_streaming(settings.pipeline.gc_threshold)
    app.pipeline = Pipeline(
        settings.kafka, topology(settings).pipeline, settings.pipeline, app.models, PipelineMetrics(app.registry),
        concurrent_batches=settings.pool.size, enricher=feast_enricher(_absolute_features(settings)),
        shared_cache=shared_store(settings.features),
    )
    await app.pipeline.start()


def _absolute_features(settings: AppSettings) -> FeatureSettings:
    """Actors may run elsewhere than the driver's working directory."""
    features = settings.features
    return features.model_copy(update={"repo_path": features.repo_path.resolve()})
