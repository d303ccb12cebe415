"""Connections besides Kafka, secured, against real parts: webhooks to an HTTPS receiver whose
certificate comes from a throwaway CA, a real Prometheus scraping a metrics endpoint that wants
basic auth over TLS, and the Redis online store behind a password and TLS.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import ray
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr

from streaminfer.broker import free_port
from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME
from streaminfer.loadgen import demo_payloads
from streaminfer.monitoring.alerting.delivery_metrics import DeliveryMetrics
from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from streaminfer.monitoring.drift.model_watch import reference_frame
from streaminfer.monitoring.drift.simulate import drifting_stream
from streaminfer.monitoring.observability.discovery import ScrapeTarget, write_targets
from streaminfer.monitoring.observability.endpoint import MetricsAccess, serve_metrics, stop_serving
from streaminfer.streams.features.connection import PASSWORD_VARIABLE
from streaminfer.streams.features.online import OnlineFeatures
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import (
    CREATED,
    ENTITY_KEY,
    STATS_PUSH,
    TIMESTAMP,
    init_repository,
    open_store,
    stats_features,
    window_spec,
)
from tests.integration.test_monitoring import eventually as eventually_equal
from tests.integration.test_monitoring import monitor_settings, produce
from tests.support.certificates import CertificateAuthority
from tests.support.harness import Collector, app_settings, started
from tests.support.prometheus import PrometheusServer
from tests.support.receiver import WebhookReceiver
from tests.support.webhook_delivery import (
    FAST,
    counts,
    delivery,
    eventually,
    fresh_topics,
    notification,
    read_dead_letters,
    write,
)

pytestmark = pytest.mark.integration

SECRET = "https-hook-secret"


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


def https_receiver(authority: CertificateAuthority) -> WebhookReceiver:
    server = authority.issue("receiver", server=True)
    return WebhookReceiver(SECRET, tls=(server.cert, server.key))


def config(receiver: WebhookReceiver, ca_file: Path | None) -> ReceiverConfig:
    return ReceiverConfig(name="ops", url=receiver.url, secret=SecretStr(SECRET), timeout_s=2.0,
                          max_backoff_s=0.5, ca_file=ca_file)


async def test_https_receiver_signed_by_the_configured_ca_gets_every_notification_signed(kafka_settings, authority):
    topics = await fresh_topics(kafka_settings)
    sent = [notification("ops", n) for n in range(4)]
    await write(kafka_settings, topics.outbox, sent)
    async with https_receiver(authority) as receiver:
        assert receiver.url.startswith("https://")
        async with delivery(kafka_settings, topics, [config(receiver, authority.cert)]) as worker:
            await receiver.until(lambda r: len(r.by_idempotency_key()) == len(sent))
            await eventually(lambda: counts(worker, "ops")["delivered"] == len(sent), "delivered counted")
    assert receiver.by_idempotency_key() == {n.id: 1 for n in sent}
    assert all(got.signature_valid for got in receiver.received)


async def test_https_receiver_trusted_through_the_delivery_wide_ca_file(kafka_settings, authority):
    topics = await fresh_topics(kafka_settings)
    sent = [notification("ops", 0)]
    await write(kafka_settings, topics.outbox, sent)
    settings = FAST.model_copy(update={"ca_file": authority.cert})
    receiver = https_receiver(authority)
    async with receiver, delivery(kafka_settings, topics, [config(receiver, None)], settings) as worker:
        await receiver.until(lambda r: len(r.by_idempotency_key()) == 1)
        await eventually(lambda: counts(worker, "ops")["delivered"] == 1, "delivered counted")
    assert receiver.received[0].signature_valid


async def test_https_receiver_with_an_untrusted_certificate_is_refused_and_dead_lettered_as_untrusted(
    kafka_settings, authority
):
    topics = await fresh_topics(kafka_settings)
    registry = CollectorRegistry()
    sent = [notification("ops", n) for n in range(2)]
    await write(kafka_settings, topics.outbox, sent)
    async with https_receiver(authority) as receiver:
        worker = delivery(kafka_settings, topics, [config(receiver, None)], metrics=DeliveryMetrics(registry))
        async with worker:
            failures = await read_dead_letters(kafka_settings, topics.deadletter, len(sent))
            await eventually(lambda: counts(worker, "ops")["dead_lettered"] == len(sent), "dead letters counted")
        state = counts(worker, "ops")
    assert receiver.received == []  # the TLS handshake failed: nothing was sent
    assert sorted(f.notification.id for f in failures) == sorted(n.id for n in sent)
    for failure in failures:
        assert failure.reason == "untrusted_certificate"
        assert failure.status is None and failure.attempts == 1
        assert "certificate is not trusted" in failure.response
    assert state["retried"] == 0 and state["delivered"] == 0
    assert registry.get_sample_value(
        "streaminfer_alert_notifications_total", {"receiver": "ops", "outcome": "untrusted_certificate"}
    ) == len(sent)


# metrics ----------------------------------------------------------------------------------------


def test_prometheus_scrapes_an_endpoint_that_wants_basic_auth_over_tls_and_is_refused_without(tmp_path, authority):
    identity = authority.issue("metrics", server=True)
    registry = CollectorRegistry()
    Counter("demo_things", "Things done.", registry=registry).inc(7)
    access = MetricsAccess(username="prometheus", password=SecretStr("scrape-pa55"), tls_cert_file=identity.cert,
                           tls_key_file=identity.key)
    server, url = serve_metrics(access, 0, registry)
    password_file = tmp_path / "password"
    password_file.write_text("scrape-pa55")
    password_file.chmod(0o600)
    tls = {"scheme": "https", "tls_config": {"ca_file": str(authority.cert)}}
    try:
        targets = tmp_path / "targets.json"
        write_targets(targets, [ScrapeTarget(url, "driver")])
        with PrometheusServer(tmp_path / "with", targets, scrape_options={
            **tls, "basic_auth": {"username": "prometheus", "password_file": str(password_file)},
        }) as prometheus:
            assert prometheus.wait_for_value("sum(demo_things_total)", 7, timeout_s=30) == 7
            assert "scrape-pa55" not in prometheus.config_file.read_text()
        with PrometheusServer(tmp_path / "without", targets, scrape_options=tls) as prometheus:
            prometheus.wait_for_value('sum(up{job="streaminfer"})', 0, timeout_s=30)
            (target,) = prometheus.targets()["activeTargets"]
            assert target["health"] == "down" and "401" in target["lastError"], json.dumps(target)
    finally:
        stop_serving(server)


async def test_every_process_of_a_running_app_serves_metrics_behind_basic_auth_over_tls_and_never_shows_the_password(
    kafka_settings, topics, model_repo, ray_dashboard, tmp_path, authority
):
    identity = authority.issue("metrics", server=True)
    targets = tmp_path / "targets" / "streaminfer.json"
    password_file = tmp_path / "password"
    password_file.write_text("app-scrape-pa55")
    settings = app_settings(kafka_settings, topics, model_repo, monitor=monitor_settings(tmp_path), metrics={
        "port": 0, "targets_file": targets, "username": "prometheus", "password": SecretStr("app-scrape-pa55"),
        "tls_cert_file": identity.cert, "tls_key_file": identity.key,
    })
    rows, _ = drifting_stream(reference_frame(model_repo.resolve(DEMO_MODEL)), 50, None, seed=3)
    scrape = {"scheme": "https", "tls_config": {"ca_file": str(authority.cert)},
              "basic_auth": {"username": "prometheus", "password_file": str(password_file)}}
    with PrometheusServer(tmp_path / "prometheus", targets, scrape_options=scrape) as prometheus:
        app = await started(settings)
        try:
            async with Collector(kafka_settings.bootstrap, topics) as collector:
                await produce(kafka_settings.bootstrap, topics.requests, demo_payloads(rows, 50, DEMO_MODEL, INPUT_NAME, "s"))
                await collector.until(lambda c: c.total >= 50)
            await eventually_equal(lambda: prometheus.value("sum(streaminfer_requests_total)"), 50)
            await eventually_equal(lambda: prometheus.value('count(up{job="streaminfer",component="consumer"} == 1)'), 2)
            await eventually_equal(lambda: prometheus.value('count(up{component="monitor"} == 1)'), 1)
            listed = json.loads(targets.read_text())
            # every listed endpoint scraped (the driver's first scrape may come after the actors')
            await eventually_equal(lambda: prometheus.value('count(up{job="streaminfer"} == 1)'), len(listed))
            shown = {url: await asyncio.to_thread(_read, url) for url in
                     (f"{ray_dashboard}/api/v0/actors?detail=1", f"{ray_dashboard}/api/v0/tasks?detail=1")}
        finally:
            await app.stop()
    # the password reached every actor, yet the dashboard, the session's logs and written files never show it
    assert [url for url, body in shown.items() if "app-scrape-pa55" in body] == []
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    written = [path for path in [*session.joinpath("logs").rglob("*"), *tmp_path.rglob("*")]
               if path.is_file() and path != password_file and b"app-scrape-pa55" in path.read_bytes()]
    assert written == []


def _read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode(errors="replace")


# redis ------------------------------------------------------------------------------------------

REDIS_PASSWORD = "redis-pa55word"


class SecuredRedis:
    """Debian's ``redis-server`` on loopback, in memory, wanting ``--requirepass`` and, given a
    server certificate, speaking TLS only (``--port 0 --tls-port``)."""

    def __init__(self, authority: CertificateAuthority | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: apt-get install redis-server"
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD]
        self.tls = authority is not None
        if authority is None:
            args += ["--port", str(self.port)]
        else:
            identity = authority.issue("redis", server=True)
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(identity.cert),
                     "--tls-key-file", str(identity.key), "--tls-ca-cert-file", str(authority.cert),
                     "--tls-auth-clients", "optional"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._listening():
            assert self._process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


@pytest.fixture(params=["password", "password+tls"])
def redis(request, authority) -> Iterator[SecuredRedis]:
    server = SecuredRedis(authority if request.param == "password+tls" else None)
    try:
        yield server
    finally:
        server.stop()


def redis_settings(tmp_path: Path, redis: SecuredRedis, authority: CertificateAuthority, **changes: object) -> FeatureSettings:
    tls = redis.tls
    fields: dict[str, object] = {
        "repo_path": tmp_path / "repo", "online_store": "redis", "redis_url": redis.url,
        "redis_password": SecretStr(REDIS_PASSWORD), "redis_tls": bool(tls),
        "redis_ca_file": authority.cert if tls else None,
    }
    return FeatureSettings(**(fields | changes))


def push_one(settings: FeatureSettings, entity: str) -> None:
    from feast.data_source import PushMode

    now = datetime.now(timezone.utc)
    row = {ENTITY_KEY: entity, TIMESTAMP: now, CREATED: now}
    row |= {name: 3 if name.startswith("requests_") else 0.5 for name in window_spec(settings).feature_names()}
    open_store(settings).push(STATS_PUSH, pd.DataFrame([row]), to=PushMode.ONLINE)


def written_files(root: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def test_the_online_store_writes_and_reads_features_on_a_redis_with_a_password(tmp_path, redis, authority):
    settings = redis_settings(tmp_path, redis, authority)
    init_repository(settings)
    push_one(settings, "customer-7")
    got = OnlineFeatures(settings).read(["customer-7"], stats_features(settings))
    requests = next(name for name in got["customer-7"] if name.startswith("requests_"))
    assert got["customer-7"][requests] == 3
    assert REDIS_PASSWORD.encode() not in written_files(settings.repo_path)
    assert f"${{{PASSWORD_VARIABLE}}}" in (settings.repo_path / "feature_store.yaml").read_text()


def test_feasts_own_loader_takes_the_password_from_the_environment_not_the_file(tmp_path, redis, authority, monkeypatch):
    from feast import FeatureStore

    settings = redis_settings(tmp_path, redis, authority)
    init_repository(settings)
    push_one(settings, "customer-8")
    monkeypatch.setenv(PASSWORD_VARIABLE, REDIS_PASSWORD)
    store = FeatureStore(repo_path=str(settings.repo_path))
    got = store.get_online_features(features=stats_features(settings), entity_rows=[{ENTITY_KEY: "customer-8"}])
    requests = next(ref.split(":", 1)[1] for ref in stats_features(settings) if ":requests_" in ref)
    assert got.to_dict()[requests] == [3]


def test_a_redis_that_wants_a_password_refuses_a_store_without_one(tmp_path, redis, authority):
    import redis as redis_py

    settings = redis_settings(tmp_path, redis, authority, redis_password=None)
    init_repository(settings)
    with pytest.raises(redis_py.AuthenticationError, match="Authentication required"):
        push_one(settings, "customer-9")


def test_a_redis_whose_certificate_is_not_from_the_configured_ca_is_refused(tmp_path, authority):
    import redis as redis_py

    server = SecuredRedis(authority)
    try:
        stranger = CertificateAuthority(tmp_path / "other-ca")
        settings = redis_settings(tmp_path, server, authority, redis_ca_file=stranger.cert)
        init_repository(settings)
        with pytest.raises(redis_py.ConnectionError, match="certificate verify failed"):
            push_one(settings, "customer-10")
    finally:
        server.stop()
