"""docker-compose.yml and its Prometheus config, checked as data (no Docker needed).

Why: the compose stack is only exercised on machines with Docker, so a typo in a service
name, a port or a start-up condition would otherwise go unnoticed until a user runs it.
"""

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SERVICES = {"kafka", "kafka-init", "ray-head", "pipeline", "prometheus", "redis", "features"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _published(service: dict[str, Any]) -> dict[int, str]:
    """Host port -> "host_ip:container_port" for ports written as [IP:]HOST:CONTAINER."""
    published = {}
    for mapping in service.get("ports", []):
        *ip, host, container = str(mapping).split(":")
        published[int(host)] = f"{''.join(ip) or '0.0.0.0'}:{container}"
    return published


def _prometheus_targets(services: dict[str, dict[str, Any]]) -> list[str]:
    (mount,) = [m for m in services["prometheus"]["volumes"] if m.endswith("prometheus.yml:ro")]
    source = REPO_ROOT / mount.split(":")[0]
    config = yaml.safe_load(source.read_text())
    return [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]


def test_the_stack_has_exactly_its_seven_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: pin {image!r} to a version"


def test_the_pipeline_the_feature_worker_and_the_ray_head_share_one_locally_built_image(
    services: dict[str, dict[str, Any]],
) -> None:
    pipeline, head = services["pipeline"], services["ray-head"]
    assert pipeline["image"] == head["image"] == services["features"]["image"]
    dockerfile = REPO_ROOT / pipeline["build"]["context"] / pipeline["build"]["dockerfile"]
    assert dockerfile.is_file()
    assert "FROM python:3.11-slim" in dockerfile.read_text()


def test_kafka_runs_in_kraft_mode_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    environment = services["kafka"]["environment"]
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in environment)


def test_kafka_advertises_a_listener_for_containers_and_one_for_the_host(
    services: dict[str, dict[str, Any]],
) -> None:
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in advertised
    assert "HOST://localhost:9092" in advertised
    assert _published(services["kafka"])[9092] == "127.0.0.1:19092"


def test_host_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    expected = {"kafka": 9092, "ray-head": 8265, "pipeline": 9400, "prometheus": 9090}
    for name, port in expected.items():
        assert _published(services[name])[port].startswith("127.0.0.1:"), name
    assert _published(services["kafka-init"]) == {}


def test_pipeline_waits_for_a_healthy_kafka(services: dict[str, dict[str, Any]]) -> None:
    assert services["pipeline"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])


def test_pipeline_starts_only_after_its_topics_exist(services: dict[str, dict[str, Any]]) -> None:
    depends_on = services["pipeline"]["depends_on"]
    assert depends_on["kafka-init"]["condition"] == "service_completed_successfully"
    assert depends_on["ray-head"]["condition"] == "service_started"
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_kafka_init_creates_the_declared_topics_before_the_pipeline_starts(
    services: dict[str, dict[str, Any]],
) -> None:
    """One declaration of the topics (streams/topics.py): compose asks the same command the
    services use instead of listing topics of its own."""
    init = services["kafka-init"]
    assert _command(init)[:3] == ["streaminfer", "topics", "create"]
    assert init["environment"]["STREAMINFER_TOPICS__PARTITIONS"] == "8"
    assert init["image"] == services["pipeline"]["image"]


def test_pipeline_reaches_kafka_and_ray_by_service_name(
    services: dict[str, dict[str, Any]],
) -> None:
    command = _command(services["pipeline"])
    assert command[:2] == ["streaminfer", "run"]
    assert command[command.index("--bootstrap") + 1] == "kafka:9092"
    assert command[command.index("--ray-address") + 1] == "ray://ray-head:10001"
    assert "--ray-client-server-port=10001" in _command(services["ray-head"])


def test_prometheus_scrapes_only_services_of_the_stack_on_their_metrics_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    targets = _prometheus_targets(services)
    assert targets, "prometheus.yml scrapes nothing"
    for target in targets:
        host = target.split(":")[0]
        assert host in services, f"{target}: no service {host!r} in docker-compose.yml"
    pipeline_command = _command(services["pipeline"])
    metrics_port = pipeline_command[pipeline_command.index("--metrics-port") + 1]
    assert f"pipeline:{metrics_port}" in targets
    assert "--metrics-export-port=8080" in _command(services["ray-head"])
    assert "ray-head:8080" in targets


def test_prometheus_discovers_every_process_through_the_targets_file_the_pipeline_writes(
    services: dict[str, dict[str, Any]],
) -> None:
    environment = services["pipeline"]["environment"]
    targets_dir = str(Path(environment["STREAMINFER_METRICS__TARGETS_FILE"]).parent)
    assert environment["STREAMINFER_METRICS__HOST"] == "0.0.0.0"
    assert f"scrape-targets:{targets_dir}" in services["pipeline"]["volumes"]
    assert "scrape-targets:/etc/prometheus/targets:ro" in services["prometheus"]["volumes"]
    assert any(m.endswith("alerts.yml:/etc/prometheus/alerts.yml:ro") for m in services["prometheus"]["volumes"])


def test_enrichment_and_the_feature_worker_share_one_feast_repository_and_online_store(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = _command(services["features"])
    assert worker[:3] == ["streaminfer", "features", "worker"]
    assert worker[worker.index("--redis") + 1] == services["pipeline"]["environment"]["STREAMINFER_FEATURES__REDIS_URL"]
    assert worker[worker.index("--redis") + 1].split(":")[0] in services
    repo = services["features"]["environment"]["STREAMINFER_FEATURES__REPO_PATH"]
    assert services["pipeline"]["environment"]["STREAMINFER_FEATURES__REPO_PATH"] == repo
    for name in ("features", "ray-head"):  # consumer actors run on the Ray head
        assert f"feature-repo:{repo}" in services[name]["volumes"], name
    assert f"features:{worker[worker.index('--metrics-port') + 1]}" in _prometheus_targets(services)


def test_the_pipeline_and_the_ray_head_share_one_model_registry(services: dict[str, dict[str, Any]]) -> None:
    """A promotion made through either must reach the consumer actors, which run on the Ray head."""
    repository = services["pipeline"]["environment"].get("STREAMINFER_MODEL_REPOSITORY", "/app/models")
    for name in ("pipeline", "ray-head"):
        assert f"model-repo:{repository}" in services[name]["volumes"], name
