"""A consuming Ray actor: one member of the consumer group with its own sessions.

Each actor runs a whole pipeline (its own Kafka consumer and producer, a dynamic batcher and
in-process ONNX Runtime sessions), so no call crosses a process boundary on the hot path and the
actors use the cores in parallel. The group spreads the partitions over them.

If an actor dies, Ray restarts it (``__init__`` again) and the supervisor's next
``ensure_started`` call rejoins the group; records it had not committed are read again by
whichever member owns their partition then. Nothing is lost; some answers may repeat.

Where the model repository is not readable (another node, no shared disk; ``ray.repository``),
the actor serves from a node-local mirror that follows the control topic (``streams.control``),
with model files from the driver's registry actor or the model store: the routing code reads the
mirror as it reads the repository, so promotions and traffic policies apply the same way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import cast

import ray
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streaminfer.monitoring.observability.endpoint import MetricsAccess, serve_metrics, stop_serving
from streaminfer.monitoring.observability.metrics import MirrorMetrics, PipelineMetrics
from streaminfer.process import tune_gc_for_streaming
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.control.mirror import ControlFollower, Mirror
from streaminfer.streams.errors import KafkaNotAuthorized
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.pipeline.cache_shared import shared_store
from streaminfer.streams.pipeline.enrichment import feast_enricher
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.security.authorization import pipeline_refusal
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.execution.local import LocalPool
from streaminfer.workers.models.distribution import ArtifactCache, ArtifactSource, ObjectStoreSource, StoreSource
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from streaminfer.workers.settings import RaySettings, RuntimeSettings


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
        cluster: RaySettings | None = None,
        namespace: str = "streaminfer",
    ) -> None:
        self.index = index
        self.label = label
        self._repository = ModelRepository(Path(repository_root), hash_key)  # privacy.hash_key
        self._cluster = cluster or RaySettings()
        self._namespace = namespace
        """Of the registry actor (``pool.namespace``): an actor's own is not the one it was named in."""
        self._follower: ControlFollower | None = None
        self._model_names = model_names
        self._kafka, self._topics, self._pipeline_settings = kafka, topics, pipeline
        self._runtime = runtime
        self._metrics_host = metrics_host
        self._features = features
        self._models: ServedModels | None = None
        self._pipeline: Pipeline | None = None
        self._metrics_url: str | None = None
        self._metrics_server: object | None = None
        self._starting = asyncio.Lock()
        self._stopped = False
        """Set by ``stop()``: a drained actor answers ``ensure_started`` without rejoining the group."""

    async def ensure_started(self) -> dict[str, object]:
        """Idempotent: starts the pipeline the first time and after Ray restarted this actor.

        Calls are serialised (an async actor runs them concurrently, and two starts would open two
        pipelines in one group member); after ``stop()`` it starts nothing again."""
        async with self._starting:
            if self._pipeline is None and not self._stopped:
                await self._start()
        return await self.describe()

    async def _start(self) -> None:
        registry = CollectorRegistry()
        if self._follower is None and not self._reads_locally():
            await self._follow_the_registry(MirrorMetrics(registry))
        tune_gc_for_streaming(self._pipeline_settings.gc_threshold)
        models = ServedModels(
            self._repository,
            self._model_names[0],
            lambda entry: LocalPool(entry, self._runtime, label=f"{self.label}/{entry.name}/{entry.version}"),
        )
        for name in self._model_names:
            await models.serve(name)
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

    async def describe(self) -> dict[str, object]:
        providers: list[str] = []
        if self._models is not None:
            for served in self._models.all():
                providers.extend(p for d in await served.pool.describe() for p in cast("list[str]", d["providers"]))
        pipeline = self._pipeline
        follower = self._follower
        failure = pipeline.failure if pipeline else None
        return {
            "label": self.label,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "repository": "mirror" if follower is not None else "local",
            "mirror_refused": dict(follower.mirror.refused) if follower is not None else {},
            "providers": sorted(set(providers)),
            "metrics_url": self._metrics_url,
            "partitions": sorted(tp.partition for tp in pipeline.assignment()) if pipeline else [],
            "batch_sizes": pipeline.batch_sizes() if pipeline else [],
            "pauses": pipeline.pauses if pipeline else 0,
            "failed": repr(stopped) if (stopped := failure or (follower.failure if follower else None)) else None,
            "not_authorized": self._refusal(failure) if failure else None,
        }

    def _reads_locally(self) -> bool:
        """``ray.repository``; ``auto``: the served models are readable where the driver has them."""
        mode = self._cluster.repository
        if mode != "auto":
            return mode == "local"
        return all(self._repository.versions(name) for name in self._model_names)

    async def _follow_the_registry(self, metrics: MirrorMetrics) -> None:
        """Serve from a mirror of this actor's own under the node's cache, filled from the
        control topic before the pipeline starts."""
        # imported here, on clusters only: it brings the side services' settings into every consumer
        from streaminfer.actors.registry import REGISTRY_ACTOR

        cache = self._cluster.cache_dir or Path(tempfile.gettempdir()) / "streaminfer"
        root = cache / "mirrors" / f"{self.label}-{os.getpid()}"
        shutil.rmtree(root, ignore_errors=True)
        source: ArtifactSource = (
            StoreSource(self._cluster.model_store) if self._cluster.model_store
            else ObjectStoreSource(ray.get_actor(REGISTRY_ACTOR, namespace=self._namespace))
        )
        follower = ControlFollower(KafkaClients(self._kafka), self._topics.control,
                                   Mirror(root, ArtifactCache(cache / "artifacts", source)), metrics=metrics)
        await follower.start()
        self._follower = follower
        self._repository = ModelRepository(root, self._repository.hash_key)

    def _refusal(self, failure: BaseException) -> KafkaNotAuthorized | None:
        """A failure that is a missing ACL, as the error that names it (it pickles to the driver)."""
        return pipeline_refusal(failure, self._kafka, self._topics)

    async def stop(self) -> None:
        self._stopped = True
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await pipeline.stop()
        models, self._models = self._models, None
        if models is not None:
            await models.stop()
        server, self._metrics_server = self._metrics_server, None
        stop_serving(server)
        follower, self._follower = self._follower, None
        if follower is not None:
            await follower.stop()
            shutil.rmtree(follower.mirror.root, ignore_errors=True)
