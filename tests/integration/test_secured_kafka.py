"""The system on a secured Apache Kafka: SASL_SSL with SCRAM-SHA-512, mutual TLS, OAUTHBEARER,
and ACLs that grant each principal what ``streaminfer acls`` lists and nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import ray

from streaminfer.acls import ComponentAccess, component_access, kafka_acls_script, select
from streaminfer.demo.model import demo_data
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import ensure_topics
from streaminfer.streams.errors import KafkaNotAuthorized
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.streams.topics import Topology
from tests.integration.test_pipeline import demo_records
from tests.support.harness import Collector, app_settings, send, started
from tests.support.kafka_jvm import _java, ensure_kafka_jars
from tests.support.secured_kafka import ScramUser, SecuredKafkaBroker

APP = ScramUser("app", f"app-{uuid.uuid4().hex}")
STRANGER = ScramUser("stranger", f"stranger-{uuid.uuid4().hex}")
COUNT = 300


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    broker = SecuredKafkaBroker(tmp_path_factory.mktemp("secured-kafka"), [APP, STRANGER]).start()
    yield broker
    broker.stop()


def scram(broker: SecuredKafkaBroker, user: ScramUser, **extra) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=broker.address("SCRAM"), security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username=user.name, sasl_password=user.password, ssl_ca_file=broker.ca.cert,
        group_id=f"g-{uuid.uuid4().hex[:6]}", **extra)


def mtls(broker: SecuredKafkaBroker, principal: str) -> KafkaSettings:
    identity = broker.client_identity(principal)
    return KafkaSettings(bootstrap=broker.address("MTLS"), security_protocol="SSL", ssl_ca_file=broker.ca.cert,
                         ssl_cert_file=identity.cert, ssl_key_file=identity.key, group_id=f"g-{uuid.uuid4().hex[:6]}")


def oauth(broker: SecuredKafkaBroker, principal: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=broker.address("OAUTH"), security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
        ssl_ca_file=broker.ca.cert, group_id=f"g-{uuid.uuid4().hex[:6]}",
        oauth={"token_provider": "streaminfer.streams.security.tokens:UnsecuredJwsTokens", "client_id": principal})


def fresh_topics() -> TopicSettings:
    suffix = uuid.uuid4().hex[:6]
    return TopicSettings(requests=f"req-{suffix}", predictions=f"pred-{suffix}", deadletter=f"dlq-{suffix}",
                         shadow=f"shadow-{suffix}", partitions=2)


def grant(broker: SecuredKafkaBroker, principal: str, settings: AppSettings, components: list[str],
          extra: list[ComponentAccess] = ()) -> None:  # type: ignore[assignment]
    """Apply the generated kafka-acls script, as an operator would, with Kafka's own tool."""
    _apply_acls_script(broker, kafka_acls_script(principal, [*select(component_access(settings), components), *extra]))


async def create_topics_as_admin(broker: SecuredKafkaBroker, settings: AppSettings) -> None:
    admin = scram(broker, broker.admin)
    system = Topology(settings.topics, settings.monitor.topics, settings.alerting.topics, settings.features)
    await ensure_topics(admin, system.all())


@pytest.mark.parametrize("login", ["scram", "mtls", "oauth"])
async def test_a_principal_with_exactly_the_listed_acls_runs_the_pipeline(secured, login, model_repo, ray_dashboard):
    principal = f"{login}-{uuid.uuid4().hex[:6]}"
    user = ScramUser(principal, "")  # only for the name: SCRAM logs in as APP below
    kafka = {"scram": lambda: scram(secured, APP), "mtls": lambda: mtls(secured, user.name),
             "oauth": lambda: oauth(secured, user.name)}[login]()
    principal = APP.name if login == "scram" else user.name
    topics = fresh_topics()
    settings = app_settings(kafka, topics, model_repo, consumers=1)
    await create_topics_as_admin(secured, settings)
    grant(secured, f"User:{principal}", settings, ["pipeline", "clients"])

    rows = demo_data().x_test
    app = await started(settings)
    try:
        async with Collector(kafka, topics) as collector:
            records = [*demo_records(rows, COUNT, "ok"), (b"bad", b"not json", [])]
            sent = await send(kafka, topics.requests, records)
            collected = await collector.caught_up(kafka, sent)
    finally:
        await app.stop()
    assert set(collected.ids(collected.predictions)) == {f"ok-{n}" for n in range(COUNT)}
    assert len(collected.dead_letters) == 1


