"""The audit report over a window, from records written by their own writers at fixed times:
versions served and for how long, changes with who and why, experiments, alerts, privacy
policies and dead letters, counted exactly, and the same counts in the HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from streaminfer.cli.main import app as cli
from streaminfer.monitoring.alerting.config import RouteConfig
from streaminfer.monitoring.alerting.dispatch import Dispatcher
from streaminfer.monitoring.alerting.rules import Alert
from streaminfer.monitoring.experiments.evidence import ExperimentEvidence
from streaminfer.reports.audit import Window, build_report, parse_moment, write_report
from streaminfer.schemas.deadletter import Reason, error_headers
from streaminfer.streams.deadletters import DeadLetter
from streaminfer.streams.experiment_controller import save_snapshot
from streaminfer.workers.models.privacy import PrivacyPolicy
from streaminfer.workers.models.registry import PRODUCTION, AuditEntry, ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.traffic import Canary, TrafficPolicy
from tests.support.models import write_table_model

T0 = 1_700_000_000_000
S = 1000


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    repository = ModelRepository(tmp_path / "models")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        write_table_model(repository, version, name="m")
    entry = repository.resolve("m", "1.2.0")
    repository.save_metadata(msgspec.structs.replace(entry.metadata, privacy=PrivacyPolicy(parameters={"entity_id": "hash"})))
    registry = ModelRegistry(repository)
    for entry in (
        AuditEntry(T0, "ana", "promote", PRODUCTION, "1.0.0", "1.1.0", why="better recall"),
        AuditEntry(T0 + 60 * S, "ben", "tag", "", None, "1.2.0", why="canary next", detail="env: - -> candidate"),
        AuditEntry(T0 + 120 * S, "ana", "rollback", PRODUCTION, "1.1.0", "1.0.0", why="latency"),
        AuditEntry(T0 + 300 * S, "ana", "promote", PRODUCTION, "1.0.0", "1.2.0", why="canary passed"),
    ):
        registry.record("m", entry)
    return registry


def canary_rollback(snapshots: Path, at_ms: int) -> None:
    """A canary whose candidate failed its error gate, looked at by the controller's evidence."""
    policy = TrafficPolicy("exp-1", canary=Canary("1.0.0", "1.2.0", min_requests=20))
    evidence = ExperimentEvidence("m", policy)
    for _ in range(5):
        evidence.failed("candidate", "1.2.0")
    save_snapshot(snapshots, evidence.look(at_ms))


def notifications() -> list:
    """Two alerts fire and one resolves (notified as firing, then as resolved): the real
    dispatcher's notifications."""
    dispatcher = Dispatcher(RouteConfig(receiver="team", group_by=["alertname"], group_wait_s=0,
                                        routes=[RouteConfig(matchers=["severity=critical"], receiver="pager",
                                                            group_wait_s=0)]))

    def alert(name: str, ends_ms: int | None = None) -> Alert:
        severity = "critical" if name == "HighErrorRate" else "warning"
        return Alert(name, {"alertname": name, "model": "m", "severity": severity}, {}, 1.0, T0 + 130 * S, ends_ms)

    sent = [(T0 + 130 * S, n) for n in dispatcher.apply([alert("HighErrorRate"), alert("Drift")], [], [], T0 + 130 * S)]
    sent += [(T0 + 200 * S, n) for n in dispatcher.apply([alert("Drift")], [alert("HighErrorRate", T0 + 200 * S)], [],
                                                         T0 + 200 * S)]
    return sent


def letters() -> list[DeadLetter]:
    def letter(offset: int, reason: Reason, at_ms: int) -> DeadLetter:
        headers = error_headers(reason=reason, message="x", topic="requests", partition=0, offset=offset, model="m")
        return DeadLetter("deadletter", 0, offset, at_ms, None, b"{}", tuple(headers))

    return [letter(0, Reason.INVALID_JSON, T0 + 10 * S), letter(1, Reason.INVALID_JSON, T0 + 20 * S),
            letter(2, Reason.INVALID_JSON, T0 + 250 * S), letter(3, Reason.UNKNOWN_MODEL, T0 + 30 * S),
            letter(4, Reason.UNKNOWN_MODEL, T0 + 900 * S)]


def report(registry: ModelRegistry, snapshots: Path, since_s: int, until_s: int):
    return build_report(registry, snapshots, Window(T0 + since_s * S, T0 + until_s * S), notifications(), letters(), {})


