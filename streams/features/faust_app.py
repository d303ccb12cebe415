"""The feature app: a Faust app with three agents, each re-keying for the next.

::

    requests, predictions, dead letters ──extract──▶ features.joinable   (key: request id)
    features.joinable ──join (table ``pending``)──▶ features.scored      (key: entity)
                                                 └─▶ features.log         (key: request id)
    features.scored ──aggregate (table ``entity-windows``)──▶ features.rows (key: entity)

Both tables are backed by changelog topics, so a restarted worker recovers them. What a crash
may leave, and why nothing is lost or counted twice:

* Faust commits at least once: after a crash the worker reads again what it had not committed.
  It sends a table's changelog record and the agent's outputs through one producer, to
  different partitions, so a SIGKILL can keep a table change and lose the outputs of the step
  that made it. Every step therefore gives the same outputs when replayed against any state a
  crash leaves: the join decides a pair by sending a ``pair`` record to its own input, never
  by deleting alone (``streams.features.join``); the aggregates keep each bucket's request ids
  and a replayed request writes again every row it wrote the first time, corrections of later
  times included (``streams.features.aggregates``); the sink keeps the newest row per entity.
* Faust can drop a fetched record without handing it to its agent (while its flow is stopped
  for a rebalance) and its commit rule would commit past one such record when it stands at the
  committed offset, or past any at the start of a partition never committed. This consumer
  never commits past a record that was not handled (``head_handled``): a drop becomes a stall,
  and the stall watch restarts the worker, which reads the record again.

So correctness rests on idempotent steps replayed from a committed position that only moves
over handled records. The alternatives were weighed: Faust's ``exactly_once`` guarantee needs
transactions (the embedded broker has none), and it commits, inside a transaction, the offsets
the same commit rule picks, drops included; reconciling the online store from the prediction
log cannot bring back what the join lost, since the log is the join's output (and from the
source topics it would be a second, batch implementation of the aggregates). The kill-and-
restart loop (``tests/benchmarks/feature_kill_loop.py``) measures the result on Apache Kafka.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import faust
import msgspec
from faust.transport.drivers import aiokafka as faust_aiokafka

from streaminfer.streams.features import aggregates
from streaminfer.streams.features import join as joins
from streaminfer.streams.features.records import (
    FeatureRow,
    dead_letter_part,
    decode_part,
    decode_scored,
    encode,
    prediction_part,
    request_part,
)
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.stall import (
    StallWatch,
    report_stall,
    restart_process,
    source_offsets,
)
from streaminfer.streams.features.store import window_spec
from streaminfer.streams.security.options import faust_credentials
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.maskings import ModelMaskings

logger = logging.getLogger(__name__)


def raw() -> faust.Schema:
    """Bytes in, bytes out: every stage encodes its own records. A new schema per topic, because
    Faust fills in a shared one's unset parts for the first user."""
    return faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

_state = msgspec.json.Decoder(dict)


class _QuickFetchThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer with our fetch wait instead of its fixed 1.5 s. Brokers that do not
    answer a waiting fetch when data arrives (the embedded one) would otherwise hold every idle
    hop of the app that long: a request's features would take seconds to reach the store."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = cast("FeatureApp", self.app)  # only FeatureApp makes this transport
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms  # read when the consumer starts
        if app.isolation_level is not None:  # Faust sets read_committed only for its own exactly-once
            consumer._isolation_level = app.isolation_level
        return consumer


def head_handled(start: int, first_acked: int, marker_may_lead: bool) -> bool:
    """Whether a partition's offsets may be committed past ``start`` (its committed offset, the
    next record to read): the record there was handled, or a transaction's commit marker may
    stand there (never delivered: reading ``read_committed``, the next offset is then the first
    one handed over).

    Faust (0.15) allows one missing offset there whatever the source, and none at all on a
    partition never committed: a record it drops while its flow is stopped for a rebalance (its
    fetch loop moves on without handing it to the stream) is committed past when it stood
    first, and lost for good. Refusing keeps the commit where it was; the stall watch then
    restarts the worker, which reads the record again (``streams.features.stall``)."""
    return first_acked <= start + (1 if marker_may_lead else 0)


class _QuickFetchConsumer(faust_aiokafka.Consumer):
    """Faust's consumer with our fetch wait, which never commits past a record it did not hand
    to an agent (``head_handled``): correctness never rests on Faust's commit rule."""

    def _new_consumer_thread(self) -> _QuickFetchThread:
        return _QuickFetchThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """After an assignment: where reading starts on each partition never committed (its
        first offset: the app reads from the earliest), for ``_new_offset``."""
        await super().perform_seek()
        changelogs = self.app.tables.changelog_topics
        never = [tp for tp in self.assignment() if tp.topic not in changelogs and self._committed_offset[tp] is None]
        self._starts = dict(await self.earliest_offsets(*never)) if never else {}

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        start = self._committed_offset[tp]
        if start is None:
            start = getattr(self, "_starts", {}).get(tp)
        if acked and start is not None:
            app = cast("FeatureApp", self.app)
            if not head_handled(start, min(acked), app.isolation_level == "read_committed"):
                held = self.__dict__.setdefault("_held_at", {})
                if held.get(tp) != start:  # once per partition and offset
                    held[tp] = start
                    logger.warning("feature worker: %s/%d offset %d not handled while later ones were; commits "
                                "there wait for it (a stall restart reads it again)", tp.topic, tp.partition, start)
                return None
        return super()._new_offset(tp)


