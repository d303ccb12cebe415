"""Shared fixtures: brokers (embedded Tansu, Apache Kafka from Maven jars, testcontainers), a
session-wide local Ray, a model repository with the demo and test models, and fresh topics."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from streaminfer.broker import EmbeddedBroker
from streaminfer.demo.model import build_demo_model
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from tests.fixtures.apache_kafka import ApacheKafkaBroker, ensure_kafka_jars
from tests.fixtures.testcontainers_kafka import docker_engine_reachable, testcontainers_kafka
from tests.support.models import write_lookup_model

BROKERS = ["tansu", "apache-kafka", "testcontainers"]


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    repository = ModelRepository(tmp_path_factory.mktemp("models"))
    build_demo_model(repository)
    write_lookup_model(repository)
    return repository


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as broker:
        yield broker


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaBroker]:
    broker = ApacheKafkaBroker(tmp_path_factory.mktemp("kafka"), ensure_kafka_jars())
    with broker:
        yield broker


@pytest.fixture(scope="session")
def container_kafka() -> Iterator[str]:
    if not docker_engine_reachable():
        pytest.skip("no Docker engine reachable: the testcontainers broker path runs only where Docker does")
    with testcontainers_kafka() as bootstrap:
        yield bootstrap


@pytest.fixture(params=BROKERS)
def bootstrap(request: pytest.FixtureRequest) -> str:
    """Each pipeline test runs once per broker kind."""
    if request.param == "tansu":
        return request.getfixturevalue("tansu").bootstrap
    if request.param == "apache-kafka":
        return request.getfixturevalue("apache_kafka").bootstrap
    return request.getfixturevalue("container_kafka")


@pytest.fixture
def kafka_settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        rebalance_timeout_ms=6000,
    )


@pytest.fixture
def topics() -> TopicSettings:
    """Fresh topics per test, so no test reads another's records."""
    suffix = uuid.uuid4().hex[:8]
    return TopicSettings(
        requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}"
    )


@pytest.fixture(scope="session")
def ray_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local Ray for the session (start-up costs seconds); its temp dir is short-pathed
    because Ray's socket paths have a length limit."""
    from streaminfer.app import start_ray
    from streaminfer.broker import free_port
    from streaminfer.workers.settings import RaySettings

    temp_dir = Path("/tmp") / f"ray-{uuid.uuid4().hex[:6]}"
    url = start_ray(RaySettings(num_cpus=2, dashboard_port=free_port(), temp_dir=str(temp_dir)), log_to_driver=False)
    assert url is not None
    yield url
    ray.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration talks to real services. Tests about Kafka's own
    semantics (commits, rebalances, restarts, transactions: marked ``kafka_semantics``) run on
    every broker; the rest run on the embedded one only, since the broker does not change what
    they check (``STREAMINFER_TEST_ALL_BROKERS=1`` runs everything everywhere)."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)
    if os.environ.get("STREAMINFER_TEST_ALL_BROKERS") == "1":
        return
    kept, deselected = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        broker = callspec.params.get("bootstrap") if callspec is not None else None
        if broker not in (None, "tansu") and item.get_closest_marker("kafka_semantics") is None:
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


os.environ.setdefault("RAY_AUTH_MODE", "disabled")
