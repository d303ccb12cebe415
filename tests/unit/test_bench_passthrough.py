"""Limit B's passthrough (``bench.passthrough``): one fetch goes out as one record batch per
partition through the pipeline's sender, unchanged, and its offsets are committed once, after
the broker acknowledged every batch. And the clients file that carries the benchmark's Kafka
settings to its child processes."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any

from aiokafka import TopicPartition
from pydantic import SecretStr

from bench.connection import (
    CLIENTS_FILE_VARIABLE,
    BenchConnection,
    read_connection,
    system_environment,
    write_connection,
)
from bench.passthrough import BatchPassthrough
from streaminfer.settings import SETTINGS_FILE_VARIABLE
from streaminfer.streams.settings import KafkaSettings, PipelineSettings
from tests.support.fake_kafka import FakeBroker, FakeClients, FakeProducer

SOURCE, SINK, GROUP = "requests", "answers", "bench-group"


class _Builder:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def append(self, timestamp: int | None, key: bytes | None, value: bytes | None, headers: list) -> object:
        self.records.append((key, value, list(headers)))
        return object()


class BatchProducer(FakeProducer):
    """Takes record batches; each acknowledgement waits until the test calls ``acknowledge``."""

    def __init__(self, broker: FakeBroker) -> None:
        super().__init__(broker)
        self.batches: list[tuple[str, int, _Builder]] = []
        self.pending: list[asyncio.Future[Any]] = []
        self.sent_something = asyncio.Event()

    def create_batch(self) -> _Builder:
        return _Builder()

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.broker.partitions[topic]))

    async def send_batch(self, builder: _Builder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.batches.append((topic, partition, builder))
        for key, value, headers in builder.records:
            self.broker.append(topic, value, key, partition=partition, headers=headers)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        self.sent_something.set()
        return future

    def acknowledge(self) -> None:
        for future in self.pending:
            future.set_result(None)


class BatchClients(FakeClients):
    def producer(self, **overrides: Any) -> Any:
        self.producers.append(BatchProducer(self.broker))
        return self.producers[-1]


def _broker_with_requests(per_partition: dict[int, int]) -> FakeBroker:
    broker = FakeBroker()
    broker.create(SOURCE, partitions=2)
    broker.create(SINK, partitions=4)
    for partition, count in per_partition.items():
        for n in range(count):
            key = f"k{partition}-{n}".encode()
            broker.append(SOURCE, b"v" + key, key, partition=partition, headers=[("request-id", key)])
    return broker


async def _started(broker: FakeBroker, pipeline: PipelineSettings | None = None) -> tuple[BatchPassthrough, BatchClients]:
    clients = BatchClients(broker)
    passthrough = BatchPassthrough(clients, SOURCE, SINK, GROUP, pipeline)
    await passthrough.start()
    clients.consumers[0].assign([TopicPartition(SOURCE, 0), TopicPartition(SOURCE, 1)])  # the group's assignment
    return passthrough, clients


async def test_one_fetch_leaves_as_one_record_batch_per_partition_unchanged_and_commits_once_after_the_acks() -> None:
    broker = _broker_with_requests({0: 3, 1: 2})
    passthrough, clients = await _started(broker)
    producer = clients.producers[0]

    step = asyncio.create_task(passthrough.step())
    await producer.sent_something.wait()
    await asyncio.sleep(0)  # let step() reach its wait for the acknowledgements
    assert broker.committed == {}  # nothing committed while a batch is unacknowledged
    producer.acknowledge()
    assert await step == 5

    partitions = [partition for _, partition, _ in producer.batches]
    assert len(partitions) == len(set(partitions))  # one batch per partition
    forwarded = sorted(record for _, _, builder in producer.batches for record in builder.records)
    assert forwarded == sorted((r.key, r.value, list(r.headers)) for r in broker.logs[TopicPartition(SOURCE, 0)]
                               + broker.logs[TopicPartition(SOURCE, 1)])
    assert broker.committed == {(GROUP, TopicPartition(SOURCE, 0)): 3, (GROUP, TopicPartition(SOURCE, 1)): 2}
    await passthrough.stop()


async def test_a_fetch_takes_at_most_the_pipelines_fetch_max_records_and_commits_only_what_it_forwarded() -> None:
    broker = _broker_with_requests({0: 10})
    passthrough, clients = await _started(broker, PipelineSettings(fetch_max_records=4))
    step = asyncio.create_task(passthrough.step())
    await clients.producers[0].sent_something.wait()
    clients.producers[0].acknowledge()
    assert await step == 4
    assert broker.committed == {(GROUP, TopicPartition(SOURCE, 0)): 4}
    await passthrough.stop()


async def test_an_empty_fetch_sends_and_commits_nothing() -> None:
    broker = _broker_with_requests({})
    passthrough, clients = await _started(broker)
    assert await passthrough.step() == 0
    assert clients.producers[0].batches == [] and broker.committed == {}
    await passthrough.stop()


def test_the_clients_file_is_readable_by_its_owner_only_and_carries_the_password(tmp_path) -> None:
    kafka = KafkaSettings(bootstrap="broker:9096", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="bench", sasl_password=SecretStr("s3cret"))
    path = write_connection(BenchConnection(kafka=kafka, pipeline=PipelineSettings(fetch_max_records=77)),
                            tmp_path / "clients.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = read_connection({CLIENTS_FILE_VARIABLE: str(path)})
    assert back.kafka.sasl_password is not None and back.kafka.sasl_password.get_secret_value() == "s3cret"
    assert back.kafka.bootstrap == "broker:9096" and back.pipeline.fetch_max_records == 77


def test_a_system_on_the_benchmarks_own_broker_runs_without_the_users_kafka_settings(monkeypatch) -> None:
    monkeypatch.setenv(SETTINGS_FILE_VARIABLE, "/somewhere/streaminfer.toml")
    monkeypatch.setenv("STREAMINFER_KAFKA__SASL_PASSWORD", "s3cret")
    removed = system_environment(external=False)
    assert removed[SETTINGS_FILE_VARIABLE] is None and removed["STREAMINFER_KAFKA__SASL_PASSWORD"] is None
    assert system_environment(external=True) == {}
