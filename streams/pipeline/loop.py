"""The consume → decode → batch → infer → produce → commit loop.

Guarantees, in order of importance:

1. Nothing accepted is lost: a record's offset is committed only after it has ended as a
   prediction or a dead letter that the broker acknowledged (see ``streams.offsets``).
2. A bad record never takes good ones down: decoding errors are per record, and a batch that
   ONNX Runtime rejects is split until the failing request is isolated (``streams.pipeline.batcher``).
3. Memory is bounded: at most ``max_inflight_batches`` fetched batches sit between fetch and
   acknowledgement; while all are in flight the consumer pauses its partitions.
4. Stages overlap while a backlog waits (``overlap_from_backlog``): while one batch runs on the
   model, the next is fetched and decoded and the previous one is produced and committed. A
   consumer that keeps up fetches once its batch is acknowledged, so it spends its CPU on
   requests rather than on many small fetches.

If the broker refuses to acknowledge what we produce, or a bug surfaces, the pipeline stops
without committing, so a restart re-reads those records (at-least-once: no loss, maybe repeats).
With ``pipeline.guarantee = "exactly_once"`` the outputs and offsets commit in Kafka transactions
instead (``streams.pipeline.transactional``): no repeats either, as ``read_committed`` readers see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.cost.meter import CostMeter
from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.schemas.errors import RequestError, UndecodableRequest
from streaminfer.schemas.monitoring_events import encode_event
from streaminfer.streams.clients import KafkaClients, start_client
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.accounting import Accounting
from streaminfer.streams.pipeline.answers import answer, dead_letter, shadow_answer
from streaminfer.streams.pipeline.cache import SharedStore
from streaminfer.streams.pipeline.decoding import Decoded, decode_record
from streaminfer.streams.pipeline.delivery import AtLeastOnceDelivery, Delivery
from streaminfer.streams.pipeline.enrichment import Enricher
from streaminfer.streams.pipeline.health import HealthWindow
from streaminfer.streams.pipeline.outgoing import Outgoing, source_of
from streaminfer.streams.pipeline.transactional import TransactionalDelivery
from streaminfer.streams.pipeline.version_batchers import ModelBatchers
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.routing.served import ServedModels, VersionKey

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: PipelineSettings,
        models: ServedModels,
        metrics: PipelineMetrics,
        concurrent_batches: int = 1,
        label: str = "driver",
        enricher: Enricher | None = None,
        clients: KafkaClients | None = None,
        clock: Clock = SYSTEM_CLOCK,
        shared_cache: SharedStore | None = None,
    ) -> None:
        """``concurrent_batches``: inference batches per model at once (the pool's worker count);
        ``label`` names this consumer in its health reports; ``enricher`` adds online features
        to the requests of models that ask for them; ``clients`` builds the consumer and the
        producer (``KafkaClients(kafka)`` unless given); ``clock`` is what intervals, stop
        timeouts, batching deadlines and latencies are measured on; ``shared_cache``: where model
        versions whose cache policy says ``shared`` share answers (``streams.pipeline.cache``); the
        pipeline closes it when it stops."""
        self._kafka = kafka
        self._clients = clients if clients is not None else KafkaClients(kafka)
        self._clock = clock
        self._topics = topics
        self._settings = settings
        self._models = models
        self._metrics = metrics
        self._enricher = enricher
        self._tracker = OffsetTracker()
        self._cost = CostMeter(settings.cost, metrics, now=clock.time)
        self._batchers = ModelBatchers(models, settings, metrics, concurrent_batches, clock, shared_cache, self._cost)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._delivery: Delivery | None = None
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._fetched_through: dict[TopicPartition, int] = {}
        """Per partition, the offset after the last record fetched (what the backlog is counted from)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        self._started = False
        self.pauses = 0
        self._health = HealthWindow(label, settings.health_interval_s, clock)
        self._accounting = Accounting(metrics, self._cost, self._health, clock)
        self._disconnected_at: float | None = None
        self._listener = _DrainOnRevoke(self)
        self._rejoin_wanted = asyncio.Event()  # exactly-once: a partition was fenced outside a rebalance

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._slots = asyncio.Semaphore(self._settings.max_inflight_batches)
        enriched = [s.entry.name for s in self._models.all() if s.entry.metadata.enrichment is not None]
        if enriched and self._enricher is None:
            raise ValueError(f"models {', '.join(enriched)} enrich requests from the feature store, "
                             "but this pipeline was given no enricher")
        self._batchers.start()
        self._producer = self._clients.producer()
        self._consumer = self._clients.consumer()
        await start_client(self._producer, self._kafka.bootstrap)
        if self._settings.guarantee == "exactly_once":
            self._delivery = TransactionalDelivery(self._clients, self._consumer, self._tracker, self._broker_connected,
                                                   self._stopping, fenced=self._fenced,
                                                   patience_s=self._kafka.request_timeout_ms / 1000)
        else:
            self._delivery = AtLeastOnceDelivery(self._producer, self._consumer, self._tracker,
                                                 self._broker_connected, self._stopping,
                                                 patience_s=self._kafka.request_timeout_ms / 1000)
        self._consumer.subscribe([self._topics.requests], listener=self._listener)
        await start_client(self._consumer, self._kafka.bootstrap)
        self._tasks = [
            self._watch(asyncio.create_task(self._consume_loop(), name="consume")),
            self._watch(asyncio.create_task(self._commit_loop(), name="commit")),
            self._watch(asyncio.create_task(self._routing_loop(), name="routing")),
        ]

    async def wait(self) -> None:
        """Until stopped; re-raises the error that stopped the pipeline, if one did."""
        await self._stopping.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Finish what is in flight, commit it, and close the clients. Safe to call twice."""
        self._stopping.set()
        await self._end_loops()
        await self._drain()
        await self._batchers.stop()
        self._cost.settle()
        if self._failure is None and self._delivery is not None:
            await self._within_stop_timeout(self._delivery.commit(), "final commit")
        if self._delivery is not None:
            await self._delivery.close()
        if self._consumer is not None:
            await self._within_stop_timeout(self._consumer.stop(), "leaving the consumer group")
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _end_loops(self) -> None:
        """The loops notice ``_stopping`` at their next turn; a fetch parked in a rebalance that
        does not finish is cancelled instead (its records were not tracked, so none is lost)."""
        loops = [task for task in self._tasks if task is not asyncio.current_task()]
        self._tasks = []
        if not loops:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await self._clock.wait_for(asyncio.wait(loops), self._settings.stop_step_timeout_s)
        late = [task for task in loops if not task.done()]
        for task in late:
            log.warning("pipeline stop: %s did not finish in %.0f s; cancelled", task.get_name(),
                        self._settings.stop_step_timeout_s)
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    async def _within_stop_timeout(self, step: Awaitable[None], what: str) -> None:
        try:
            await self._clock.wait_for(step, self._settings.stop_step_timeout_s)
        except asyncio.TimeoutError:
            log.warning("pipeline stop: %s took over %.0f s; skipped (uncommitted records are redelivered)",
                        what, self._settings.stop_step_timeout_s)
        except KafkaError as exc:
            log.warning("pipeline stop: %s failed: %r (uncommitted records are redelivered)", what, exc)

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the pipeline, if one did."""
        return self._failure

    def assignment(self) -> set[TopicPartition]:
        """Partitions this pipeline consumes now (the group decides; scales with partitions)."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def batch_sizes(self) -> list[int]:
        """Recent inference batch sizes, all models together."""
        return self._batchers.batch_sizes()

    async def __aenter__(self) -> Pipeline:
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
        self._fail(task.exception())

    def _broker_connected(self, up: bool) -> None:
        """Sends or commits the broker could not take are being retried (``up=False``), or one
        went through again: one log line each way, and the ``broker_connected`` gauge."""
        if up == (self._disconnected_at is None):
            return
        self._metrics.broker_connected.set(1 if up else 0)
        if up:
            log.warning("broker %s is back after %.0f s: sending and committing again", self._kafka.bootstrap,
                        self._clock.monotonic() - (self._disconnected_at or 0.0))
            self._disconnected_at = None
        else:
            self._disconnected_at = self._clock.monotonic()
            log.warning("broker %s disconnected: predictions and commits wait and are retried until it is back",
                        self._kafka.bootstrap)

    def _fenced(self, rejoin: bool) -> None:
        """Exactly-once: a partition was given up to the member that took over its transactional id;
        outside a rebalance, ask the group for a fresh assignment (at the commit loop's next turn)."""
        self._metrics.partitions_fenced.inc()
        if rejoin:
            self._rejoin_wanted.set()

    def _fail(self, exc: BaseException | None) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("pipeline stopping: %r", self._failure)
        self._stopping.set()

    # loops -----------------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set():
            if self._inflight and not self._backlogged():
                await asyncio.wait(list(self._inflight))
            await self._acquire_slot()
            fetched = await self._consumer.getmany(
                timeout_ms=self._settings.poll_timeout_ms, max_records=self._settings.fetch_max_records
            )
            delivery = self._delivery
            assert delivery is not None
            records: list[ConsumerRecord] = []
            for tp, batch in fetched.items():
                if batch:
                    self._fetched_through[tp] = batch[-1].offset + 1
                if batch and delivery.owns(tp):
                    self._tracker.track_all(source_of(batch[0]), [record.offset for record in batch])
                    records += batch
            if not records:
                self._release_slot()
                continue
            task = asyncio.create_task(self._handle(records))
            self._inflight.add(task)
            self._watch(task)
            self._metrics.inflight_batches.set(len(self._inflight))

    def _backlogged(self) -> bool:
        """Whether at least ``overlap_from_backlog`` requests wait in this consumer's partitions,
        by the end offsets the last fetches reported (the last stable offset when reading
        committed records only: an open transaction's records cannot be read yet)."""
        threshold = self._settings.overlap_from_backlog
        if threshold == 0:
            return True
        consumer = self._consumer
        assert consumer is not None
        end_of = consumer.last_stable_offset if self._kafka.isolation_level == "read_committed" else consumer.highwater
        waiting = 0
        for tp in consumer.assignment():
            fetched_through, end = self._fetched_through.get(tp), end_of(tp)
            if fetched_through is not None and end is not None and end > fetched_through:
                waiting += end - fetched_through  # no fetch from it yet: its backlog shows after the first
        return waiting >= threshold

    async def _acquire_slot(self) -> None:
        """Wait for room; while waiting, pause fetching so the backlog stays in Kafka."""
        assert self._slots is not None and self._consumer is not None
        if not self._slots.locked():
            await self._slots.acquire()
            return
        paused = self._consumer.assignment()
        self._consumer.pause(*paused)
        self.pauses += 1
        self._metrics.paused.set(1)
        try:
            await self._slots.acquire()
        finally:
            self._consumer.resume(*(tp for tp in self._consumer.assignment()))
            self._metrics.paused.set(0)

    def _release_slot(self) -> None:
        assert self._slots is not None
        self._slots.release()

    async def _commit_loop(self) -> None:
        assert self._delivery is not None
        transactional = self._settings.guarantee == "exactly_once"
        interval = (self._settings.transaction_interval_ms if transactional else self._settings.commit_interval_ms) / 1000
        while not self._stopping.is_set():
            await self._clock.sleep(interval)
            if self._failure is None:
                await self._delivery.commit()
            if self._rejoin_wanted.is_set() and self._consumer is not None:  # the group reassigns what we own
                self._rejoin_wanted.clear()
                self._consumer.subscribe([self._topics.requests], listener=self._listener)
            self._metrics.pending_records.set(self._tracker.pending_count())
            self._cost.settle()
            if self._consumer is not None:
                self._accounting.export_lag(self._consumer, self._tracker)
            if self._health.due():
                await self._report_health()

    async def _routing_loop(self) -> None:
        """Apply promotions, rollbacks and traffic policies live (see ``streams.pipeline.version_batchers``)."""
        while not self._stopping.is_set():
            await self._clock.sleep(self._settings.routing_poll_s)
            await self._batchers.refresh(list(self._inflight))

    async def _report_health(self) -> None:
        """Fire and forget: a health report must never hold up predictions."""
        topic = self._topics.health
        events = self._health.report(self._accounting.lag_total, self._topics.requests)
        if topic is None or self._producer is None:
            return
        for event in events:
            try:
                await self._producer.send(topic, encode_event(event), key=event.model.encode())
            except KafkaError as exc:
                log.debug("health report not sent: %s", exc)
                return

    async def _drain(self) -> None:
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    # one fetched batch -----------------------------------------------------------------------

    async def _handle(self, records: list[ConsumerRecord]) -> None:
        assert self._delivery is not None
        try:
            outgoing: list[Outgoing] = []
            decoded: list[Decoded] = []
            for record in records:
                try:
                    decoded.append(decode_record(record, self._models, self._settings.max_request_bytes))
                except RequestError as exc:
                    outgoing.append(dead_letter(self._topics, record, exc))
                except Exception as exc:  # any other decoding failure: see UndecodableRequest
                    # the type only: a message may quote the request's values (personal data);
                    # the traceback is there at DEBUG for whoever debugs with the data at hand
                    log.error("request %s-%d@%d could not be decoded: %s", record.topic, record.partition,
                              record.offset, type(exc).__name__)
                    log.debug("decoding %s-%d@%d failed", record.topic, record.partition, record.offset, exc_info=True)
                    outgoing.append(dead_letter(self._topics, record, UndecodableRequest(exc)))
            if self._enricher is not None:  # items whose features cannot be read become dead letters
                decoded, refused = await self._enricher.enrich_fetch(decoded)
                outgoing.extend(dead_letter(self._topics, item.record, error, item) for item, error in refused)
            groups: dict[VersionKey, list[Decoded]] = {}
            for item in decoded:
                groups.setdefault(item.served.key, []).append(item)
            shadows: dict[VersionKey, list[Decoded]] = {}
            for item in decoded:
                if item.route.shadow is not None:
                    shadows.setdefault(item.route.shadow.key, []).append(item)
            results = await asyncio.gather(
                *(self._batchers.submit(items[0].served, items) for items in groups.values()),
                *(self._batchers.submit(items[0].route.shadow, items, shadow=True) for items in shadows.values()),  # type: ignore[arg-type]
            )
            for items, outcomes in zip(groups.values(), results):
                outgoing.extend(answer(self._topics, item, outcome) for item, outcome in zip(items, outcomes))
            mirrored = [
                shadow_answer(self._topics, item, outcome)
                for items, outcomes in zip(shadows.values(), results[len(groups):])
                for item, outcome in zip(items, outcomes)
            ]
            await self._delivery.deliver(outgoing + mirrored if mirrored else outgoing)
            self._accounting.count(outgoing)
        finally:
            self._release_slot()
            self._metrics.inflight_batches.set(len(self._inflight) - 1)


class _DrainOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another consumer, finish and commit what we hold of them,
    so the new owner does not answer those requests a second time."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pipeline = self._pipeline
        delivery = pipeline._delivery
        if delivery is not None:
            delivery.revoking(revoked)
        await pipeline._drain()
        if delivery is not None and pipeline._failure is None:
            try:
                await delivery.commit()
            except Exception as exc:  # noqa: BLE001 - aiokafka would log a listener's error and go on: stop instead
                pipeline._fail(exc)
        if delivery is not None:
            await delivery.revoked(revoked)
        pipeline._tracker.forget(revoked)
        for tp in revoked:
            pipeline._fetched_through.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Exactly-once: take over the partitions' transactional ids before reading any record."""
        pipeline = self._pipeline
        if pipeline._delivery is None or pipeline._failure is not None:
            return
        pipeline._rejoin_wanted.clear()  # this assignment is the fresh one a fenced member asked for
        try:
            await pipeline._delivery.assigned(assigned)
        except Exception as exc:  # noqa: BLE001 - aiokafka would log a listener's error and go on: stop instead
            pipeline._fail(exc)
