"""The consume → decode → infer → produce → commit loop.

Guarantees, in order of importance:

1. Nothing accepted is lost: a record's offset is committed only after it has ended as a
   prediction or a dead letter that the broker acknowledged (see ``streams.offsets``).
2. A bad record never takes good ones down: decoding errors are per record, and a batch that
   ONNX Runtime rejects is split in halves until the failing request is isolated.
3. Memory is bounded: at most ``max_inflight_batches`` batches sit between fetch and commit;
   the fetch loop waits for a free slot.

If the broker refuses to acknowledge what we produce, the pipeline stops without committing, so
a restart re-reads those records (at-least-once; duplicates are possible, losses are not).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from monitoring.metrics import PREDICTED, PipelineMetrics
from schemas.errors import RequestError, StreamInferError
from streams.batch import Decoded, check_deadline, decode_record, split_predictions, stack_inputs
from streams.clients import make_consumer, make_producer, start_client
from streams.delivery import AtLeastOnceDelivery, Delivery
from streams.offsets import OffsetTracker
from streams.records import Outgoing, dead_letter_record, prediction_record
from streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from workers.errors import InferenceFailed, WorkersUnavailable
from workers.served import ServedModel, ServedModels

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: PipelineSettings,
        models: ServedModels,
        metrics: PipelineMetrics,
    ) -> None:
        self._kafka = kafka
        self._topics = topics
        self._settings = settings
        self._models = models
        self._metrics = metrics
        self._tracker = OffsetTracker()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._delivery: Delivery | None = None
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._slots = asyncio.Semaphore(self._settings.max_inflight_batches)
        self._producer = make_producer(self._kafka)
        self._consumer = make_consumer(self._kafka)
        await start_client(self._producer, self._kafka.bootstrap)
        self._consumer.subscribe([self._topics.requests], listener=_DrainOnRevoke(self))
        await start_client(self._consumer, self._kafka.bootstrap)
        self._delivery = AtLeastOnceDelivery(self._producer, self._consumer, self._tracker)
        self._tasks = [
            self._watch(asyncio.create_task(self._consume_loop(), name="consume")),
            self._watch(asyncio.create_task(self._commit_loop(), name="commit")),
        ]

    async def wait(self) -> None:
        """Until stopped; re-raises the error that stopped the pipeline, if one did."""
        await self._stopping.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Finish what is in flight, commit it, and close the clients. Safe to call twice."""
        self._stopping.set()
        for task in self._tasks:
            if task is not asyncio.current_task():
                await asyncio.gather(task, return_exceptions=True)
        self._tasks = []
        await self._drain()
        if self._failure is None and self._delivery is not None:
            await self._delivery.commit()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def assignment(self) -> set[TopicPartition]:
        """Partitions this pipeline consumes now (the group decides; scales with partitions)."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    async def __aenter__(self) -> "Pipeline":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _watch(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self._failure is None:
            self._failure = task.exception()
            log.error("pipeline stopping: %r", self._failure)
        self._stopping.set()

    async def _consume_loop(self) -> None:
        assert self._consumer is not None and self._slots is not None
        while not self._stopping.is_set():
            fetched = await self._consumer.getmany(
                timeout_ms=self._settings.poll_timeout_ms, max_records=self._settings.max_batch_size
            )
            records = [record for batch in fetched.values() for record in batch]
            if not records:
                continue
            for record in records:
                self._tracker.track(TopicPartition(record.topic, record.partition), record.offset)
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(records))
            self._inflight.add(task)
            self._watch(task)
            self._metrics.inflight_batches.set(len(self._inflight))

    async def _commit_loop(self) -> None:
        assert self._delivery is not None
        interval = self._settings.commit_interval_ms / 1000
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            if self._failure is None:
                await self._delivery.commit()
            self._metrics.pending_records.set(self._tracker.pending_count())

    async def _drain(self) -> None:
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def _handle(self, records: list[ConsumerRecord]) -> None:
        assert self._delivery is not None and self._slots is not None
        try:
            outgoing: list[Outgoing] = []
            groups: dict[int, list[Decoded]] = {}
            for record in records:
                try:
                    item = decode_record(record, self._models)
                except RequestError as exc:
                    outgoing.append(self._dead_letter(record, exc))
                    continue
                groups.setdefault(id(item.served), []).append(item)
            for produced in await asyncio.gather(*(self._run_group(items) for items in groups.values())):
                outgoing.extend(produced)
            await self._delivery.deliver(outgoing)
            self._count(outgoing)
        finally:
            self._slots.release()
            self._metrics.inflight_batches.set(len(self._inflight) - 1)

    async def _run_group(self, items: list[Decoded]) -> list[Outgoing]:
        """Expire late requests, then run the rest as one batch on their model's pool."""
        live: list[Decoded] = []
        outgoing: list[Outgoing] = []
        now_ms = int(time.time() * 1000)
        for item in items:
            try:
                check_deadline(item, now_ms)
            except RequestError as exc:
                outgoing.append(self._dead_letter(item.record, exc, item))
            else:
                live.append(item)
        if live:
            outgoing.extend(await self._infer(live[0].served, live))
        return outgoing

    async def _infer(self, served: ServedModel, items: list[Decoded]) -> list[Outgoing]:
        """One batch through the pool; on an ONNX Runtime error, bisect to isolate the bad rows."""
        started = time.perf_counter()
        try:
            outputs = await served.pool.infer(stack_inputs(items))
        except InferenceFailed as exc:
            if len(items) == 1:
                return [self._dead_letter(items[0].record, exc, items[0])]
            mid = len(items) // 2
            left, right = await asyncio.gather(self._infer(served, items[:mid]), self._infer(served, items[mid:]))
            return left + right
        except WorkersUnavailable as exc:
            return [self._dead_letter(item.record, exc, item) for item in items]
        model = served.entry.name
        self._metrics.inference_seconds.labels(model).observe(time.perf_counter() - started)
        self._metrics.batch_size.labels(model).observe(len(items))
        predictions = split_predictions(items, outputs)
        return [
            prediction_record(self._topics.predictions, item.record, prediction, item.headers.trace)
            for item, prediction in zip(items, predictions)
        ]

    def _dead_letter(self, record: ConsumerRecord, exc: StreamInferError, item: Decoded | None = None) -> Outgoing:
        reason = getattr(exc, "reason")
        return dead_letter_record(
            self._topics.deadletter,
            record,
            reason,
            str(exc),
            model=item.served.entry.name if item else None,
            request_id=item.request_id if item else None,
        )

    def _count(self, outgoing: Sequence[Outgoing]) -> None:
        now_ms = time.time() * 1000
        for out in outgoing:
            outcome = PREDICTED if out.reason is None else out.reason.value
            self._metrics.requests.labels(out.model or "", out.version or "", outcome).inc()
            if out.reason is None:
                latency_s = max(0.0, now_ms - out.request_timestamp_ms) / 1000
                self._metrics.end_to_end_seconds.labels(out.model).observe(latency_s)


class _DrainOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another consumer, finish and commit what we hold of them,
    so the new owner does not answer those requests a second time."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pipeline = self._pipeline
        await pipeline._drain()
        if pipeline._delivery is not None and pipeline._failure is None:
            await pipeline._delivery.commit()
        pipeline._tracker.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
