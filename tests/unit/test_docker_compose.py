"""docker-compose.yml and its Prometheus and Grafana config, checked as data (no Docker needed).

Why: the compose stack is only exercised on machines with Docker, so a typo in a service
name, a port or a start-up condition would otherwise go unnoticed until a user runs it. The file
is validated against the Compose specification's JSON schema (compose-go v2.16.2, committed under
tests/fixtures/compose-spec with its source and checksum), then checked for what the system needs.
"""

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = REPO_ROOT / "tests/fixtures/compose-spec/compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "f266dcbb043229405d7cedd5aec918f9102c2b3d5e3850808fdd8edd564a43ff"  # compose-go v2.16.2
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
SERVICES = {*BROKERS, "kafka-init", "ray-head", "ray-worker", "pipeline", "prometheus", "grafana", "redis", "features"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return result


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """The validator of the draft the schema names (2020-12 for compose-go v2.16)."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


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


def test_the_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_text = COMPOSE_SCHEMA.read_bytes()
    assert hashlib.sha256(schema_text).hexdigest() == COMPOSE_SCHEMA_SHA256, "the committed schema changed"
    validator = _validator(json.loads(schema_text))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_the_compose_schema_refuses_what_compose_would_refuse(compose: dict[str, Any]) -> None:
    """The schema is strict where Compose is: an unknown service key is an error."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["pipeline"]["depend_on"] = ["redis"]
    errors = [e.message for e in _validator(json.loads(COMPOSE_SCHEMA.read_text())).iter_errors(broken)]
    assert any("'depend_on'" in message for message in errors), errors


def test_the_stack_has_exactly_its_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_every_image_is_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: pin {image!r} to a version"


def test_the_pipeline_the_feature_worker_and_the_ray_nodes_share_one_locally_built_image(
    services: dict[str, dict[str, Any]],
) -> None:
    pipeline = services["pipeline"]
    images = {services[name]["image"] for name in ("pipeline", "features", "ray-head", "ray-worker", "kafka-init")}
    assert images == {pipeline["image"]}
    dockerfile = REPO_ROOT / pipeline["build"]["context"] / pipeline["build"]["dockerfile"]
    assert dockerfile.is_file()
    assert "FROM python:3.11-slim" in dockerfile.read_text()


def test_kafka_is_three_kraft_nodes_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    voters = set()
    for number, name in enumerate(BROKERS, start=1):
        environment = services[name]["environment"]
        assert services[name]["image"] == "apache/kafka:4.1.1"
        assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert environment["KAFKA_NODE_ID"] == str(number)
        assert not any("ZOOKEEPER" in key for key in environment)
        voters.add(environment["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert len({services[b]["environment"]["CLUSTER_ID"] for b in BROKERS}) == 1
    assert voters == {",".join(f"{n}@{b}:9093" for n, b in enumerate(BROKERS, start=1))}


def test_every_topic_has_three_replicas_and_writes_need_two_in_sync(services: dict[str, dict[str, Any]]) -> None:
    for name in BROKERS:
        environment = services[name]["environment"]
        assert environment["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert environment["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert environment["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert environment["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    for name in ("kafka-init", "pipeline", "features"):  # the topic declaration agrees everywhere
        assert services[name]["environment"]["STREAMINFER_TOPICS__REPLICATION_FACTOR"] == "3", name
        assert services[name]["environment"]["STREAMINFER_TOPICS__PARTITIONS"] == "8", name


def test_each_broker_advertises_a_listener_for_containers_and_one_for_the_host(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, host_port in zip(BROKERS, (9092, 9093, 9094), strict=True):
        advertised = services[name]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert f"PLAINTEXT://{name}:9092" in advertised
        assert f"HOST://localhost:{host_port}" in advertised
        assert _published(services[name])[host_port] == "127.0.0.1:19092"


def test_host_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port, binding in _published(service).items():
            assert binding.startswith("127.0.0.1:"), f"{name}: port {port} on {binding}"
    expected = {"kafka-1": 9092, "ray-head": 8265, "pipeline": 9400, "prometheus": 9090, "grafana": 3000}
    for name, port in expected.items():
        assert port in _published(services[name]), name
    assert _published(services["kafka-init"]) == {}


def test_the_pipeline_waits_for_every_healthy_broker(services: dict[str, dict[str, Any]]) -> None:
    for name in BROKERS:
        assert services["pipeline"]["depends_on"][name]["condition"] == "service_healthy"
        assert "kafka-broker-api-versions.sh" in " ".join(services[name]["healthcheck"]["test"])


def test_pipeline_starts_only_after_its_topics_exist_and_both_ray_nodes(services: dict[str, dict[str, Any]]) -> None:
    depends_on = services["pipeline"]["depends_on"]
    assert depends_on["kafka-init"]["condition"] == "service_completed_successfully"
    assert depends_on["ray-head"]["condition"] == "service_started"
    assert depends_on["ray-worker"]["condition"] == "service_started"
    for name in BROKERS:
        assert services["kafka-init"]["depends_on"][name]["condition"] == "service_healthy"


def test_kafka_init_creates_the_declared_topics_before_the_pipeline_starts(
    services: dict[str, dict[str, Any]],
) -> None:
    """One declaration of the topics (streams/topics.py): compose asks the same command the
    services use instead of listing topics of its own."""
    init = services["kafka-init"]
    assert _command(init)[:3] == ["streaminfer", "topics", "create"]
    assert init["environment"]["STREAMINFER_KAFKA__BOOTSTRAP"] == ",".join(f"{b}:9092" for b in BROKERS)


def test_pipeline_reaches_kafka_and_ray_by_service_name(
    services: dict[str, dict[str, Any]],
) -> None:
    command = _command(services["pipeline"])
    assert command[:2] == ["streaminfer", "run"]
    assert services["pipeline"]["environment"]["STREAMINFER_KAFKA__BOOTSTRAP"] == ",".join(f"{b}:9092" for b in BROKERS)
    assert command[command.index("--ray-address") + 1] == "ray://ray-head:10001"
    assert "--ray-client-server-port=10001" in _command(services["ray-head"])
    assert _command(services["ray-worker"])[:3] == ["ray", "start", "--address=ray-head:6379"]


def test_alerting_runs_with_the_rules_file_and_its_signing_keys_come_from_the_shell(
    services: dict[str, dict[str, Any]],
) -> None:
    """Monitor, alerting and experiments are Ray actors started by `streaminfer run`; alerting
    needs --alerts. No signing key is written in the file: each one is the shell's variable."""
    pipeline = services["pipeline"]
    command = _command(pipeline)
    rules_in_container = command[command.index("--alerts") + 1]
    (mount,) = [m for m in pipeline["volumes"] if m.endswith(f":{rules_in_container}:ro")]
    rules = yaml.safe_load((REPO_ROOT / mount.split(":")[0]).read_text())
    for receiver in rules["receivers"]:
        variable = receiver["secret_env"]
        assert pipeline["environment"][variable].startswith(f"${{{variable}:?"), variable


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
    for node in ("ray-head", "ray-worker"):
        assert "--metrics-export-port=8080" in _command(services[node])
        assert f"{node}:8080" in targets


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
    for name in ("features", "ray-head", "ray-worker"):  # consumer actors run on the Ray nodes
        assert f"feature-repo:{repo}" in services[name]["volumes"], name
    assert f"features:{worker[worker.index('--metrics-port') + 1]}" in _prometheus_targets(services)


def test_the_pipeline_and_the_ray_nodes_share_one_model_registry(services: dict[str, dict[str, Any]]) -> None:
    """A promotion made through either must reach the consumer actors, which run on the Ray nodes."""
    repository = services["pipeline"]["environment"].get("STREAMINFER_MODEL_REPOSITORY", "/app/models")
    for name in ("pipeline", "ray-head", "ray-worker"):
        assert f"model-repo:{repository}" in services[name]["volumes"], name


def test_grafana_is_provisioned_with_the_dashboard_file_and_the_stacks_prometheus(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in services["grafana"]["volumes"])
    provisioning = REPO_ROOT / next(src for src, dst in mounts.items() if dst == "/etc/grafana/provisioning")
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"].split("//")[1].split(":")[0] in services
    assert _published(services["prometheus"])[int(source["url"].rsplit(":", 1)[1])]
    (provider,) = yaml.safe_load((provisioning / "dashboards/streaminfer.yml").read_text())["providers"]
    dashboards = {Path(dst).name: src for src, dst in mounts.items() if Path(dst).parent == Path(provider["options"]["path"])}
    assert dashboards == {"streaminfer-dashboard.json": "./infra/grafana/streaminfer-dashboard.json"}
