"""Kafka clients configured from settings, topic creation, and a reachability check."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import ConsumerRecord

from streaminfer.streams.errors import BrokerUnreachable, TopicsMissing
from streaminfer.streams.security.diagnosis import diagnose
from streaminfer.streams.security.options import client_options
from streaminfer.streams.settings import KafkaSettings
from streaminfer.streams.topics import TopicSpec

log = logging.getLogger(__name__)

AUTHORIZATION_ERRORS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError,
                        TransactionalIdAuthorizationFailed, ClusterAuthorizationFailedError)


class SettingsGroup(enum.Enum):
    """``KafkaClients.consumer(group_id=SETTINGS_GROUP)``: the group of the settings
    (``kafka.group_id``), the pipeline's. ``None`` is no group at all: a reader that assigns
    itself partitions and must not join (and rebalance) anyone's group."""

    SETTINGS_GROUP = "settings"


SETTINGS_GROUP = SettingsGroup.SETTINGS_GROUP


class KafkaClients:
    """Builds every Kafka client the system opens from one ``KafkaSettings``.

    This is the seam between our code and aiokafka: services and the pipeline take a
    ``KafkaClients`` instead of constructing clients, so a unit test can hand in one whose
    clients are fakes, and connection settings (security, for one) are added in one place.
    Keyword overrides win over the settings, for the few clients that need another value.
    """

    producer_type: Any = AIOKafkaProducer
    consumer_type: Any = AIOKafkaConsumer
    admin_type: Any = AIOKafkaAdminClient
    """The client classes; unit tests put recording fakes here."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self._security: dict[str, Any] | None = None

    @property
    def security(self) -> dict[str, Any]:
        """TLS and SASL options shared by every client built here (the SSL context is loaded
        once, in this process: it does not pickle, so each Ray actor builds its own)."""
        if self._security is None:
            self._security = client_options(self.kafka)
        return self._security

    def producer(self, **overrides: Any) -> AIOKafkaProducer:
        kafka = self.kafka
        options: dict[str, Any] = dict(
            bootstrap_servers=kafka.bootstrap,
            client_id=f"{kafka.client_id}-producer",
            acks="all",
            linger_ms=kafka.linger_ms,
            max_batch_size=256 * 1024,
            compression_type=kafka.compression,
            request_timeout_ms=kafka.request_timeout_ms,
        )
        return self.producer_type(**{**options, **self.security, **overrides})

    def consumer(self, *topics: str, group_id: str | SettingsGroup | None = SETTINGS_GROUP,
                 **overrides: Any) -> AIOKafkaConsumer:
        """A consumer in ``group_id``: by default the settings' group; ``None`` joins no group."""
        kafka = self.kafka
        options: dict[str, Any] = dict(
            bootstrap_servers=kafka.bootstrap,
            client_id=f"{kafka.client_id}-consumer",
            group_id=kafka.group_id if group_id is SETTINGS_GROUP else group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            rebalance_timeout_ms=kafka.rebalance_timeout_ms,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            request_timeout_ms=kafka.request_timeout_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            isolation_level=kafka.isolation_level,
        )
        return self.consumer_type(*topics, **{**options, **self.security, **overrides})

    def admin(self, **overrides: Any) -> AIOKafkaAdminClient:
        options: dict[str, Any] = dict(
            bootstrap_servers=self.kafka.bootstrap, request_timeout_ms=self.kafka.request_timeout_ms
        )
        return self.admin_type(**{**options, **self.security, **overrides})


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    return KafkaClients(kafka).producer()


def make_consumer(kafka: KafkaSettings, *topics: str,
                  group_id: str | SettingsGroup | None = SETTINGS_GROUP) -> AIOKafkaConsumer:
    return KafkaClients(kafka).consumer(*topics, group_id=group_id)


