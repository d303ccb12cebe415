"""The experiment controller as a Ray actor named ``experiments``: one per system.

Ray restarts it if it dies, and the supervisor's next ``ensure_started`` starts the controller
again; a controller whose loop failed is replaced. Canaries must not stall silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.endpoint import serve_metrics, stop_serving
from streaminfer.monitoring.observability.metrics import ExperimentMetrics
from streaminfer.monitoring.settings import ExperimentSettings, MonitorTopics
from streaminfer.streams.experiment_controller import ExperimentController
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository


class ExperimentsActor:
    def __init__(self, repository_root: str, kafka: KafkaSettings, topics: TopicSettings,
                 monitor_topics: MonitorTopics, settings: ExperimentSettings, metrics_host: str | None) -> None:
        self._repository = ModelRepository(Path(repository_root))
        self._kafka, self._topics, self._monitor_topics, self._settings = kafka, topics, monitor_topics, settings
        self._controller: ExperimentController | None = None
        self._metrics_host = metrics_host
        self._metrics_server: object | None = None
        self._metrics_url: str | None = None
        self._metrics = ExperimentMetrics(CollectorRegistry())

    async def ensure_started(self) -> dict[str, object]:
        if self._controller is not None and self._controller.failure is not None:
            failed, self._controller = self._controller, None
            await failed.stop()
        if self._controller is None:
            if self._metrics_host is not None and self._metrics_server is None:
                self._metrics_server, self._metrics_url = serve_metrics(self._metrics_host, 0, self._metrics.registry)
            controller = ExperimentController(self._kafka, self._topics, self._monitor_topics.labels,
                                              self._monitor_topics.metrics, self._settings, self._repository,
                                              self._metrics)
            await controller.start()
            self._controller = controller
        return self.describe()

    def describe(self) -> dict[str, object]:
        described = self._controller.describe() if self._controller else {}
        return {"label": "experiments", "pid": os.getpid(), "metrics_url": self._metrics_url, **described}

    async def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            await controller.stop()
        server, self._metrics_server = self._metrics_server, None
        stop_serving(server)
