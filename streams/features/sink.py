"""The feature sink: rows and prediction logs from Kafka into the Feast repository, batched.

A plain consumer group with manual commits rather than a Faust agent: offsets move only after a
batch is written or, when the store keeps refusing it, after its records are dead letters on the
features dead-letter topic. A failed write is retried with exponential backoff and jitter; the
write itself runs in a thread, so the consumer keeps its group membership while Feast works.
The sink is its own consumer group, so however slow the store, the inference path never waits
for it: the backlog waits in Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.observability.metrics import FeatureSinkMetrics
from streaminfer.schemas.deadletter import Reason, error_headers
from streaminfer.streams.clients import KafkaClients, start_client
from streaminfer.streams.features.frames import (
    latest_per_entity,
    log_frame,
    offline_rows,
    online_rows,
    stats_frame,
)
from streaminfer.streams.features.offline import append_rows
from streaminfer.streams.features.records import decode_log, decode_row
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import (
    CREATED,
    ENTITY_KEY,
    LOG_VIEW,
    REQUEST_KEY,
    STATS_PUSH,
    STATS_VIEW,
    TIMESTAMP,
    offline_path,
    window_spec,
)
from streaminfer.streams.settings import KafkaSettings

log = logging.getLogger(__name__)


class FeatureWriter(Protocol):
    """Blocking writes (they run in a thread); raise on failure."""

    def write_stats(self, frame: Any) -> None: ...

    def write_log(self, frame: Any) -> None: ...


class FeastWriter:
    """Online rows through Feast's push source; offline rows straight into the push source's
    batch files (see ``streams.features.offline`` for why)."""

    def __init__(self, store: Any, settings: FeatureSettings) -> None:
        self._store = store
        self._stats_path = offline_path(settings, STATS_VIEW)
        self._log_path = offline_path(settings, LOG_VIEW)

    def write_stats(self, frame: Any) -> None:
        from feast.data_source import PushMode

        online = online_rows(frame)
        if not online.empty:
            self._store.push(STATS_PUSH, online, to=PushMode.ONLINE)
        append_rows(self._stats_path, offline_rows(frame), keys=[ENTITY_KEY, TIMESTAMP], newest_by=CREATED)

    def write_log(self, frame: Any) -> None:
        append_rows(self._log_path, frame, keys=[REQUEST_KEY])


def backoff_s(attempt: int, base_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, base * 2^attempt], so retrying sinks do not hit the store in step."""
    return rng.uniform(0, base_s * (2**attempt))


class FeatureSink:
    def __init__(self, kafka: KafkaSettings, settings: FeatureSettings, writer: FeatureWriter,
                 metrics: FeatureSinkMetrics, clients: KafkaClients | None = None) -> None:
        """``clients`` builds the consumer and the producer (``KafkaClients(kafka)`` unless given)."""
        self._kafka, self._settings = kafka, settings
        self._clients = clients if clients is not None else KafkaClients(kafka)
        self._writer, self._metrics = writer, metrics
        self._names = window_spec(settings).feature_names()
        self._rng = random.Random()
        self._stopping = asyncio.Event()
        self.written = {"rows": 0, "logs": 0}
        self.first_fetch_at: float | None = None
        """``time.perf_counter()`` when the first records arrived (after the group join)."""

    async def run(self) -> None:
        """Until ``stop()``: fetch a batch, write it (or dead-letter it), commit, repeat."""
        topics = self._settings.topics
        consumer = self._clients.consumer(topics.rows, topics.log, group_id=self._settings.sink_group_id)
        producer = self._clients.producer()
        await start_client(producer, self._kafka.bootstrap)
        await start_client(consumer, self._kafka.bootstrap)
        try:
            while not self._stopping.is_set():
                fetched = await consumer.getmany(
                    timeout_ms=self._settings.sink_batch_wait_ms, max_records=self._settings.sink_batch_rows
                )
                records = [r for batch in fetched.values() for r in batch]
                if records:
                    self.first_fetch_at = self.first_fetch_at or time.perf_counter()
                    await self._write(records, producer)
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def _write(self, records: list[ConsumerRecord], producer: Any) -> None:
        rows = [r for r in records if r.topic == self._settings.topics.rows]
        logs = [r for r in records if r.topic == self._settings.topics.log]
        if rows:
            frame = stats_frame([decode_row(r.value) for r in rows], self._names)
            if await self._with_retries(self._writer.write_stats, frame, rows, producer, STATS_VIEW):
                self._metrics.rows_written.labels(STATS_VIEW, "online").inc(len(latest_per_entity(frame)))
                self._metrics.rows_written.labels(STATS_VIEW, "offline").inc(len(frame))
                self.written["rows"] += len(rows)
        if logs:
            frame = log_frame([decode_log(r.value) for r in logs])
            if await self._with_retries(self._writer.write_log, frame, logs, producer, LOG_VIEW):
                self._metrics.rows_written.labels(LOG_VIEW, "offline").inc(len(frame))
                self.written["logs"] += len(logs)

    async def _with_retries(self, write: Any, frame: Any, records: Sequence[ConsumerRecord], producer: Any,
                            view: str) -> bool:
        started = time.perf_counter()
        error: BaseException | None = None
        for attempt in range(self._settings.sink_retries + 1):
            if attempt:
                self._metrics.write_retries.inc()
                await asyncio.sleep(backoff_s(attempt - 1, self._settings.sink_retry_backoff_s, self._rng))
            try:
                await asyncio.to_thread(write, frame)
                self._metrics.write_seconds.observe(time.perf_counter() - started)
                return True
            except Exception as exc:  # noqa: BLE001 - any store failure is retried, then dead-lettered
                error = exc
                log.warning("feature store write of %d %s rows failed (attempt %d): %r", len(frame), view, attempt + 1, exc)
        await self._dead_letter(records, producer, view, error)
        return False

    async def _dead_letter(self, records: Sequence[ConsumerRecord], producer: Any, view: str,
                           error: BaseException | None) -> None:
        topic = self._settings.topics.deadletter
        message = f"writing {view} to the feature store failed after {self._settings.sink_retries} retries: {error!r}"
        sends = [
            await producer.send(
                topic, r.value, key=r.key,
                headers=list(r.headers) + error_headers(
                    reason=Reason.FEATURE_WRITE_FAILED, message=message, topic=r.topic,
                    partition=r.partition, offset=r.offset),
            )
            for r in records
        ]
        await asyncio.gather(*sends)
        self._metrics.dead_letters.labels(view).inc(len(records))
