"""The alerting consumer: drift and metric events in, notifications to the outbox out.

It reads ``monitoring.drift``, ``monitoring.metrics`` and the silences topic (all partitions:
rule state cannot be split), feeds the rule engine, evaluates it every
``evaluation_interval_s`` on the wall clock, and writes what the dispatcher decides to notify to
the outbox topic, keyed by receiver. Delivery is a separate consumer of the outbox
(``streams.alerting.webhooks``), so a slow or dead receiver holds up neither this loop nor, since both
run outside the pipeline's processes, any prediction.

Rule and dispatch state (what anomaly rules have learned included) is checkpointed with the
offsets it reflects, after the notifications it produced are acknowledged by the broker. A
restart therefore neither forgets a firing alert (and notifies it again) nor loses one; a
notification written just before a crash is written again with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import msgspec
from aiokafka.structs import ConsumerRecord

from streaminfer.monitoring.alerting.config import AlertingConfig
from streaminfer.monitoring.alerting.dispatch import Dispatcher
from streaminfer.monitoring.alerting.rules import RuleEngine
from streaminfer.monitoring.alerting.signals import Sample, from_drift, from_metric, throughput_of
from streaminfer.monitoring.checkpoint import load_checkpoint, save_checkpoint
from streaminfer.monitoring.settings import AlertingSettings, MonitorTopics
from streaminfer.schemas.errors import StreamInferError
from streaminfer.schemas.monitoring_events import decode_drift_event, decode_metric_event
from streaminfer.schemas.notifications import Notification, Silence, decode_silence, encode_alerting
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.streams.single_reader import Batches, SingleReader, advance
from streaminfer.streams.topics import Topology

log = logging.getLogger(__name__)


@dataclass
class AlertingState:
    engine: RuleEngine
    dispatcher: Dispatcher
    silences: dict[str, Silence] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    notifications: int = 0
    source: str = ""


class AlertingService(SingleReader):
    """Reads drift events, metric events and silences; writes the outbox. Started, stopped and
    watched as every ``SingleReader``; resumes from its checkpoint, or without one from the
    beginning of its topics (never from the group's offsets: its state would lack what came
    before them).

    ``topics`` gives the layout (partitions, replication) of the topics it creates; the
    outbox has a partition per receiver in ``config`` (``streams.topics``).
    """

    resume_from_group = False

    def __init__(
        self,
        kafka: KafkaSettings,
        config: AlertingConfig,
        monitor_topics: MonitorTopics,
        settings: AlertingSettings,
        clock=time.time,
        *,
        topics: TopicSettings,
        clients: KafkaClients | None = None,
    ) -> None:
        topology = Topology(topics, monitor_topics, settings.topics, receivers=len(config.receivers))
        super().__init__(
            "alerting", clients or KafkaClients(kafka), settings.group_id,
            reads=topology.select([monitor_topics.drift, monitor_topics.metrics, settings.topics.silences]),
            # the refused notifications' topic is the delivery worker's; created here with the rest
            writes=topology.select([settings.topics.outbox, settings.topics.deadletter]),
            poll_timeout_ms=int(config.evaluation_interval_s * 1000) // 2 or 1, max_records=5000,
        )
        self._config = config
        self._monitor_topics = monitor_topics
        self._settings = settings
        self._clock = clock
        self._state = AlertingState(
            engine=RuleEngine(list(config.rules), started_ms=self._now_ms()),
            dispatcher=Dispatcher(config.route, config.external_url),
        )
        self._last_checkpoint = 0.0
        self.restored = False

    @property
    def state(self) -> AlertingState:
        return self._state

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _prepare(self) -> dict[tuple[str, int], int]:
        self._restore()
        return self._state.offsets

    def _source(self) -> str:
        inputs = [spec.name for spec in self._reads]
        return f"{self.kafka.bootstrap}|{'|'.join(inputs)}"

    def _restore(self) -> None:
        """Carry the saved state over to the current rules file: series and alert states of
        rules still there, all groups, silences and offsets."""
        self._state.source = self._source()
        saved: AlertingState | None = load_checkpoint(self._settings.checkpoint_dir)
        if saved is None:
            return
        if saved.source != self._state.source:
            log.warning("alerting checkpoint is for %s, not %s: starting fresh", saved.source, self._state.source)
            return
        engine = self._state.engine
        engine.adopt(saved.engine)
        saved.dispatcher.tree = self._config.route
        saved.dispatcher.external_url = self._config.external_url
        self._state = AlertingState(engine, saved.dispatcher, saved.silences, saved.offsets, saved.notifications, saved.source)
        self.restored = True

    async def _process(self, batches: Batches) -> None:
        for records in batches.values():
            for record in records:
                self._handle(record)
        advance(self._state.offsets, batches)
        await self.evaluate()

    async def _finish(self) -> None:
        await self._checkpoint()

    def _handle(self, record: ConsumerRecord) -> None:
        try:
            if record.topic == self._settings.topics.silences:
                silence = decode_silence(record.value)
                self._state.silences[silence.id] = silence
                return
            sample: Sample
            if record.topic == self._monitor_topics.drift:
                sample = from_drift(decode_drift_event(record.value), record.timestamp)
            else:
                event = decode_metric_event(record.value)
                sample = from_metric(event, record.timestamp)
                throughput = throughput_of(event, record.timestamp)
                if throughput is not None:
                    self._state.engine.add(throughput)
            self._state.engine.add(sample)
        except (msgspec.MsgspecError, StreamInferError, ValueError, TypeError) as exc:
            log.warning("alerting skipped %s-%d@%d: %s", record.topic, record.partition, record.offset, exc)

    async def evaluate(self) -> list[Notification]:
        """One round: rules, dispatch, notifications to the outbox, checkpoint if anything went."""
        now_ms = self._now_ms()
        firing, resolved = self._state.engine.evaluate(now_ms)
        silences = [s for s in self._state.silences.values() if s.ends_ms > now_ms]
        self._state.silences = {s.id: s for s in silences}
        notifications = self._state.dispatcher.apply(firing, resolved, silences, now_ms)
        if notifications:
            await self._send(notifications)
        if notifications or time.monotonic() - self._last_checkpoint >= self._settings.checkpoint_interval_s:
            await self._checkpoint()
        return notifications

    async def _send(self, notifications: list[Notification]) -> None:
        producer = self.producer
        futures = [
            await producer.send(self._settings.topics.outbox, encode_alerting(n), key=n.receiver.encode())
            for n in notifications
        ]
        await asyncio.gather(*futures)
        self._state.notifications += len(notifications)

    async def _checkpoint(self) -> None:
        save_checkpoint(self._settings.checkpoint_dir, self._state)
        self._last_checkpoint = time.monotonic()
        await self._commit_for_lag_tools(self._state.offsets)

    def describe(self) -> dict[str, object]:
        return {
            "notifications": self._state.notifications,
            "groups": sorted(self._state.dispatcher.groups),
            "silences": sorted(self._state.silences),
            "restored": self.restored,
            "failed": self._failed(),
        }


async def check_receivers(receivers, timeout_s: float = 3.0) -> None:
    """Every receiver's host accepts a connection; otherwise say which and what to do."""
    from urllib.parse import urlparse

    from streaminfer.monitoring.alerting.config import AlertConfigError

    for receiver in receivers:
        url = urlparse(receiver.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise AlertConfigError(
                f"receiver {receiver.name!r} at {receiver.url} does not accept connections "
                f"({type(exc).__name__}): start it or fix the URL (or pass --no-check-receivers)"
            ) from None
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
