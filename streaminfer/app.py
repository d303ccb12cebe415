"""Wiring: Ray, the served models' pools, the metrics endpoint, and the pipeline, in order.

Everything is built from an ``AppSettings`` passed in; nothing here reads the environment except
Ray's own switch for dashboard authentication on a loopback-only local cluster.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import ray
from prometheus_client import CollectorRegistry, start_http_server

from monitoring.metrics import PipelineMetrics
from streams.clients import check_reachable, ensure_topics
from streams.pipeline import Pipeline
from streaminfer.broker import port_in_use
from streaminfer.errors import PortInUse
from streaminfer.settings import AppSettings
from workers.repository import ModelRepository
from workers.served import ServedModels
from workers.settings import RaySettings

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


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
    context = ray.init(
        num_cpus=settings.num_cpus,
        include_dashboard=True,
        dashboard_host=settings.dashboard_host,
        dashboard_port=settings.dashboard_port,
        _temp_dir=settings.temp_dir,
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
    )
    url = context.dashboard_url
    return f"http://{url}" if url and not url.startswith("http") else url


def _dashboard_url() -> str | None:
    from ray._private.worker import get_dashboard_url

    url = get_dashboard_url()
    return f"http://{url}" if url and not url.startswith("http") else url


@dataclass
class RunningApp:
    settings: AppSettings
    models: ServedModels
    pipeline: Pipeline
    metrics: PipelineMetrics
    metrics_url: str | None
    actors: list[dict[str, object]] = field(default_factory=list)
    metrics_server: object | None = None

    async def stop(self) -> None:
        await self.pipeline.stop()
        await self.models.stop()
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            server.shutdown()
            server.server_close()


async def start_app(settings: AppSettings, registry: CollectorRegistry | None = None) -> RunningApp:
    """Start everything after Ray: topics, pools, metrics endpoint, pipeline. Stops what it
    started if a later step fails, so a failed start leaves no actors behind."""
    await check_reachable(settings.kafka.bootstrap)
    await ensure_topics(settings.kafka, settings.topics)
    repository = ModelRepository(settings.model_repository)
    models = ServedModels(repository, settings.pipeline.default_model)
    registry = registry or CollectorRegistry()
    metrics = PipelineMetrics(registry)
    try:
        actors: list[dict[str, object]] = []
        for name in settings.served_model_names():
            served = await models.serve(name, settings.pool, settings.runtime)
            actors.extend(await served.pool.describe())
        metrics_server, metrics_url = _serve_metrics(settings, registry)
        pipeline = Pipeline(settings.kafka, settings.topics, settings.pipeline, models, metrics)
        await pipeline.start()
    except BaseException:
        await models.stop()
        raise
    return RunningApp(settings, models, pipeline, metrics, metrics_url, actors, metrics_server)


def _serve_metrics(settings: AppSettings, registry: CollectorRegistry) -> tuple[object | None, str | None]:
    port = settings.metrics.port
    if port is None:
        return None, None
    if port and port_in_use(settings.metrics.host, port):
        raise PortInUse(settings.metrics.host, port, "--metrics-port")
    server, _thread = start_http_server(port, addr=settings.metrics.host, registry=registry)
    return server, f"http://{settings.metrics.host}:{server.server_port}/metrics"
