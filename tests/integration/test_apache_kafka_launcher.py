"""The Docker-free real broker: ApacheKafkaBroker starts, serves transactions, stops.

Transactions and read_committed are the reason this launcher exists (the embedded
Tansu broker cannot do them), so the smoke test exercises exactly that.
"""

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.fixtures.apache_kafka import ApacheKafkaBroker, BrokerStartError

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _abort_one_then_commit_one(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", key=b"k")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed", key=b"k")
    finally:
        await producer.stop()


async def _first_committed_value(bootstrap: str, topic: str) -> bytes | None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    value: bytes | None = record.value
    return value


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_broker_serves_transactions_and_its_process_is_gone_after_stop(
    tmp_path: Path,
) -> None:
    broker = ApacheKafkaBroker(tmp_path / "kafka")
    try:
        assert broker.start() is broker.start()  # a second start is a no-op
        topic = f"launcher-{uuid.uuid4().hex[:8]}"
        await _create_topic(broker.bootstrap, topic)
        await _abort_one_then_commit_one(broker.bootstrap, topic)

        assert await _first_committed_value(broker.bootstrap, topic) == b"committed"
    finally:
        broker.stop()
        broker.stop()  # a second stop is a no-op

    assert broker.pid is not None
    assert not _process_exists(broker.pid)


def test_a_broker_that_cannot_start_reports_the_tail_of_its_log(tmp_path: Path) -> None:
    empty_libs = tmp_path / "no-jars"
    empty_libs.mkdir()
    broker = ApacheKafkaBroker(tmp_path / "kafka", libs_dir=empty_libs)

    with pytest.raises(BrokerStartError, match=r"kafka\.tools\.StorageTool"):
        broker.start()

    assert broker.pid is None


def test_a_random_cluster_id_that_starts_with_a_dash_still_formats_the_storage(tmp_path: Path, monkeypatch) -> None:
    """One generated id in 64 starts with "-", which the storage tool would take for an option."""
    import tests.support.kafka_jvm as kafka_jvm
    from tests.fixtures.apache_kafka import ensure_kafka_jars

    dash_first = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # urlsafe base64: "-A..."
    monkeypatch.setattr(kafka_jvm.uuid, "uuid4", lambda: dash_first)
    with ApacheKafkaBroker(tmp_path, ensure_kafka_jars()) as broker:
        assert broker.bootstrap
