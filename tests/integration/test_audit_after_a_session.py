"""`streaminfer audit report` after a scripted session: a promotion, a tag, an experiment whose arm
is chosen by that tag, a rollback, a canary the controller's evidence rolled back, alerts the
dispatcher notified to the outbox topic and dead letters of two reasons on a real broker; the
JSON counts each, and the HTML shows the same counts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import msgspec
from typer.testing import CliRunner

from streaminfer.cli.main import app as cli
from streaminfer.monitoring.alerting.config import RouteConfig
from streaminfer.monitoring.alerting.dispatch import Dispatcher
from streaminfer.monitoring.alerting.rules import Alert
from streaminfer.monitoring.experiments.evidence import ExperimentEvidence
from streaminfer.schemas.deadletter import Reason, error_headers
from streaminfer.schemas.notifications import Notification, encode_alerting
from streaminfer.streams.clients import KafkaClients, ensure_topic_names, start_client
from streaminfer.streams.experiment_controller import save_snapshot
from streaminfer.streams.settings import KafkaSettings
from streaminfer.workers.models.privacy import PrivacyPolicy
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.traffic import Canary, TrafficPolicy
from tests.support.models import write_table_model

DEAD_LETTERS = [Reason.INVALID_JSON] * 3 + [Reason.UNKNOWN_MODEL] * 2


def alert_notifications(now_ms: int) -> list[Notification]:
    """Two alerts fire, then one of them resolves, as the rules consumer's dispatcher notifies them."""
    dispatcher = Dispatcher(RouteConfig(receiver="team", group_by=["alertname"], group_wait_s=0, group_interval_s=1))

    def alert(name: str, ends_ms: int | None = None) -> Alert:
        return Alert(name, {"alertname": name, "model": "m"}, {}, 1.0, now_ms, ends_ms)

    fired = dispatcher.apply([alert("HighErrorRate"), alert("Drift")], [], [], now_ms)
    resolved = dispatcher.apply([alert("Drift")], [alert("HighErrorRate", now_ms + 1000)], [], now_ms + 1000)
    assert len(fired) == 2 and len(resolved) == 1
    return fired + resolved


async def record_on_kafka(kafka: KafkaSettings, deadletter: str, outbox: str) -> None:
    """Dead letters with the pipeline's error headers, and notifications as the rules consumer
    writes them to the outbox (keyed by receiver)."""
    await ensure_topic_names(kafka, [deadletter, outbox], partitions=2, replication_factor=1)
    producer = KafkaClients(kafka).producer()
    await start_client(producer, kafka.bootstrap)
    try:
        for offset, reason in enumerate(DEAD_LETTERS):
            headers = error_headers(reason=reason, message="scripted", topic="requests", partition=0, offset=offset,
                                    model="m", version="1.1.0")
            await producer.send_and_wait(deadletter, b"{}", key=str(offset).encode(), headers=headers)
        for notification in alert_notifications(int(time.time() * 1000)):
            await producer.send_and_wait(outbox, encode_alerting(notification), key=notification.receiver.encode())
    finally:
        await producer.stop()


def test_audit_report_after_a_scripted_session_counts_what_happened(bootstrap, tmp_path):
    repository = ModelRepository(tmp_path / "models")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        write_table_model(repository, version, name="m")
    newest = repository.resolve("m", "1.2.0")
    repository.save_metadata(msgspec.structs.replace(newest.metadata, privacy=PrivacyPolicy(parameters={"entity_id": "hash"})))
    suffix = uuid.uuid4().hex[:8]
    deadletter, outbox, snapshots = f"deadletter-{suffix}", f"outbox-{suffix}", tmp_path / "experiments"
    env = {"STREAMINFER_TOPICS__DEADLETTER": deadletter, "STREAMINFER_ALERTING__TOPICS__OUTBOX": outbox,
           "STREAMINFER_EXPERIMENTS__SNAPSHOTS_DIR": str(snapshots), "STREAMINFER_MODEL_REPOSITORY": str(repository.root),
           "COLUMNS": "200"}
    runner = CliRunner()

    def streaminfer(*args: str):
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == 0, result.output + result.stderr
        return result

    started = time.time()
    streaminfer("models", "promote", "m", "1.1.0", "--who", "ana", "--why", "better recall")
    streaminfer("models", "tag", "m", "1.2.0", "env=candidate", "experiment=exp-12", "--who", "ben", "--why", "next up")
    streaminfer("experiments", "split", "m", "--name", "exp-12", "--arm", "a=production", "--arm", "b=tag:env=candidate")
    streaminfer("models", "rollback", "m", "--who", "ana", "--why", "latency regressed")
    canary = ExperimentEvidence("m", TrafficPolicy("canary-1", canary=Canary("1.1.0", "1.2.0", min_requests=20)))
    for _ in range(5):
        canary.failed("candidate", "1.2.0")
    save_snapshot(snapshots, canary.look(int(time.time() * 1000)))
    asyncio.run(record_on_kafka(KafkaSettings(bootstrap=bootstrap), deadletter, outbox))

    out = tmp_path / "audit"
    printed = streaminfer("audit", "report", "--bootstrap", bootstrap, "--out", str(out)).output
    assert "1 promotions, 1 rollbacks, 1 tag changes" in " ".join(printed.split())
    report = json.loads((out / "audit.json").read_text())
    counts = report["counts"]
    assert (counts["promotions"], counts["rollbacks"], counts["tag_changes"], counts["traffic_changes"]) == (1, 1, 1, 1)
    assert (counts["experiments"], counts["alerts_fired"], counts["alerts_resolved"], counts["dead_letters"]) == (1, 2, 1, 5)
    assert report["dead_letters"]["by_reason"] == {"invalid_json": 3, "unknown_model": 2}
    assert [(c["action"], c["who"], c["why"]) for c in report["changes"]] == [
        ("promote", "ana", "better recall"), ("tag", "ben", "next up"), ("traffic", report["changes"][2]["who"], ""),
        ("rollback", "ana", "latency regressed")]
    assert "1.2.0" in report["changes"][2]["detail"]  # the arm the tag selected, by its version
    assert [s["version"] for s in report["served"]] == ["1.1.0", "1.2.0"]  # from the first record on
    assert {p["version"]: p["parameters"] for p in report["privacy"]} == {"1.1.0": {}, "1.2.0": {"entity_id": "hash"}}
    (experiment,) = report["experiments"]
    assert (experiment["name"], experiment["outcome"]) == ("canary-1", "rollback")
    page = (out / "audit.html").read_text()
    for name, value in counts.items():
        assert f'<tr><td>{name.replace("_", " ")}</td><td class="n">{value}</td></tr>' in page
    assert '<tr><td>invalid_json</td><td class="n">3</td></tr>' in page
    assert '<tr><td>unknown_model</td><td class="n">2</td></tr>' in page

    before = streaminfer("audit", "report", "--bootstrap", bootstrap, "--out", str(tmp_path / "before"),
                         "--until", str(int(started * 1000) - 1))
    assert before.exit_code == 0
    earlier = json.loads((tmp_path / "before" / "audit.json").read_text())["counts"]
    assert (earlier["promotions"], earlier["alerts_fired"], earlier["dead_letters"]) == (0, 0, 0)
