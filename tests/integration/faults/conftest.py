"""Fixtures of the fault suite: where a scenario runs, and a three-node Apache Kafka cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.apache_kafka import ApacheKafkaCluster, ensure_kafka_jars
from tests.integration.faults.broker_scenarios import Place


@pytest.fixture
def place(tmp_path, model_repo) -> Place:
    return Place(tmp_path, model_repo.root, ensure_kafka_jars())


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaCluster]:
    """Three KRaft nodes (replication 3, min.insync.replicas 2) for this module's tests; a test that
    kills a node starts it again before the next."""
    with ApacheKafkaCluster(tmp_path_factory.mktemp("cluster"), ensure_kafka_jars()) as cluster:
        yield cluster
