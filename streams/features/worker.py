"""One feature worker process: the Faust app and the Feast sink side by side.

Run by ``streaminfer features worker``; Faust owns the process (its event loop, its signal
handling), so SIGTERM stops both cleanly and a SIGKILL loses nothing either (see the app's and
the sink's docstrings for why). ``streaminfer_feature_records_skipped_total`` counts the records
the app could not decode and passed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import faust
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.endpoint import MetricsAccess, serve_metrics, stop_serving
from streaminfer.monitoring.observability.metrics import FeatureAppMetrics, FeatureSinkMetrics
from streaminfer.streams.clients import ensure_topics
from streaminfer.streams.features import records
from streaminfer.streams.features.faust_app import make_app
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.sink import FeastWriter, FeatureSink
from streaminfer.streams.features.store import open_store
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.streams.topics import Topology
from streaminfer.workers.models.maskings import ModelMaskings


async def prepare_topics(kafka: KafkaSettings, topics: TopicSettings, settings: FeatureSettings) -> None:
    """Every topic the app reads or writes, laid out as ``streams.topics`` declares them."""
    sources = [topics.requests, topics.predictions, topics.deadletter]
    names = sources + settings.topics.all() + settings.changelog_topics()
    await ensure_topics(kafka, Topology(topics, features=settings).select(names))


def run_worker(
    kafka: KafkaSettings,
    topics: TopicSettings,
    settings: FeatureSettings,
    metrics_host: str | MetricsAccess | None = None,
    metrics_port: int = 0,
    on_ready: Callable[[str | None], None] = lambda url: None,
    log_level: str = "WARNING",
    maskings: ModelMaskings | None = None,
) -> None:
    """Blocks until the process is told to stop. ``maskings``: the models' privacy policies."""
    asyncio.run(prepare_topics(kafka, topics, settings))
    store = open_store(settings)
    registry = CollectorRegistry()
    server, url = serve_metrics(metrics_host, metrics_port, registry) if metrics_host else (None, None)
    sink = FeatureSink(kafka, settings, FeastWriter(store, settings), FeatureSinkMetrics(registry))
    FeatureAppMetrics(registry, skipped=lambda: {kind: records.SKIPPED[kind] for kind in records.SKIP_KINDS})
    app = make_app(kafka, topics, settings, maskings)

    @app.task
    async def feast_sink() -> None:
        await sink.run()

    @app.task
    async def announce() -> None:
        on_ready(url)

    try:
        faust.Worker(app, loglevel=log_level, quiet=True).execute_from_commandline()
    finally:
        sink.stop()
        stop_serving(server)
