"""The monitor as a Ray actor named ``monitor``: one per system, with its own ``/metrics``.

Ray restarts it if it dies; the supervisor's next ``ensure_started`` starts the monitor again,
which resumes from its checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.endpoint import serve_metrics, stop_serving
from streaminfer.monitoring.observability.metrics import MonitorMetrics
from streaminfer.monitoring.settings import MonitorSettings
from streaminfer.streams.monitor import Monitor
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository


class MonitorActor:
    def __init__(
        self,
        repository_root: str,
        default_model: str,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: MonitorSettings,
        metrics_host: str | None,
    ) -> None:
        self._repository = ModelRepository(Path(repository_root))
        self._default_model = default_model
        self._kafka, self._topics, self._settings = kafka, topics, settings
        self._metrics_host = metrics_host
        self._monitor: Monitor | None = None
        self._metrics_server: object | None = None
        self._metrics_url: str | None = None
        self._registry = CollectorRegistry()
        self._metrics = MonitorMetrics(self._registry)

    async def ensure_started(self) -> dict[str, object]:
        """Idempotent. A monitor whose loop failed is replaced by one resumed from the checkpoint:
        monitoring must not take the system down, nor stay silently off."""
        if self._monitor is not None and self._monitor.failure is not None:
            failed, self._monitor = self._monitor, None
            await failed.stop()
        if self._monitor is None:
            registry = self._registry
            if self._metrics_host is not None and self._metrics_server is None:
                self._metrics_server, self._metrics_url = serve_metrics(self._metrics_host, 0, registry)
            monitor = Monitor(
                self._kafka, self._topics, self._settings, self._repository, self._default_model,
                self._metrics,
            )
            await monitor.start()
            self._monitor = monitor
        return self.describe()

    def describe(self) -> dict[str, object]:
        described = self._monitor.describe() if self._monitor else {}
        return {"label": "monitor", "pid": os.getpid(), "metrics_url": self._metrics_url, **described}

    async def stop(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            await monitor.stop()
        server, self._metrics_server = self._metrics_server, None
        stop_serving(server)
