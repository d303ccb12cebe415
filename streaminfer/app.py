"""Wiring: Ray, the served models, the metrics endpoints, and the pipeline, in order.

Two shapes, chosen by ``pipeline.consumers``:

- consumer actors (default): N Ray actors, each a full pipeline with in-process sessions, share
  the requests topic's partitions as one consumer group;
- driver + worker pool (``consumers=0``): this process consumes, and batches go to a pool of Ray
  actors per model (for GPUs on other nodes, or when one process should own the consumer).

Everything is built from an ``AppSettings`` passed in; nothing here reads the environment except
Ray's own switch for dashboard authentication on a loopback-only local cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import ray
from prometheus_client import CollectorRegistry, start_http_server
from ray.exceptions import RayActorError

from monitoring.metrics import PipelineMetrics
from streams.clients import check_reachable, ensure_topics
from streams.pipeline import Pipeline
from streaminfer.broker import port_in_use
from streaminfer.consumer_actor import ConsumerActor
from streaminfer.errors import PortInUse
from streaminfer.process import tune_gc_for_streaming
from streaminfer.settings import AppSettings
from workers.pool import WorkerPool
from workers.repository import ModelRepository
from workers.served import ServedModels
from workers.settings import RaySettings

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
    """What `run`, `demo` and the tests hold: describe it, wait on it, stop it."""

    settings: AppSettings
    actors: list[dict[str, object]] = field(default_factory=list)
    metrics_urls: list[str] = field(default_factory=list)

    @abstractmethod
    async def wait(self) -> None:
        """Until the pipeline stops by itself; raises what stopped it."""

    @abstractmethod
    async def stop(self) -> None:
        """Finish in-flight work, commit it, release actors. Safe to call twice."""

    @abstractmethod
    async def describe(self) -> list[dict[str, object]]:
        """Per consumer: batch sizes seen, pauses, partitions."""


@dataclass
class DriverApp(RunningApp):
    models: ServedModels | None = None
    pipeline: Pipeline | None = None
    metrics_server: object | None = None

    async def wait(self) -> None:
        assert self.pipeline is not None
        await self.pipeline.wait()

    async def stop(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.stop()
        if self.models is not None:
            await self.models.stop()
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]

    async def describe(self) -> list[dict[str, object]]:
        assert self.pipeline is not None
        return [{"label": "driver", "batch_sizes": self.pipeline.batch_sizes(), "pauses": self.pipeline.pauses}]


@dataclass
class ConsumerGroupApp(RunningApp):
    handles: list[ray.actor.ActorHandle] = field(default_factory=list)
    supervisor: asyncio.Task[None] | None = None
    failure: str | None = None

    async def supervise(self) -> None:
        """Restart pipelines in actors Ray has restarted; stop on a pipeline that failed."""
        while True:
            await asyncio.sleep(SUPERVISE_EVERY_S)
            for handle in self.handles:
                try:
                    state = await handle.ensure_started.remote()
                except RayActorError:
                    continue  # being restarted by Ray; the next round starts its pipeline
                if state.get("failed"):
                    self.failure = f"consumer {state['label']} stopped: {state['failed']}"
                    return

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
        if self.supervisor is not None:
            self.supervisor.cancel()
            await asyncio.gather(self.supervisor, return_exceptions=True)
        handles, self.handles = self.handles, []
        await asyncio.gather(*(h.stop.remote() for h in handles), return_exceptions=True)
        for handle in handles:
            ray.kill(handle, no_restart=True)


async def start_app(settings: AppSettings, registry: CollectorRegistry | None = None) -> RunningApp:
    """Check the broker, create topics, then start the chosen shape."""
    await check_reachable(settings.kafka.bootstrap)
    await ensure_topics(settings.kafka, settings.topics)
    repository = ModelRepository(settings.model_repository)
    for name in settings.served_model_names():
        repository.resolve(name)  # fail here, in one line, before any actor starts
    if settings.pipeline.consumers > 0:
        return await _start_consumer_group(settings)
    return await _start_driver(settings, repository, registry or CollectorRegistry())


def consumer_actor_name(settings: AppSettings, index: int) -> str:
    return f"{'+'.join(settings.served_model_names())}-{index}"


async def _start_consumer_group(settings: AppSettings) -> ConsumerGroupApp:
    app = ConsumerGroupApp(settings)
    remote = ray.remote(ConsumerActor)
    metrics_host = settings.metrics.host if settings.metrics.port is not None else None
    try:
        for index in range(settings.pipeline.consumers):
            name = consumer_actor_name(settings, index)
            app.handles.append(
                remote.options(
                    name=name,
                    namespace=settings.pool.namespace,
                    max_restarts=-1,
                    num_cpus=settings.pool.actor_num_cpus,
                    num_gpus=settings.pool.actor_num_gpus,
                ).remote(
                    index, name, str(settings.model_repository.resolve()), settings.served_model_names(),
                    settings.kafka, settings.topics, settings.pipeline, settings.runtime, metrics_host,
                )
            )
        app.actors = list(await asyncio.gather(*(h.ensure_started.remote() for h in app.handles)))
    except BaseException:
        await app.stop()
        raise
    app.metrics_urls = [str(a["metrics_url"]) for a in app.actors if a.get("metrics_url")]
    await app.wait_until_assigned()
    app.supervisor = asyncio.create_task(app.supervise(), name="supervise-consumers")
    return app


async def _start_driver(settings: AppSettings, repository: ModelRepository, registry: CollectorRegistry) -> DriverApp:
    models = ServedModels(
        repository, settings.pipeline.default_model, lambda entry: WorkerPool(entry, settings.pool, settings.runtime)
    )
    app = DriverApp(settings, models=models)
    try:
        for name in settings.served_model_names():
            served = await models.serve(name)
            app.actors.extend(await served.pool.describe())
        app.metrics_server, url = _serve_metrics(settings, registry)
        app.metrics_urls = [url] if url else []
        tune_gc_for_streaming(settings.pipeline.gc_gen0_threshold)
        app.pipeline = Pipeline(
            settings.kafka, settings.topics, settings.pipeline, models, PipelineMetrics(registry),
            concurrent_batches=settings.pool.size,
        )
        await app.pipeline.start()
    except BaseException:
        await app.stop()
        raise
    return app


def _serve_metrics(settings: AppSettings, registry: CollectorRegistry) -> tuple[object | None, str | None]:
    port = settings.metrics.port
    if port is None:
        return None, None
    if port and port_in_use(settings.metrics.host, port):
        raise PortInUse(settings.metrics.host, port, "--metrics-port")
    server, _thread = start_http_server(port, addr=settings.metrics.host, registry=registry)
    return server, f"http://{settings.metrics.host}:{server.server_port}/metrics"
