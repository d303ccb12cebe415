"""The feature app: a Faust app with three agents, each re-keying for the next.

::

    requests, predictions, dead letters ──extract──▶ features.joinable   (key: request id)
    features.joinable ──join (table ``pending``)──▶ features.scored      (key: entity)
                                                 └─▶ features.log         (key: request id)
    features.scored ──aggregate (table ``entity-windows``)──▶ features.rows (key: entity)

Both tables are backed by changelog topics, so a restarted worker recovers them. Faust commits
at least once: after a crash it reads again what it had not committed and forwards it again.
That is harmless here: the join only pairs halves it still holds, and the aggregates keep the
request ids of each bucket, so a replayed request is recognised and not counted twice (see
``streams.features.aggregates``). The aggregate re-sends the entity's current row even for a
replayed request, so a row lost between the changelog write and the crash is written again.
"""

from __future__ import annotations

import time
from typing import Any, cast

import faust
import msgspec
from faust.transport.drivers import aiokafka as faust_aiokafka

from streaminfer.streams.features import aggregates
from streaminfer.streams.features.records import (
    FeatureRow,
    PredictionLog,
    Scored,
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
from streaminfer.streams.settings import KafkaSettings, TopicSettings


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


class _QuickFetchConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _QuickFetchThread:
        return _QuickFetchThread(self, loop=self.loop, beacon=self.beacon)


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


def make_app(kafka: KafkaSettings, topics: TopicSettings, settings: FeatureSettings) -> faust.App:
    seconds = 1000.0
    app = FeatureApp(
        settings.app_id,
        fetch_max_wait_ms=max(kafka.fetch_max_wait_ms, 10),
        isolation_level=kafka.isolation_level,
        broker=f"kafka://{kafka.bootstrap}",
        store="memory://",
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
            part = _part_of(event.message, topics, settings)
            if part is not None:
                await joinable.send(key=part.request_id.encode(), value=encode(part))

    @app.agent(joinable)
    async def join(stream: Any) -> None:
        async for event in stream.events():
            part = decode_part(event.value)
            held = pending.get(event.key)
            if part.kind == "dead_letter":
                if held is not None:
                    del pending[event.key]
                continue
            if held is None or decode_part(held).kind == part.kind:
                pending[event.key] = event.value
                continue
            del pending[event.key]
            other = decode_part(held)
            request, prediction = (part, other) if part.kind == "request" else (other, part)
            score = prediction.score or 0.0
            entity = request.entity or ""
            await log.send(key=event.key, value=encode(PredictionLog(
                request.request_id, entity, request.ts_ms, prediction.model or request.model or "",
                prediction.version or "", request.inputs or "[]", score)))
            if entity:
                await scored.send(key=entity.encode(), value=encode(Scored(request.request_id, entity, request.ts_ms, score)))

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


def _part_of(message: Any, topics: TopicSettings, settings: FeatureSettings) -> Any:
    headers = _header_list(message.headers)
    ts_ms = _ms(message.timestamp)
    if message.topic == topics.requests:
        return request_part(message.value, dict(headers), ts_ms, settings.entity_parameter)
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
