"""The registry actor: the driver's registry for actors on nodes without the driver's disk.

It runs on the driver's node (the app pins it there), where the model repository is. As a side
service in the shell of ``actors.service`` it publishes the registry's documents on the control
topic (``streams.control.bridge``); besides, it hands out the files of a version to consumers that
fetch them (``workers.models.distribution.ObjectStoreSource``): its answer goes through Ray's
object store to the asking node, which checks it against the version's manifest.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from streaminfer.actors.service import Service, ServiceActor
from streaminfer.monitoring.observability.endpoint import MetricsAccess
from streaminfer.streams.settings import KafkaSettings
from streaminfer.streams.topics import TopicSpec
from streaminfer.workers.errors import ArtifactInvalid
from streaminfer.workers.models.distribution import is_plain_name

REGISTRY_ACTOR = "registry"
"""The actor's name in the pool's namespace; consumers look it up by this name."""


@dataclass(frozen=True)
class RegistryBuilder:
    """The bridge, built inside the actor. ``repository_root`` must be absolute."""

    repository_root: Path
    kafka: KafkaSettings
    control: TopicSpec
    every_s: float
    label: str = REGISTRY_ACTOR

    def __call__(self, registry: CollectorRegistry) -> Service:
        from streaminfer.monitoring.observability.metrics import RegistryBridgeMetrics
        from streaminfer.streams.clients import KafkaClients
        from streaminfer.streams.control.bridge import RegistryBridge

        return RegistryBridge(self.repository_root, KafkaClients(self.kafka), self.control, self.every_s,
                              RegistryBridgeMetrics(registry))


class RegistryActor(ServiceActor):
    def __init__(self, build: RegistryBuilder, metrics_host: str | MetricsAccess | None) -> None:
        super().__init__(build, metrics_host)
        self._root = build.repository_root

    async def artifact(self, name: str, version: str, file: str) -> bytes:
        """One file of a version, as it is on the driver's node."""
        if not all(is_plain_name(part) for part in (name, version, file)):
            raise ArtifactInvalid(f"{name}/{version}/{file}", "is not a file of a version")
        path = self._root / name / version / file
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise ArtifactInvalid(str(path), f"cannot be read on the driver's node: {exc}") from exc
