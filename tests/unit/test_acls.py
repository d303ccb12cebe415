"""The ACL list is derived from the settings, covers every topic and group each component uses,
and the files shipped in infra/ are its output at the defaults."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from streaminfer.acls import component_access, kafka_acls_commands, select, strimzi_users
from streaminfer.cli.main import app as cli
from streaminfer.settings import AppSettings
from streaminfer.streams.topics import Topology

ROOT = Path(__file__).resolve().parents[2]


def granted(settings: AppSettings, component: str, resource_type: str = "topic") -> dict[str, tuple[str, ...]]:
    (entry,) = select(component_access(settings), [component])
    return {g.name: g.operations for g in entry.grants if g.resource_type == resource_type}


def test_the_pipeline_reads_requests_writes_every_output_and_owns_its_transactional_ids():
    settings = AppSettings(kafka={"group_id": "fraud"})
    topics = granted(settings, "pipeline")
    system = Topology(settings.topics, settings.monitor.topics)
    assert set(topics) == set(system.pipeline_topics())
    assert topics[settings.topics.requests] == ("Read",)
    assert granted(settings, "pipeline", "group") == {"fraud": ("Read",)}
    (entry,) = select(component_access(settings), ["pipeline"])
    (ids,) = [g for g in entry.grants if g.resource_type == "transactional-id"]
    assert ids.name == "fraud-" and ids.prefixed and ids.operations == ("Write", "Describe")


def test_a_topic_both_read_and_written_is_one_grant_with_both_operations():
    assert granted(AppSettings(), "alerting")["monitoring.alerts.outbox"] == ("Read", "Write")


def test_renamed_topics_and_groups_are_what_gets_granted():
    settings = AppSettings(topics={"requests": "payments.requests"}, features={"app_id": "feat"})
    assert "payments.requests" in granted(settings, "features")
    assert {"feat-pending-changelog", "feat-entity-windows-changelog"} <= set(granted(settings, "features"))
    assert "feat" in granted(settings, "features", "group")


def test_kafka_acls_commands_batch_resources_by_operation():
    commands = kafka_acls_commands("User:app", select(component_access(AppSettings()), ["pipeline"]))
    assert commands[0][:5] == ["--add", "--allow-principal", "User:app", "--operation", "Read"]
    assert commands[-1][-2:] == ["--resource-pattern-type", "prefixed"]


def test_strimzi_users_carry_each_components_acls():
    users = strimzi_users(component_access(AppSettings()), cluster="prod")
    assert [u["metadata"]["name"] for u in users][:2] == ["streaminfer-pipeline", "streaminfer-monitor"]
    acls = users[0]["spec"]["authorization"]["acls"]
    assert {"resource": {"type": "transactionalId", "name": "streaminfer-", "patternType": "prefix"},
            "operations": ["Write", "Describe"], "host": "*"} in acls
    assert users[0]["metadata"]["labels"] == {"strimzi.io/cluster": "prod"}


def test_the_files_in_infra_are_the_generated_lists_at_the_defaults(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("STREAMINFER_"):
            monkeypatch.delenv(name)
    runner = CliRunner()
    script = runner.invoke(cli, ["acls", "--format", "kafka-acls", "--principal", "User:streaminfer"])
    assert script.exit_code == 0
    assert (ROOT / "infra/kafka/acls.sh").read_text() == script.output, "regenerate: streaminfer acls --format kafka-acls > infra/kafka/acls.sh"
    users = runner.invoke(cli, ["acls", "--format", "strimzi", "--cluster", "streaminfer"])
    assert list(yaml.safe_load_all((ROOT / "infra/k8s/base/kafka-users.yaml").read_text())) == list(yaml.safe_load_all(users.output))


def test_an_unknown_component_is_a_usage_error():
    result = CliRunner().invoke(cli, ["acls", "-c", "nope"])
    assert result.exit_code == 2 and "unknown components" in result.output
