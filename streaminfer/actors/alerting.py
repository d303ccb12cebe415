"""Alerting as a Ray actor named ``alerting``, started by ``run`` when a rules file is set: the
rules consumer and the webhook delivery, with their own ``/metrics``, in a process of their own
so that no receiver can slow the pipeline's."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry

from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.monitoring.observability.endpoint import serve_metrics, stop_serving
from streaminfer.settings import AppSettings


class AlertingActor:
    def __init__(self, settings: AppSettings) -> None:
        self._settings = settings
        self._running = None
        self._registry = CollectorRegistry()
        self._metrics = DeliveryMetrics(self._registry)
        self._server: object | None = None
        self._url: str | None = None

    async def ensure_started(self) -> dict[str, object]:
        from streaminfer.alerting_service import start_alerting

        if self._running is not None and self._running.service.failure is not None:
            failed, self._running = self._running, None
            await failed.stop()
        if self._running is None:
            if self._settings.metrics.port is not None and self._server is None:
                self._server, self._url = serve_metrics(self._settings.metrics.host, 0, self._registry)
            self._running = await start_alerting(self._settings, self._metrics)
        return self.describe()

    def describe(self) -> dict[str, object]:
        running = self._running
        described = {"delivery": running.delivery.describe(), **running.service.describe()} if running else {}
        return {"label": "alerting", "pid": os.getpid(), "metrics_url": self._url, **described}

    async def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running.stop()
        server, self._server = self._server, None
        stop_serving(server)