async def start_client(client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient, bootstrap: str) -> None:
    """Start a client, turning aiokafka's connection errors into one that says what to do."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        raise BrokerUnreachable(bootstrap) from exc
    except AUTHORIZATION_ERRORS:
        raise  # reachable, but refused: the caller knows which ACL that is (streams.security.authorization)
    except KafkaError as exc:
        raise BrokerUnreachable(bootstrap, type(exc).__name__) from exc


async def check_reachable(kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Fail fast with ``BrokerUnreachable`` (or what the broker said about our credentials)
    instead of retrying for a minute inside a client."""
    bootstrap = kafka.bootstrap
    admin = KafkaClients(kafka).admin(request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(start_client(admin, bootstrap), timeout_s)
    except asyncio.TimeoutError as exc:
        raise BrokerUnreachable(bootstrap, f"no answer within {timeout_s:.0f} s") from exc
    except BrokerUnreachable:
        raise await diagnose(bootstrap, kafka, KafkaClients(kafka).security, timeout_s) from None
    finally:
        await admin.close()


async def ensure_topics(kafka: KafkaClients | KafkaSettings, specs: Iterable[TopicSpec]) -> None:
    """Create the topics of ``specs`` that do not exist yet, laid out as declared
    (``streams.topics``); existing topics are left as they are. The one place topics are created."""
    clients = _clients(kafka)
    admin = clients.admin()
    await start_client(admin, clients.kafka.bootstrap)
    try:
        existing = set(await admin.list_topics())
        missing = [_new_topic(spec) for spec in {spec.name: spec for spec in specs}.values() if spec.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another member created it first
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def ensure_topic_names(kafka: KafkaSettings, names: list[str], partitions: int, replication_factor: int) -> None:
    """Ad hoc topics of tests and tools; the system's own go through ``ensure_topics`` with their
    declaration (``streams.topics.Topology``)."""
    await ensure_topics(kafka, [TopicSpec(name, partitions, replication_factor) for name in names])


def _new_topic(spec: TopicSpec) -> NewTopic:
    configs = {"cleanup.policy": "compact"} if spec.compacted else None
    return NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=spec.replication_factor,
                    topic_configs=configs)


def _clients(kafka: KafkaClients | KafkaSettings) -> KafkaClients:
    return kafka if isinstance(kafka, KafkaClients) else KafkaClients(kafka)


async def partition_counts(
    kafka: KafkaClients | KafkaSettings, names: list[str], timeout_s: float = 30.0
) -> dict[str, int]:
    """Partitions of each topic, waiting for topics just created to show up in the metadata
    (a consumer's cached metadata may not list them yet, and assigning nothing reads nothing)."""
    clients = _clients(kafka)
    admin = clients.admin()
    await start_client(admin, clients.kafka.bootstrap)
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while True:
            described = await admin.describe_topics(list(names))
            counts = {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"] and t["partitions"]}
            missing = [name for name in names if name not in counts]
            if not missing:
                return counts
            if asyncio.get_running_loop().time() > deadline:
                raise TopicsMissing(missing, clients.kafka.bootstrap)
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def read_to_end(clients: KafkaClients, topic: str, *, since_ms: int | None = None,
                      idle_timeout_s: float = 10.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` (from ``since_ms`` on, by record time, when given) up to the
    end it has when the read starts, without a consumer group: what the reports and the
    dead-letter commands read. A partition that yields nothing for ``idle_timeout_s`` short of its
    end (records aborted in a transaction leave such gaps) ends the read with what was read."""
    counts = await partition_counts(clients, [topic])
    partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
    consumer = clients.consumer(group_id=None, enable_auto_commit=False)
    await start_client(consumer, clients.kafka.bootstrap)
    records: list[ConsumerRecord] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        if since_ms is not None:
            for tp, found in (await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))).items():
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            fetched = await consumer.getmany(timeout_ms=200)
            if fetched:
                last_progress = loop.time()
            elif loop.time() - last_progress > idle_timeout_s:
                log.warning("%s: no records for %.0f s short of its end; going on with what was read", topic, idle_timeout_s)
                break
            records.extend(r for batch in fetched.values() for r in batch)
    finally:
        await consumer.stop()
    return records
