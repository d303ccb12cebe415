"""Every topic declared once (``streams.topics``): the declaration lists every topic the settings
name and every topic a service reads or writes, the pipeline's health reports follow the metrics
topic, and services create topics laid out as declared, on in-memory clients."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from streaminfer.monitoring.alerting.config import load_config
from streaminfer.monitoring.observability.metrics import ExperimentMetrics, MonitorMetrics
from streaminfer.monitoring.settings import MonitorTopics
from streaminfer.schemas.codec import Prediction, ResponseTensor, encode
from streaminfer.schemas.monitoring_events import Label, decode_metric_event, encode_event
from streaminfer.settings import AppSettings
from streaminfer.streams.alerting.rules_consumer import AlertingService
from streaminfer.streams.clients import ensure_topics
from streaminfer.streams.errors import TopicConflict, UndeclaredTopic
from streaminfer.streams.experiment_controller import ExperimentController
from streaminfer.streams.monitor import Monitor
from streaminfer.streams.settings import TopicSettings
from streaminfer.streams.single_reader import SingleReader
from streaminfer.streams.topics import TopicSpec, Topology
from streaminfer.topology import topology
from streaminfer.workers.models.repository import ModelRepository
from tests.support.fake_kafka import FakeBroker, FakeClients


def named_topics(model: BaseModel) -> set[str]:
    """The value of every string field of every topics model (``TopicSettings``, ``*Topics``)
    under ``model``: what the settings name as topics."""
    found: set[str] = set()
    topics_model = type(model) is TopicSettings or type(model).__name__.endswith("Topics")
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found |= named_topics(value)
        elif topics_model and isinstance(value, str):
            found.add(value)
    return found


def local(tmp_path: Path, rename: bool = True, **updates: dict) -> AppSettings:
    """Settings with every local path under ``tmp_path`` and (``rename``) every topic renamed;
    ``updates`` are merged into their section."""
    sections: dict[str, dict] = {
        "topics": {"partitions": 3},
        "monitor": {"checkpoint_dir": tmp_path / "monitor", "reports_dir": tmp_path / "reports", "metric_event_every": 1},
        "alerting": {"checkpoint_dir": tmp_path / "alerting"},
        "experiments": {"snapshots_dir": tmp_path / "experiments"},
        "features": {},
    }
    if rename:
        sections["topics"] |= {"requests": "rq", "predictions": "pr", "deadletter": "dl", "shadow": "sh"}
        sections["monitor"]["topics"] = {"labels": "lb", "drift": "dr", "metrics": "mt"}
        sections["alerting"]["topics"] = {"silences": "si", "outbox": "ob", "deadletter": "adl"}
        sections["features"] = {"app_id": "feat", "topics": {"joinable": "fj", "scored": "fs", "rows": "fr",
                                                             "log": "fl", "deadletter": "fd"}}
    for section, update in updates.items():
        sections[section] |= update
    return AppSettings(model_repository=tmp_path / "models", **sections)


def rules_file(tmp_path: Path, receivers: int = 1) -> Path:
    names = [f"team-{n}" for n in range(receivers)]
    entries = "".join(f"  - {{name: {name}, url: 'http://127.0.0.1:9/', secret_env: SECRET}}\n" for name in names)
    path = tmp_path / "rules.yml"
    path.write_text("receivers:\n" + entries + textwrap.dedent(f"""\
        route: {{receiver: {names[0]}}}
        rules:
          - {{name: Drift, signal: drift, reduce: count, window_s: 60, op: ">=", value: 1}}
    """))
    return path


def services(settings: AppSettings, clients: FakeClients, tmp_path: Path, receivers: int = 1) -> list[SingleReader]:
    """The three single readers, built from the settings as the composition root builds them."""
    repository = ModelRepository(settings.model_repository)
    config, _ = load_config(rules_file(tmp_path, receivers), {"SECRET": "s"})
    return [
        Monitor(settings.kafka, settings.topics, settings.monitor, repository, settings.pipeline.default_model,
                MonitorMetrics(CollectorRegistry()), clients=clients),
        AlertingService(settings.kafka, config, settings.monitor.topics, settings.alerting, topics=settings.topics,
                        clients=clients),
        ExperimentController(settings.kafka, settings.topics, settings.monitor.topics, settings.experiments,
                             repository, ExperimentMetrics(CollectorRegistry()), clients=clients),
    ]


async def until(predicate, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("make", [lambda tmp: AppSettings(), local], ids=["defaults", "renamed"])
def test_the_declaration_lists_every_topic_the_settings_name_and_no_other(make, tmp_path):
    settings = make(tmp_path)
    declared = [spec.name for spec in topology(settings).all()]
    assert len(declared) == len(set(declared))
    assert set(declared) == named_topics(settings) | set(settings.features.changelog_topics())


async def test_each_single_reader_creates_reads_and_writes_only_declared_topics_laid_out_as_declared(tmp_path):
    settings = local(tmp_path)
    declared = {spec.name: spec for spec in topology(settings, receivers=1).all()}
    reads = {}
    for service in services(settings, clients := FakeClients(broker := FakeBroker()), tmp_path):
        before = len(clients.consumers)
        async with service:
            reads[type(service).__name__] = {tp.topic for tp in clients.consumers[before].assigned}
    assert reads == {
        "Monitor": {"rq", "pr", "lb"},
        "AlertingService": {"dr", "mt", "si"},
        "ExperimentController": {"pr", "dl", "sh", "lb"},
    }
    created = set(clients.created())
    assert created == {"rq", "pr", "dl", "sh", "lb", "dr", "mt", "si", "ob", "adl"}
    for name in created:
        spec = declared[name]
        assert (broker.partitions[name], broker.replicas[name]) == (spec.partitions, spec.replication_factor)
    assert set(clients.sent()) <= set(declared)


async def test_changing_the_metrics_topic_moves_the_health_reports_and_what_monitor_and_alerting_use(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("STREAMINFER_MONITOR__TOPICS__METRICS", "ops.metrics")
    settings = local(tmp_path, rename=False)
    # what the composition root hands the pipeline: health reports on the metrics topic
    assert topology(settings).pipeline.health == "ops.metrics"
    assert "ops.metrics" in topology(settings).pipeline_topics()

    clients = FakeClients(broker := FakeBroker())
    monitor, alerting, _ = services(settings, clients, tmp_path)
    async with alerting:
        assert "ops.metrics" in {tp.topic for tp in clients.consumers[-1].assigned}
    async with monitor:
        prediction = Prediction("r-1", "m", "1", [ResponseTensor("label", [1], "INT64", [1])])
        broker.append(settings.topics.predictions, encode(prediction), timestamp=1_000)
        broker.append(settings.monitor.topics.labels, encode_event(Label("r-1", 1)), timestamp=2_000)
        await until(lambda: broker.values("ops.metrics"))
    events = [decode_metric_event(value) for value in broker.values("ops.metrics")]
    assert {e.metric for e in events} >= {"accuracy"} and {e.model for e in events} == {"m"}


def test_the_health_reports_can_be_turned_off_but_not_sent_anywhere_but_the_metrics_topic(monkeypatch):
    monkeypatch.setenv("STREAMINFER_TOPICS__HEALTH", "")
    assert topology(AppSettings()).pipeline.health is None
    assert topology(AppSettings()).pipeline_topics() == [
        "inference.requests", "inference.predictions", "inference.deadletter", "inference.shadow", "inference.control"]
    monkeypatch.setenv("STREAMINFER_TOPICS__HEALTH", "elsewhere")
    with pytest.raises(ValidationError, match="STREAMINFER_MONITOR__TOPICS__METRICS"):
        AppSettings()


def test_settings_not_yet_bound_report_health_on_the_default_metrics_topic():
    assert TopicSettings().health == MonitorTopics().metrics
    bound = TopicSettings().reporting_to(MonitorTopics(metrics="mt"))
    assert bound.health == "mt" and bound.model_copy(update={"partitions": 2}).health == "mt"


async def test_alerting_lays_out_its_topics_by_the_declaration_not_by_its_own_counts(tmp_path):
    settings = local(tmp_path, topics={"partitions": 8, "replication_factor": 3})
    clients = FakeClients(broker := FakeBroker())
    _, alerting, _ = services(settings, clients, tmp_path, receivers=6)
    async with alerting:
        pass
    layout = {name: (broker.partitions[name], broker.replicas[name]) for name in clients.created()}
    assert layout == {"dr": (8, 3), "mt": (8, 3), "si": (1, 3), "ob": (6, 3), "adl": (1, 3)}
    assert Topology(receivers=2).select(["monitoring.alerts.outbox"])[0].partitions == 4


def test_two_settings_giving_one_name_to_topics_laid_out_differently_are_refused():
    with pytest.raises(TopicConflict, match=r"monitoring\.silences"):
        Topology(monitor=MonitorTopics(drift="monitoring.silences")).all()
    same_layout = Topology(monitor=MonitorTopics(labels="inference.requests"))
    assert [spec.name for spec in same_layout.all()].count("inference.requests") == 1


def test_a_topic_the_declaration_does_not_list_is_refused():
    with pytest.raises(UndeclaredTopic, match="nowhere"):
        Topology().select(["inference.requests", "nowhere"])


async def test_ensure_topics_creates_the_missing_topics_only_and_compacts_those_declared_so():
    broker = FakeBroker()
    broker.create("kept", partitions=1)
    clients = FakeClients(broker)
    await ensure_topics(clients, [TopicSpec("kept", 4, 1), TopicSpec("log", 2, 1), TopicSpec("state", 2, 1, compacted=True)])
    assert clients.created() == ["log", "state"]
    assert broker.partitions == {"kept": 1, "log": 2, "state": 2}
    assert broker.configs["state"] == {"cleanup.policy": "compact"} and broker.configs["log"] == {}
