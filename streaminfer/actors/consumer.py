"""A consuming Ray actor: one member of the consumer group with its own sessions.

Each actor runs a whole pipeline (its own Kafka consumer and producer, a dynamic batcher and
in-process ONNX Runtime sessions), so no call crosses a process boundary on the hot path and the
actors use the cores in parallel. The group spreads the partitions over them.

If an actor dies, Ray restarts it (``__init__`` again) and the supervisor's next
``ensure_started`` call rejoins the group; records it had not committed are read again by
whichever member owns their partition then. Nothing is lost; some answers may repeat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streaminfer.monitoring.observability.endpoint import MetricsAccess, serve_metrics, stop_serving
from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.process import tune_gc_for_streaming
from streaminfer.streams.errors import KafkaNotAuthorized
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.pipeline.cache_shared import shared_store
from streaminfer.streams.pipeline.enrichment import feast_enricher
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.security.authorization import pipeline_refusal
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.execution.local import LocalPool
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from streaminfer.workers.settings import RuntimeSettings


class ConsumerActor:
    def __init__(
        self,
        index: int,
        label: str,
        repository_root: str,
        model_names: list[str],
        kafka: KafkaSettings,
        topics: TopicSettings,
        pipeline: PipelineSettings,
        runtime: RuntimeSettings,
        metrics_host: str | MetricsAccess | None,
        features: FeatureSettings | None = None,
        hash_key: SecretStr | None = None,
    ) -> None:
        self.index = index
        self.label = label
        self._repository = ModelRepository(Path(repository_root), hash_key)  # privacy.hash_key
        self._model_names = model_names
        self._kafka, self._topics, self._pipeline_settings = kafka, topics, pipeline
        self._runtime = runtime
        self._metrics_host = metrics_host
        self._features = features
        self._models: ServedModels | None = None
        self._pipeline: Pipeline | None = None
        self._metrics_url: str | None = None
        self._metrics_server: object | None = None

    async def ensure_started(self) -> dict[str, object]:
        """Idempotent: starts the pipeline the first time and after Ray restarted this actor."""
        if self._pipeline is None:
            tune_gc_for_streaming(self._pipeline_settings.gc_gen0_threshold)
            models = ServedModels(
                self._repository,
                self._model_names[0],
                lambda entry: LocalPool(entry, self._runtime, label=f"{self.label}/{entry.name}/{entry.version}"),
            )
            for name in self._model_names:
                await models.serve(name)
            registry = CollectorRegistry()
            if self._metrics_host is not None:
                self._metrics_server, self._metrics_url = serve_metrics(self._metrics_host, 0, registry)
            pipeline = Pipeline(
                self._kafka, self._topics, self._pipeline_settings, models, PipelineMetrics(registry), label=self.label,
                enricher=feast_enricher(self._features) if self._features is not None else None,
                shared_cache=shared_store(self._features),
            )
            try:
                await pipeline.start()
            except Exception as exc:
                if (refusal := self._refusal(exc)) is not None:
                    raise refusal from None
                raise
            self._models, self._pipeline = models, pipeline
        return await self.describe()

    async def describe(self) -> dict[str, object]:
        providers: list[str] = []
        if self._models is not None:
            for served in self._models.all():
                providers.extend(p for d in await served.pool.describe() for p in cast("list[str]", d["providers"]))
        pipeline = self._pipeline
        return {
            "label": self.label,
            "pid": os.getpid(),
            "providers": sorted(set(providers)),
            "metrics_url": self._metrics_url,
            "partitions": sorted(tp.partition for tp in pipeline.assignment()) if pipeline else [],
            "batch_sizes": pipeline.batch_sizes() if pipeline else [],
            "pauses": pipeline.pauses if pipeline else 0,
            "failed": repr(pipeline.failure) if pipeline and pipeline.failure else None,
            "not_authorized": self._refusal(pipeline.failure) if pipeline and pipeline.failure else None,
        }

    def _refusal(self, failure: BaseException) -> KafkaNotAuthorized | None:
        """A failure that is a missing ACL, as the error that names it (it pickles to the driver)."""
        return pipeline_refusal(failure, self._kafka, self._topics)

    async def stop(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await pipeline.stop()
        models, self._models = self._models, None
        if models is not None:
            await models.stop()
        server, self._metrics_server = self._metrics_server, None
        stop_serving(server)
