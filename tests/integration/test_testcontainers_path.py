"""The Docker path: the official apache/kafka image started through testcontainers.

Skips, never fails, where no Docker engine answers; the java-launched broker
(test_apache_kafka_launcher.py) covers real Kafka on those machines.
"""

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.fixtures.testcontainers_kafka import docker_engine_reachable, testcontainers_kafka

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def docker_kafka() -> Iterator[str]:
    if not docker_engine_reachable():
        pytest.skip("no Docker engine reachable: start Docker to run the testcontainers path")
    with testcontainers_kafka() as bootstrap:
        yield bootstrap


async def test_a_record_round_trips_through_the_containerised_broker(docker_kafka: str) -> None:
    topic = f"tc-roundtrip-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=docker_kafka)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=docker_kafka, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k1", b"hello")
