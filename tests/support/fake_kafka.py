"""An in-memory stand-in for the Kafka clients ``KafkaClients`` builds, for unit tests of the code
that takes a ``KafkaClients`` (the single-reader services, topic creation).

One ``FakeBroker`` holds topics (with their partition counts and configs), records per partition
and committed offsets per group; ``FakeClients(broker)`` hands out producers, consumers and admin
clients that work on it and remembers each one, so a test can ask what was opened and closed.
A producer writing to a topic nobody created raises, as a broker without auto-creation would.
Integration tests use real brokers; this is for what a unit test must pin down exactly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.settings import KafkaSettings


@dataclass
class FakeBroker:
    partitions: dict[str, int] = field(default_factory=dict)
    configs: dict[str, dict[str, str]] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    logs: dict[TopicPartition, list[ConsumerRecord]] = field(default_factory=dict)
    committed: dict[tuple[str | None, TopicPartition], int] = field(default_factory=dict)

    def create(self, name: str, partitions: int = 1, replicas: int = 1, configs: dict[str, str] | None = None) -> None:
        self.partitions[name] = partitions
        self.replicas[name] = replicas
        self.configs[name] = dict(configs or {})
        for p in range(partitions):
            self.logs.setdefault(TopicPartition(name, p), [])

    def append(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int = 0,
               timestamp: int | None = None, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
        if topic not in self.partitions:
            raise UnknownTopicOrPartitionError(f"{topic} does not exist")
        log = self.logs[TopicPartition(topic, partition)]
        record = ConsumerRecord(
            topic=topic, partition=partition, offset=len(log), timestamp=timestamp if timestamp is not None else len(log),
            timestamp_type=0, key=key, value=value, checksum=None, serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""), headers=tuple(headers or ()),
        )
        log.append(record)
        return record

    def values(self, topic: str) -> list[bytes | None]:
        return [r.value for p in range(self.partitions.get(topic, 0)) for r in self.logs[TopicPartition(topic, p)]]


class FakeClients(KafkaClients):
    """``fail_consumer_start``: the consumer cannot reach the broker (to test a failed start)."""

    def __init__(self, broker: FakeBroker, kafka: KafkaSettings | None = None, fail_consumer_start: bool = False) -> None:
        super().__init__(kafka or KafkaSettings())
        self.broker = broker
        self.fail_consumer_start = fail_consumer_start
        self.producers: list[FakeProducer] = []
        self.consumers: list[FakeConsumer] = []
        self.admins: list[FakeAdmin] = []

    def producer(self, **overrides: Any) -> Any:
        self.producers.append(FakeProducer(self.broker))
        return self.producers[-1]

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> Any:
        self.consumers.append(FakeConsumer(self.broker, group_id, self.fail_consumer_start))
        return self.consumers[-1]

    def admin(self, **overrides: Any) -> Any:
        self.admins.append(FakeAdmin(self.broker))
        return self.admins[-1]

    def created(self) -> list[str]:
        """Topics created through admin clients, in order."""
        return [topic.name for admin in self.admins for topic in admin.created]

    def assigned(self) -> set[str]:
        return {tp.topic for consumer in self.consumers for tp in consumer.assigned}

    def sent(self) -> list[str]:
        return [topic for producer in self.producers for topic in producer.sent]


class _Client:
    def __init__(self) -> None:
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1


class FakeProducer(_Client):
    def __init__(self, broker: FakeBroker) -> None:
        super().__init__()
        self.broker = broker
        self.sent: list[str] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, **_: Any) -> asyncio.Future:
        record = self.broker.append(topic, value, key)
        self.sent.append(topic)
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(record)
        return done

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, **_: Any) -> Any:
        return await (await self.send(topic, value, key))

    async def flush(self) -> None:
        return None


class FakeConsumer(_Client):
    def __init__(self, broker: FakeBroker, group_id: str | None, fail_start: bool) -> None:
        super().__init__()
        self.broker, self.group_id, self.fail_start = broker, group_id, fail_start
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        if self.fail_start:
            raise KafkaConnectionError("fake broker refuses the consumer")
        await super().start()

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.broker.logs.get(tp, [])) for tp in partitions}

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.broker.logs.get(tp, []))

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return -1  # as aiokafka under read_uncommitted

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return int(time.time() * 1000)  # every fetch looks at every partition here

    async def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, 0)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.committed.get((self.group_id, tp))

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        for tp, meta in offsets.items():
            self.broker.committed[(self.group_id, tp)] = meta.offset

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        budget = max_records or 1 << 30
        batches: dict[TopicPartition, list[ConsumerRecord]] = {}
        for tp in self.assigned:
            position = self.positions.get(tp, 0)
            records = self.broker.logs.get(tp, [])[position : position + budget]
            if records:
                batches[tp] = records
                self.positions[tp] = position + len(records)
                budget -= len(records)
        if not batches:
            await asyncio.sleep(min(timeout_ms, 2) / 1000)  # a fetch that found nothing waits a little
        return batches


class FakeAdmin:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.created: list[NewTopic] = []
        self.closed = False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True

    async def list_topics(self) -> list[str]:
        return list(self.broker.partitions)

    async def create_topics(self, topics: list[NewTopic]) -> None:
        for topic in topics:
            self.created.append(topic)
            self.broker.create(topic.name, topic.num_partitions, topic.replication_factor, topic.topic_configs)

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [
            {"topic": name, "error_code": 0 if name in self.broker.partitions else 3,
             "partitions": [{"partition": p} for p in range(self.broker.partitions.get(name, 0))]}
            for name in names
        ]


class RecordBatch:
    """What ``AIOKafkaProducer.create_batch`` returns, for a fake producer: it keeps the values."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, timestamp: object, key: bytes | None, value: bytes, headers: object) -> object:
        self.values.append(value)
        return object()


class GivenClients(KafkaClients):
    """Hands out the one consumer and the one producer a test built (a pipeline opens one of each)."""

    def __init__(self, consumer: Any, producer: Any) -> None:
        super().__init__(KafkaSettings())
        self._consumer, self._producer = consumer, producer

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> Any:
        return self._consumer

    def producer(self, **overrides: Any) -> Any:
        return self._producer