class _QuickFetchTransport(faust_aiokafka.Transport):
    Consumer = _QuickFetchConsumer


class FeatureApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch, and reads with
    ``isolation_level`` (``read_committed`` when the pipeline commits in transactions)."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, isolation_level: str | None = None, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.isolation_level = isolation_level
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _QuickFetchTransport(self.conf.broker_consumer, self)


def changelog_topics(settings: FeatureSettings) -> list[str]:
    """Pre-created with the app's partition count (brokers that auto-create topics pick their own)."""
    return [f"{settings.app_id}-{table}-changelog" for table in ("pending", "entity-windows")]


def make_app(kafka: KafkaSettings, topics: TopicSettings, settings: FeatureSettings,
             maskings: ModelMaskings | None = None) -> faust.App:
    """``maskings``: the models' privacy policies, applied to requests before they are stored."""
    seconds = 1000.0
    # Faust's default data directory is ``<app id>-data`` in the current directory: keep it
    # beside the feature repository instead of wherever the worker was started (Faust creates
    # the directory itself, not its parents)
    datadir = settings.repo_path / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = FeatureApp(
        settings.app_id,
        fetch_max_wait_ms=max(kafka.fetch_max_wait_ms, 10),
        isolation_level=kafka.isolation_level,
        broker=f"kafka://{kafka.bootstrap}",
        broker_credentials=faust_credentials(kafka),  # the same TLS and SASL as every other client
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=kafka.session_timeout_ms / seconds,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / seconds,
        broker_rebalance_timeout=kafka.rebalance_timeout_ms / seconds,
        processing_guarantee="at_least_once",
        # broker_commit_interval stays at Faust's default (2.8 s): with much shorter ones, a
        # worker restarted mid-stream was seen to leave a few fetched records unprocessed (its
        # commits then stall behind them until the next restart reads them again)
    )
    sources = app.topic(topics.requests, topics.predictions, topics.deadletter, schema=raw())
    joinable = app.topic(settings.topics.joinable, schema=raw())
    scored = app.topic(settings.topics.scored, schema=raw())
    rows = app.topic(settings.topics.rows, schema=raw())
    log = app.topic(settings.topics.log, schema=raw())
    # tables pick their changelog serializers from the key and value types (bytes: raw)
    pending = app.Table("pending", default=None, key_type=bytes, value_type=bytes)
    windows = app.Table("entity-windows", default=None, key_type=bytes, value_type=bytes)
    spec = window_spec(settings)

    @app.agent(sources)
    async def extract(stream: Any) -> None:
        async for event in stream.events():
            part = _part_of(event.message, topics, settings, maskings)
            if part is not None:
                await joinable.send(key=part.request_id.encode(), value=encode(part))

    @app.agent(joinable)
    async def join(stream: Any) -> None:
        async for event in stream.events():
            held = pending.get(event.key)
            step = joins.step(None if held is None else decode_part(held), decode_part(event.value))
            if step.changed:
                if step.hold is None:
                    del pending[event.key]
                else:
                    pending[event.key] = event.value
            if step.pair is not None:
                await joinable.send(key=event.key, value=encode(step.pair))
            if step.log is not None:
                await log.send(key=event.key, value=encode(step.log))
            if step.scored is not None:
                await scored.send(key=step.scored.entity.encode(), value=encode(step.scored))

    @app.agent(scored)
    async def aggregate(stream: Any) -> None:
        async for event in stream.events():
            item = decode_scored(event.value)
            held = windows.get(event.key)
            state = _state.decode(held) if held is not None else aggregates.empty_state()
            update = aggregates.apply(state, spec, item.request_id, item.ts_ms, item.score)
            if update.changed:
                windows[event.key] = encode(state)
            created = time.time_ns() // 1000
            for ts in update.times:
                row = FeatureRow(item.entity, ts, created, ts == state["latest_ms"], aggregates.features_at(state, spec, ts))
                await rows.send(key=event.key, value=encode(row))

    if settings.stall_after_s > 0:
        watch = StallWatch(settings.stall_after_s)
        highwaters: dict[Any, int] = {}

        @app.timer(interval=max(1.0, settings.stall_after_s / 5))
        async def unstick() -> None:
            committed, behind = await source_offsets(app, highwaters)
            busy = bool(app.rebalancing or getattr(app, "in_recovery", False))
            if watch.check(time.monotonic(), committed, behind, busy):
                report_stall(app, behind)
                restart_process()

    return app


def _part_of(message: Any, topics: TopicSettings, settings: FeatureSettings, maskings: ModelMaskings | None) -> Any:
    headers = _header_list(message.headers)
    ts_ms = _ms(message.timestamp)
    if message.topic == topics.requests:
        return request_part(message.value, dict(headers), ts_ms, settings.entity_parameter, maskings)
    if message.topic == topics.predictions:
        return prediction_part(message.value, ts_ms)
    return dead_letter_part(headers, ts_ms)


def _ms(timestamp: float) -> int:
    """Faust gives record timestamps in seconds (a float)."""
    return round(timestamp * 1000)


def _header_list(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)