def test_versions_served_are_production_s_stretches_within_the_window(registry, tmp_path):
    whole = report(registry, tmp_path, 0, 600)
    assert [(s.version, s.seconds) for s in whole.served] == [("1.1.0", 120.0), ("1.0.0", 180.0), ("1.2.0", 300.0)]
    middle = report(registry, tmp_path, 100, 200)
    assert [(s.version, s.seconds) for s in middle.served] == [("1.1.0", 20.0), ("1.0.0", 80.0)]
    assert middle.served_seconds == {"m": {"1.1.0": 20.0, "1.0.0": 80.0}}
    before_any = report(registry, tmp_path, -100, -50)
    assert [(s.version, s.seconds) for s in before_any.served] == [("1.0.0", 50.0)]


def test_every_change_in_the_window_is_listed_with_who_and_why_and_counted(registry, tmp_path):
    whole = report(registry, tmp_path, 0, 600)
    assert [(c.action, c.who, c.why) for c in whole.changes] == [
        ("promote", "ana", "better recall"), ("tag", "ben", "canary next"), ("rollback", "ana", "latency"),
        ("promote", "ana", "canary passed")]
    c = whole.counts
    assert (c.promotions, c.rollbacks, c.tag_changes, c.alias_changes) == (2, 1, 1, 0)
    assert [x.action for x in report(registry, tmp_path, 100, 200).changes] == ["rollback"]


def test_experiments_alerts_and_dead_letters_are_counted_within_the_window(registry, tmp_path):
    canary_rollback(tmp_path, T0 + 150 * S)
    canary_rollback(tmp_path / "later", T0 + 800 * S)
    whole = report(registry, tmp_path, 0, 600)
    (experiment,) = whole.experiments
    assert (experiment.name, experiment.kind, experiment.outcome) == ("exp-1", "canary", "rollback")
    assert experiment.decisions[0].gate == "error_rate" and "error rate" in experiment.verdict
    assert {(a.name, a.status) for a in whole.alerts} == {("HighErrorRate", "resolved"), ("Drift", "firing")}
    assert {a.name: a.receivers for a in whole.alerts} == {"HighErrorRate": ["pager"], "Drift": ["team"]}
    assert (whole.counts.alerts_fired, whole.counts.alerts_resolved) == (2, 1)
    assert whole.dead_letters.by_reason == {"invalid_json": 3, "unknown_model": 1}
    assert whole.dead_letters.by_model == {"m": {"invalid_json": 3, "unknown_model": 1}}
    early = report(registry, tmp_path, 0, 100)
    assert (early.counts.experiments, early.counts.alerts_fired, early.counts.dead_letters) == (0, 0, 3)


def test_privacy_policies_are_those_of_the_versions_served(registry, tmp_path):
    policies = {(p.version, json.dumps(p.parameters)) for p in report(registry, tmp_path, 0, 600).privacy}
    assert policies == {("1.0.0", "{}"), ("1.1.0", "{}"), ("1.2.0", '{"entity_id": "hash"}')}
    assert {p.version for p in report(registry, tmp_path, 0, 100).privacy} == {"1.1.0"}


def test_the_html_shows_the_counts_the_json_holds(registry, tmp_path):
    canary_rollback(tmp_path, T0 + 150 * S)
    json_path, html_path = write_report(report(registry, tmp_path, 0, 600), tmp_path / "out")
    counts = json.loads(json_path.read_text())["counts"]
    page = html_path.read_text()
    for name, value in counts.items():
        assert f'<tr><td>{name.replace("_", " ")}</td><td class="n">{value}</td></tr>' in page
    assert re.search(r"<td>invalid_json</td><td class=\"n\">3</td>", page)
    assert "entity_id: hash" in page and "latency" in page


def test_since_and_until_take_dates_times_and_epoch_milliseconds():
    assert parse_moment("2023-11-14") == 1_699_920_000_000
    assert parse_moment("2023-11-14T22:13:20") == T0
    assert parse_moment("2023-11-14T23:13:20+01:00") == T0
    assert parse_moment(str(T0)) == T0
    with pytest.raises(ValueError):
        parse_moment("yesterday")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--since", "last week"], "--since takes an ISO 8601 date"),
    (["--until", "2023-13-01"], "--until takes an ISO 8601 date"),
    (["--since", "2023-11-15", "--until", "2023-11-14"], "is not before --until"),
])
def test_a_bad_window_fails_in_one_line(args, fragment, tmp_path):
    result = CliRunner().invoke(cli, ["audit", "report", "--no-kafka", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