@pytest.mark.parametrize(("missing", "says"), [
    (("topic", "predictions", "Write"), "may not Write topic 'pred-"),
    (("group", None, "Read"), "may not Read group 'g-"),
])
async def test_a_principal_missing_one_acl_is_told_which_resource_and_operation(
    secured, missing, says, model_repo, ray_dashboard
):
    user = ScramUser(f"partial-{uuid.uuid4().hex[:6]}", "")
    kafka = mtls(secured, user.name)
    topics = fresh_topics()
    settings = app_settings(kafka, topics, model_repo, consumers=1)
    await create_topics_as_admin(secured, settings)
    kind, field, _operation = missing
    (entry,) = select(component_access(settings), ["pipeline"])
    dropped = getattr(topics, field) if field else kafka.group_id
    kept = [g for g in entry.grants if not (g.resource_type == kind and g.name == dropped)]
    assert len(kept) == len(entry.grants) - 1
    grant(secured, f"User:{user.name}", settings, [], extra=[ComponentAccess("partial", "", tuple(kept))])

    app = None
    with pytest.raises(KafkaNotAuthorized) as caught:
        app = await started(settings)
        await send(scram(secured, secured.admin), topics.requests, demo_records(demo_data().x_test, 10, "ok"))
        await asyncio.wait_for(app.wait(), 120)
    if app is not None:
        await app.stop()
    assert says in str(caught.value)
    assert str(caught.value).count("\n") == 0


