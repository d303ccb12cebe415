"""A consumer's side of the control topic: a node-local mirror of the model repository.

``Mirror`` writes documents where the repository has them: a model's documents atomically (the
registry's readers poll their modification time and inode, so a new file is a change), a version's
manifest as the version's files, fetched and checked by sha256 (``workers.models.distribution``),
its ``metadata.json`` last; a line-per-record file (the audit log) from its segments, written whole
again when one changes. A tombstone removes the document, or the version. A version whose files cannot be fetched or
do not match their manifest is left out of the mirror (logged and counted in ``refused``), not
fatal: a file rewritten while the driver hashed it is published again with its new digest.

``ControlFollower`` reads the topic from its beginning, without a group: ``start()`` returns once
the mirror holds everything published before it started (a consumer serves nothing older than
the registry), then a background task applies each record as it arrives, in the order published.
Contract as elsewhere: ``start()``/``stop()`` safe to call twice; a task that dies sets ``failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from streaminfer.monitoring.observability.metrics import MirrorMetrics
from streaminfer.streams.clients import KafkaClients, start_client
from streaminfer.streams.control.documents import is_manifest, is_segment, split_key
from streaminfer.streams.errors import ControlTopicBehind
from streaminfer.workers.errors import ArtifactInvalid
from streaminfer.workers.models.distribution import ArtifactCache, VersionManifest

log = logging.getLogger(__name__)


class Mirror:
    def __init__(self, root: Path, artifacts: ArtifactCache) -> None:
        self.root = Path(root)
        self.artifacts = artifacts
        self.applied = 0
        self.refused: dict[str, str] = {}
        """Versions left out, by key: why."""
        self._segments: dict[tuple[str, str], dict[str, bytes]] = {}

    async def apply(self, key: str, value: bytes | None) -> None:
        parts = split_key(key)
        if parts is None:
            log.warning("control topic: ignoring a record keyed %r (not a registry document)", key)
            return
        if is_segment(parts):
            self._apply_segment(parts, value)
        elif value is None and self._segments.get((parts[0], parts[1])):
            pass  # the whole-file key of an older publisher, superseded by the segments held
        elif is_manifest(key):
            try:
                await self._apply_version(parts[0], parts[1], value)
            except ArtifactInvalid as exc:
                log.error("control topic: leaving %s/%s out of the mirror: %s", parts[0], parts[1], exc)
                self.refused[key] = str(exc)
                return
            self.refused.pop(key, None)
        else:
            path = self.root / parts[0] / parts[1]
            if value is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(path, value)
        self.applied += 1

    def _apply_segment(self, parts: tuple[str, ...], value: bytes | None) -> None:
        """Keep the segment and write the whole file again from the segments in order."""
        model, file, number = parts
        held = self._segments.setdefault((model, file), {})
        if value is None:
            held.pop(number, None)
        else:
            held[number] = value
        path = self.root / model / file
        if not held:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, b"".join(held[n] for n in sorted(held)))

    async def _apply_version(self, name: str, version: str, value: bytes | None) -> None:
        directory = self.root / name / version
        if value is None:
            shutil.rmtree(directory, ignore_errors=True)
            return
        manifest = msgspec.json.decode(value, type=VersionManifest)
        await self.artifacts.materialize(name, version, manifest, directory)


class ControlFollower:
    def __init__(
        self, clients: KafkaClients, topic: str, mirror: Mirror, *, poll_timeout_ms: int = 100,
        metrics: MirrorMetrics | None = None,
    ) -> None:
        self._clients = clients
        self._metrics = metrics
        self._partition = TopicPartition(topic, 0)  # declared with one partition (streams.topics)
        self.mirror = mirror
        self._poll_timeout_ms = poll_timeout_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.position = 0
        self.failure: BaseException | None = None

    async def start(self, catch_up_s: float = 60.0) -> None:
        """Assign the topic from its beginning and apply everything published so far."""
        if self._task is not None:
            return
        consumer = self._clients.consumer(group_id=None)
        await start_client(consumer, self._clients.kafka.bootstrap)
        self._consumer, self.failure = consumer, None
        try:
            consumer.assign([self._partition])
            await consumer.seek_to_beginning(self._partition)
            self.position = 0
            end = (await consumer.end_offsets([self._partition]))[self._partition]
            try:
                await asyncio.wait_for(self._catch_up(end), catch_up_s)
            except asyncio.TimeoutError:
                raise ControlTopicBehind(self._partition.topic, self.position, end, catch_up_s) from None
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._follow(), name=f"follow-{self._partition.topic}")
        self._task.add_done_callback(self._done)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> ControlFollower:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _catch_up(self, end: int) -> None:
        while self.position < end:
            await self._fetch_and_apply()

    async def _follow(self) -> None:
        while True:
            await self._fetch_and_apply()

    async def _fetch_and_apply(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(self._partition, timeout_ms=self._poll_timeout_ms)
        records = batches.get(self._partition, [])
        for record in records:
            key = record.key.decode() if record.key is not None else ""
            await self.mirror.apply(key, record.value)
            self.position = record.offset + 1
        if self._metrics is not None:
            self._metrics.applied.inc(len(records))
            end = self._consumer.highwater(self._partition)
            self._metrics.lag.set(max(0, end - self.position) if end is not None else 0)
            self._metrics.refused.set(len(self.mirror.refused))

    def _done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            if (error := task.exception()) is not None:
                self.failure = error
                log.error("control topic follower stopped: %r", error)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
