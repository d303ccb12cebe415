"""One Ray actor shell for the services that run once per system: the monitor, alerting and the
experiment controller.

Each runs in a Ray actor of its own (named after it) so that a slow receiver or a heavy drift
window never competes with the pipeline's processes, and Ray restarts the actor if its process
dies. The shell adds what all three need around the service: its own ``/metrics`` endpoint, and
an ``ensure_started`` that the driver's supervisor calls every round, which replaces a service
whose loop failed by a fresh one (resumed from its checkpoint): a side service must neither take
the system down nor stay silently off.

What differs per service is only how it is built, so the shell takes a *builder*: a small,
picklable object that Ray ships to the actor and that creates the service inside the actor's
process and event loop (asyncio objects must be created in the loop that runs them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streaminfer.monitoring.observability.endpoint import MetricsAccess, serve_metrics, stop_serving
from streaminfer.monitoring.settings import ExperimentSettings, MonitorSettings, MonitorTopics
from streaminfer.settings import AppSettings
from streaminfer.streams.settings import KafkaSettings, TopicSettings


class Service(Protocol):
    """What the shell needs of a service: a lifecycle, a failure it can see, and a description."""

    @property
    def failure(self) -> BaseException | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> dict[str, object]: ...


class ServiceBuilder(Protocol):
    """Creates a service, unstarted, with its metrics in ``registry``."""

    @property
    def label(self) -> str:
        """The actor's name, and its ``component`` label in Prometheus."""
        ...

    def __call__(self, registry: CollectorRegistry) -> Service: ...


@dataclass(frozen=True)
class ServiceState:
    """What a service actor says about itself each supervision round."""

    label: str
    pid: int
    metrics_url: str | None
    detail: dict[str, object] = field(default_factory=dict)
    """The service's own description (records read, experiments running, alerts firing...)."""

    @property
    def failed(self) -> str | None:
        failed = self.detail.get("failed")
        return str(failed) if failed else None


class ServiceActor:
    """The Ray actor: one service, its metrics endpoint, and restarts of a failed loop."""

    def __init__(self, build: ServiceBuilder, metrics_host: str | MetricsAccess | None) -> None:
        self._build = build
        self._metrics_host = metrics_host
        self._registry = CollectorRegistry()
        self._service: Service | None = None
        self._metrics_server: object | None = None
        self._metrics_url: str | None = None

    async def ensure_started(self) -> ServiceState:
        """Idempotent; a service whose loop failed is stopped and replaced."""
        if self._service is not None and self._service.failure is not None:
            failed, self._service = self._service, None
            await failed.stop()
        if self._service is None:
            if self._metrics_host is not None and self._metrics_server is None:
                self._metrics_server, self._metrics_url = serve_metrics(self._metrics_host, 0, self._registry)
            service = self._build(self._registry)
            await service.start()
            self._service = service
        return self.describe()

    def describe(self) -> ServiceState:
        detail = self._service.describe() if self._service is not None else {}
        return ServiceState(self._build.label, os.getpid(), self._metrics_url, detail)

    async def stop(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            await service.stop()
        server, self._metrics_server = self._metrics_server, None
        stop_serving(server)


# builders ------------------------------------------------------------------------------------
# Imports are inside the calls: the driver pickles a builder without importing what the service
# needs, and each actor process imports only its own service.


@dataclass(frozen=True)
class MonitorBuilder:
    """The drift and quality monitor (``streams.monitor``). Paths must be absolute: a Ray worker's
    working directory is not the driver's."""

    repository_root: Path
    default_model: str
    kafka: KafkaSettings
    topics: TopicSettings
    settings: MonitorSettings
    label: str = "monitor"

    def __call__(self, registry: CollectorRegistry) -> Service:
        from streaminfer.monitoring.observability.metrics import MonitorMetrics
        from streaminfer.streams.monitor import Monitor
        from streaminfer.workers.models.repository import ModelRepository

        return Monitor(
            self.kafka, self.topics, self.settings, ModelRepository(self.repository_root),
            self.default_model, MonitorMetrics(registry),
        )


@dataclass(frozen=True)
class ExperimentsBuilder:
    """The experiment controller (``streams.experiment_controller``)."""

    repository_root: Path
    kafka: KafkaSettings
    topics: TopicSettings
    monitor_topics: MonitorTopics
    settings: ExperimentSettings
    label: str = "experiments"

    def __call__(self, registry: CollectorRegistry) -> Service:
        from streaminfer.monitoring.observability.metrics import ExperimentMetrics
        from streaminfer.streams.experiment_controller import ExperimentController
        from streaminfer.workers.models.repository import ModelRepository

        return ExperimentController(
            self.kafka, self.topics, self.monitor_topics, self.settings,
            ModelRepository(self.repository_root), ExperimentMetrics(registry),
        )


@dataclass(frozen=True)
class AlertingBuilder:
    """The rules consumer and the webhook delivery, together (``alerting_service``).

    The receivers' signing keys travel here, pickled with the builder, as ``SecretStr``: not as
    the actor's ``runtime_env`` variables, which the Ray dashboard's actor API shows to anyone
    who can open it."""

    settings: AppSettings
    secrets: dict[str, SecretStr] = field(default_factory=dict)
    label: str = "alerting"

    def __call__(self, registry: CollectorRegistry) -> Service:
        from streaminfer.alerting_service import AlertingPair
        from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics

        return AlertingPair(self.settings, DeliveryMetrics(registry), secrets=self.secrets)