def test_produce_without_write_on_the_requests_topic_is_one_line_naming_it_and_exit_2(secured):
    identity = secured.client_identity(f"reader-{uuid.uuid4().hex[:6]}")  # a principal with no ACL
    env = {**os.environ, "STREAMINFER_KAFKA__BOOTSTRAP": secured.address("MTLS"),
           "STREAMINFER_KAFKA__SECURITY_PROTOCOL": "SSL", "STREAMINFER_KAFKA__SSL_CA_FILE": str(secured.ca.cert),
           "STREAMINFER_KAFKA__SSL_CERT_FILE": str(identity.cert), "STREAMINFER_KAFKA__SSL_KEY_FILE": str(identity.key)}
    result = subprocess.run([sys.executable, "-m", "streaminfer.cli", "produce", "--count", "3", "--topic", "orders"],
                            check=False, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "may not Write topic 'orders'" in lines[0], result.stderr


def test_a_wrong_password_is_one_line_and_exit_2(secured):
    env = {**os.environ, "STREAMINFER_KAFKA__BOOTSTRAP": secured.address("SCRAM"),
           "STREAMINFER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMINFER_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMINFER_KAFKA__SASL_USERNAME": APP.name, "STREAMINFER_KAFKA__SASL_PASSWORD": "wrong-" + APP.password,
           "STREAMINFER_KAFKA__SSL_CA_FILE": str(secured.ca.cert)}
    result = subprocess.run([sys.executable, "-m", "streaminfer.cli", "tail", "--limit", "1"], check=False, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused SCRAM-SHA-512 login as 'app'" in lines[0], result.stderr
    assert APP.password not in result.stderr + result.stdout


def test_an_untrusted_broker_certificate_is_one_line_and_exit_2(secured, tmp_path: Path):
    env = {**os.environ, "STREAMINFER_KAFKA__BOOTSTRAP": secured.address("SCRAM"),
           "STREAMINFER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMINFER_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMINFER_KAFKA__SASL_USERNAME": APP.name, "STREAMINFER_KAFKA__SASL_PASSWORD": APP.password}
    result = subprocess.run([sys.executable, "-m", "streaminfer.cli", "tail", "--limit", "1"], check=False, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not trusted" in lines[0] and "ssl_ca_file" in lines[0], result.stderr


def _files_holding(root: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                found += [f"{path}: {secret[:6]}..." for secret in secrets if secret.encode() in data]
    return found


@pytest.mark.parametrize("login", ["scram", "mtls"])
async def test_the_whole_system_over_sasl_ssl_or_mtls_with_the_listed_acls_alerts_and_leaks_no_secret(
    secured, login, model_repo, ray_dashboard, tmp_path, monkeypatch
):
    """`run --alerts` as a principal holding the pipeline's, monitor's and alerting's ACLs:
    drifting requests in, a signed webhook out; then no secret it was given (the SASL password,
    the webhook's HMAC key) is in a log line, a file it wrote, a metrics endpoint, or what the
    Ray dashboard shows of its actors."""
    from tests.integration.test_alerting import SECRET as HOOK_SECRET
    from tests.integration.test_alerting import SHIFTED, Stack, rules_file, statuses
    from tests.support.receiver import WebhookReceiver

    kafka = scram(secured, APP) if login == "scram" else mtls(secured, APP.name)  # one principal, "app"
    monkeypatch.setenv("TEST_TEAM_SECRET", HOOK_SECRET)
    async with WebhookReceiver(HOOK_SECRET) as receiver:
        stack = Stack(kafka, tmp_path, model_repo, rules_file(tmp_path, receiver.url))
        settings = app_settings(kafka, stack.topics, model_repo, monitor=stack.monitor_settings, consumers=1,
                                metrics={"port": 0, "targets_file": tmp_path / "targets.json"})
        settings = settings.model_copy(update={"alerting": stack.alerting.model_copy(
            update={"rules_file": rules_file(tmp_path, receiver.url)})})
        await create_topics_as_admin(secured, settings)
        grant(secured, f"User:{APP.name}", settings, ["pipeline", "monitor", "alerting", "clients"])
        app = await started(settings)
        try:
            stack.topics = settings.topics
            await stack.send_drifting_requests()
            await receiver.until(lambda r: {f for f, s in statuses(r) if s == "firing"} >= set(SHIFTED), timeout_s=120)
            shown = {url: await _get(url) for url in [
                *app.metrics_urls, f"{ray_dashboard}/api/v0/actors?detail=1", f"{ray_dashboard}/api/v0/tasks?detail=1"]}
        finally:
            await app.stop()
    assert all(r.signature_valid for r in receiver.received)

    secrets = [APP.password, HOOK_SECRET]
    for url, body in shown.items():
        assert not [s for s in secrets if s in body], f"a secret is shown at {url}"
    session = Path(ray._private.worker._global_node.get_session_dir_path())  # the session's logs
    assert _files_holding(session / "logs", secrets) == []
    assert _files_holding(tmp_path, secrets) == []  # checkpoints, reports, targets, the rules file


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
        return await response.text()


@pytest.mark.parametrize("login", ["scram", "mtls"])
async def test_the_feature_worker_over_sasl_ssl_or_mtls_with_the_listed_acls_fills_the_online_store(
    secured, login, model_repo, ray_dashboard, tmp_path
):
    """Pipeline and feature worker (Faust app and Feast sink) as a principal holding the
    pipeline's and the features' ACLs; the test itself sends and reads over the PLAINTEXT
    listener as ``User:ANONYMOUS`` with the clients' ACLs."""
    from streaminfer.streams.features.store import init_repository
    from tests.integration.test_features import (
        entity_requests,
        expected_online,
        prediction_scores,
        produce_at,
        wait_until_online_matches,
    )
    from tests.support.features import FeatureWorker, feature_settings

    kafka = scram(secured, APP) if login == "scram" else mtls(secured, APP.name)
    features = feature_settings(tmp_path, "sqlite", None)
    init_repository(features)
    topics = fresh_topics()
    settings = app_settings(kafka, topics, model_repo, consumers=1).model_copy(update={"features": features})
    await create_topics_as_admin(secured, settings)
    grant(secured, f"User:{APP.name}", settings, ["pipeline", "features", "clients"])
    grant(secured, "User:ANONYMOUS", settings, ["clients"])
    plain = secured.address("PLAIN")
    sent, records = entity_requests(uuid.uuid4().hex[:6], 60, int(time.time() * 1000) - 10 * 60_000)
    app = await started(settings)
    try:
        with FeatureWorker(kafka, topics, features, tmp_path / "worker.log") as worker:
            await produce_at(plain, topics.requests, records)
            scores = await prediction_scores(plain, topics, len(records))
            await wait_until_online_matches(features, expected_online(sent, scores, features), worker)
    finally:
        await app.stop()


def test_a_new_user_with_a_settings_file_runs_produces_and_tails_over_sasl_ssl(secured, model_repo, tmp_path: Path):
    """What the README tells a user: the SCRAM login and the CA in a TOML file named with
    ``--settings``, the ACLs from ``streaminfer acls`` applied with ``kafka-acls``, then ``run``,
    ``produce`` and ``tail`` as processes; the password is never printed."""
    topics = fresh_topics()
    settings_file = tmp_path / "streaminfer.toml"
    settings_file.write_text(
        f'model_repository = "{model_repo.root}"\n'
        f'[kafka]\nbootstrap = "{secured.address("SCRAM")}"\nsecurity_protocol = "SASL_SSL"\n'
        f'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "{APP.name}"\nsasl_password = "{APP.password}"\n'
        f'ssl_ca_file = "{secured.ca.cert}"\ngroup_id = "g-{uuid.uuid4().hex[:6]}"\n'
        f'[topics]\nrequests = "{topics.requests}"\npredictions = "{topics.predictions}"\n'
        f'deadletter = "{topics.deadletter}"\nshadow = "{topics.shadow}"\npartitions = 2\n'
        '[metrics]\nport = 0\n'
    )
    settings_file.chmod(0o600)
    command = [sys.executable, "-m", "streaminfer.cli", "--settings", str(settings_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMINFER_")}
    script = subprocess.run([*command, "acls", "--principal", f"User:{APP.name}", "--format", "kafka-acls",
                             "-c", "pipeline", "-c", "clients"], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    settings = AppSettings(model_repository=model_repo.root, topics=topics, kafka=scram(secured, APP))
    asyncio.run(create_topics_as_admin(secured, settings))
    _apply_acls_script(secured, script.stdout)

    run_log = tmp_path / "run.log"
    with run_log.open("wb") as out:
        run = subprocess.Popen([*command, "run", "--consumers", "1", "--no-monitor", "--no-experiments"],
                               env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        produced = subprocess.run([*command, "produce", "--count", "20"], check=False, env=env, capture_output=True, text=True,
                                  timeout=120)
        assert produced.returncode == 0, produced.stderr
        tailed = subprocess.run([*command, "tail", "--from-beginning", "--limit", "20"], check=False, env=env, capture_output=True,
                                text=True, timeout=240)
        assert tailed.returncode == 0, tailed.stderr + run_log.read_text()[-3000:]
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
    answers = [line for line in tailed.stdout.splitlines() if '"model_name"' in line]
    assert len(answers) == 20, tailed.stdout
    assert run.returncode == 130, run_log.read_text()[-3000:]  # Ctrl-C: stopped cleanly, no traceback
    assert "Traceback" not in run_log.read_text()
    printed = produced.stdout + produced.stderr + tailed.stdout + tailed.stderr + run_log.read_text()
    assert APP.password not in printed


def _apply_acls_script(broker: SecuredKafkaBroker, script_text: str) -> None:
    """Run a ``streaminfer acls --format kafka-acls`` script with Kafka's own tool, as an operator would."""
    script = broker.work_dir / f"acls-{uuid.uuid4().hex[:6]}.sh"
    script.write_text(script_text)
    kafka_acls = broker.work_dir / "kafka-acls.sh"  # what a Kafka installation's bin/ has
    kafka_acls.write_text("#!/usr/bin/env bash\nexec " + " ".join(
        shlex.quote(arg) for arg in [*_java(ensure_kafka_jars()), "org.apache.kafka.tools.AclCommand"]) + ' "$@"\n')
    kafka_acls.chmod(0o755)
    result = subprocess.run(["bash", str(script)], check=False, capture_output=True, text=True, timeout=300, env={
        **os.environ, "KAFKA_ACLS": str(kafka_acls), "BOOTSTRAP": broker.address("SCRAM"),
        "ADMIN_CONFIG": str(broker.admin_command_config())})
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
