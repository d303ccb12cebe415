"""Connections besides Kafka, secured: webhook certificates, the metrics endpoint's basic auth and
TLS, and the Redis online store's password and TLS, with their secrets kept out of sight."""

from __future__ import annotations

import base64
import ssl
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr, ValidationError

from streaminfer.cli.common import settings_problems
from streaminfer.monitoring.alerting.config import load_config
from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from streaminfer.monitoring.errors import AlertConfigError, MetricsEndpointInvalid
from streaminfer.monitoring.observability.endpoint import MetricsAccess, serve_metrics, stop_serving
from streaminfer.streams.alerting.attempts import post
from streaminfer.streams.alerting.errors import UntrustedCertificate
from streaminfer.streams.alerting.transport import MockTransport, Request, Response
from streaminfer.streams.features.connection import redis_connection_string
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.features.store import repo_config
from tests.support.certificates import CertificateAuthority

PASSWORD = "metrics-pa55word"


# webhooks ---------------------------------------------------------------------------------------

RULES = """
receivers:
  - name: team
    url: {url}
    secret_env: TEAM_SECRET
    {extra}
route:
  receiver: team
rules:
  - name: Drift
    signal: drift
"""


def rules(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(RULES.format(url=url, extra=extra)))
    return path


def test_a_receivers_ca_file_is_read_relative_to_the_rules_file(tmp_path):
    (tmp_path / "ca.pem").write_text("PEM")
    _, [receiver] = load_config(rules(tmp_path, "https://hooks:8443/a", "ca_file: ca.pem"), {"TEAM_SECRET": "s"})
    assert receiver.ca_file == (tmp_path / "ca.pem").resolve()


def test_a_missing_ca_file_fails_the_rules_file_naming_the_receiver(tmp_path):
    with pytest.raises(AlertConfigError, match=r"receiver 'team': ca_file .*nope.pem is not a readable file"):
        load_config(rules(tmp_path, "https://hooks:8443/a", "ca_file: nope.pem"), {"TEAM_SECRET": "s"})


def test_a_ca_file_on_a_plain_http_receiver_is_refused(tmp_path):
    (tmp_path / "ca.pem").write_text("PEM")
    with pytest.raises(AlertConfigError, match="ca_file is set but url http://hooks:80/a is not https://"):
        load_config(rules(tmp_path, "http://hooks:80/a", "ca_file: ca.pem"), {"TEAM_SECRET": "s"})


def receiver(ca_file: Path | None = None) -> ReceiverConfig:
    return ReceiverConfig(name="ops", url="https://ops.invalid/hook", secret=SecretStr("k"), ca_file=ca_file)


async def test_the_receivers_ca_file_wins_over_the_delivery_wide_one():
    transport = MockTransport(lambda request: Response(200))
    await post(transport, receiver(Path("/own.pem")), b"{}", {}, 100, default_ca_file=Path("/all.pem"))
    await post(transport, receiver(), b"{}", {}, 100, default_ca_file=Path("/all.pem"))
    await post(transport, receiver(), b"{}", {}, 100)
    assert [r.ca_file for r in transport.requests] == [Path("/own.pem"), Path("/all.pem"), None]


async def test_an_untrusted_certificate_ends_the_attempt_as_untrusted_certificate_not_as_a_retry():
    def handler(request: Request) -> Response:
        raise UntrustedCertificate(request.url, "the receiver's TLS certificate is not trusted (unable to get "
                                                "local issuer certificate; checked against the system's CAs)")

    attempt = await post(MockTransport(handler), receiver(), b"{}", {}, 100)
    assert attempt.outcome == "untrusted_certificate"
    assert attempt.status is None
    assert attempt.text.startswith("the receiver's TLS certificate is not trusted")


# metrics endpoint -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("demo_things", "Things done.", registry=registry).inc(7)
    return registry


def scrape(url: str, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5, context=context) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served(request, registry) -> Iterator[str]:
    server, url = serve_metrics(request.param, 0, registry)
    try:
        yield url
    finally:
        stop_serving(server)


def basic_auth(**tls: object) -> MetricsAccess:
    return MetricsAccess(username="prometheus", password=SecretStr(PASSWORD), **tls)  # type: ignore[arg-type]


@pytest.mark.parametrize("served", [basic_auth()], indirect=True)
def test_a_scrape_without_the_right_credentials_gets_401_and_with_them_the_metrics(served):
    assert served.startswith("http://127.0.0.1:")
    status, body = scrape(served)
    assert status == 401 and b"demo_things" not in body
    assert scrape(served, ("prometheus", "wrong"))[0] == 401
    assert scrape(served, ("someone", PASSWORD))[0] == 401
    status, body = scrape(served, ("prometheus", PASSWORD))
    assert status == 200 and b"demo_things_total 7.0" in body


def test_the_endpoint_serves_https_with_basic_auth_verified_against_its_ca(authority, registry):
    identity = authority.issue("metrics", server=True)
    server, url = serve_metrics(basic_auth(tls_cert_file=identity.cert, tls_key_file=identity.key), 0, registry)
    try:
        trusting = ssl.create_default_context(cafile=str(authority.cert))
        assert url.startswith("https://127.0.0.1:")
        assert scrape(url, context=trusting)[0] == 401
        status, body = scrape(url, ("prometheus", PASSWORD), trusting)
        assert status == 200 and b"demo_things_total 7.0" in body
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            scrape(url, ("prometheus", PASSWORD), ssl.create_default_context())
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            scrape(url.replace("https://", "http://"), ("prometheus", PASSWORD))
    finally:
        stop_serving(server)


@pytest.mark.parametrize("served", ["127.0.0.1"], indirect=True)
def test_a_host_alone_serves_open_http_on_loopback_as_before(served):
    assert served.startswith("http://127.0.0.1:")
    assert scrape(served)[0] == 200


def test_metrics_settings_bind_to_loopback_unless_told_otherwise():
    from streaminfer.settings import MetricsSettings

    metrics = MetricsSettings()
    assert metrics.host == "127.0.0.1"
    assert not metrics.uses_auth and not metrics.uses_tls


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"username": "prometheus"}, "needs both metrics.username and metrics.password"),
        ({"password": PASSWORD}, "needs both metrics.username and metrics.password"),
        ({"tls_cert_file": "cert.pem"}, "needs both metrics.tls_cert_file and metrics.tls_key_file"),
        ({"tls_key_password": PASSWORD}, "metrics.tls_key_password is set without metrics.tls_key_file"),
    ],
)
def test_incomplete_metrics_security_is_refused_when_the_settings_load_without_the_secret(fields, message):
    with pytest.raises(ValidationError, match=message) as raised:
        MetricsAccess(**fields)
    assert PASSWORD not in str(raised.value)


def test_the_metrics_password_never_shows_in_repr_or_json():
    access = basic_auth()
    assert PASSWORD not in repr(access) and PASSWORD not in str(access) and PASSWORD not in access.model_dump_json()


def test_a_key_that_does_not_load_fails_in_one_line_naming_the_settings_not_the_password(authority, registry, tmp_path):
    identity = authority.issue("metrics-bad", server=True)
    other = authority.issue("metrics-other", server=True)
    access = MetricsAccess(tls_cert_file=identity.cert, tls_key_file=other.key, tls_key_password=SecretStr(PASSWORD))
    with pytest.raises(MetricsEndpointInvalid, match=r"cannot load metrics\.tls_cert_file / metrics\.tls_key_file") as raised:
        serve_metrics(access, 0, registry)
    assert PASSWORD not in str(raised.value) and "\n" not in str(raised.value)
    missing = MetricsAccess(tls_cert_file=tmp_path / "none.crt", tls_key_file=other.key)
    with pytest.raises(MetricsEndpointInvalid, match=r"metrics.tls_cert_file=.*none.crt is not a readable file"):
        serve_metrics(missing, 0, registry)


def test_refused_settings_from_the_environment_do_not_echo_the_password(monkeypatch):
    from streaminfer.settings import AppSettings

    monkeypatch.delenv("STREAMINFER_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("STREAMINFER_METRICS__PASSWORD", PASSWORD)
    with pytest.raises(ValidationError, match=r"needs both metrics\.username and metrics\.password") as raised:
        AppSettings()
    assert PASSWORD not in str(raised.value)


# redis ------------------------------------------------------------------------------------------

REDIS_PASSWORD = "redis-pa55word"


def redis_features(tmp_path: Path, **fields: object) -> FeatureSettings:
    return FeatureSettings(repo_path=tmp_path, online_store="redis", redis_url="cache:6380", **fields)  # type: ignore[arg-type]


def test_the_connection_string_in_memory_carries_the_password_and_tls_as_feast_reads_them(tmp_path):
    from feast.infra.online_stores.redis import RedisOnlineStore

    settings = redis_features(tmp_path, redis_username="features", redis_password=SecretStr("123"), redis_tls=True,
                              redis_ca_file=tmp_path / "ca.pem", redis_cert_file=tmp_path / "c.pem",
                              redis_key_file=tmp_path / "k.pem", redis_key_password=SecretStr("true"))
    nodes, params = RedisOnlineStore._parse_connection_string(redis_connection_string(settings, with_secrets=True))
    assert nodes == [{"host": "cache", "port": "6380"}]
    assert params == {"username": "features", "password": "123", "ssl": True, "ssl_ca_certs": str(tmp_path / "ca.pem"),
                      "ssl_certfile": str(tmp_path / "c.pem"), "ssl_keyfile": str(tmp_path / "k.pem"),
                      "ssl_password": "true"}


def test_feature_store_yaml_refers_to_the_environment_for_the_passwords(tmp_path):
    settings = redis_features(tmp_path, redis_password=SecretStr(REDIS_PASSWORD), redis_tls=True,
                              redis_key_file=tmp_path / "k.pem", redis_cert_file=tmp_path / "c.pem",
                              redis_key_password=SecretStr(REDIS_PASSWORD))
    written = repo_config(settings)["online_store"]["connection_string"]
    assert REDIS_PASSWORD not in written
    assert 'password="${STREAMINFER_FEATURES__REDIS_PASSWORD}"' in written
    assert 'ssl_password="${STREAMINFER_FEATURES__REDIS_KEY_PASSWORD}"' in written
    assert REDIS_PASSWORD not in repr(settings) and REDIS_PASSWORD not in settings.model_dump_json()


def test_a_plain_redis_keeps_the_bare_host_and_port(tmp_path):
    assert redis_connection_string(redis_features(tmp_path), with_secrets=True) == "cache:6380"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"redis_ca_file": "ca.pem"}, "features.redis_ca_file set, but features.redis_tls is false"),
        ({"redis_tls": True, "redis_cert_file": "c.pem"}, "need both features.redis_cert_file and features.redis_key_file"),
        ({"redis_password": "a,b"}, "features.redis_password contains a comma"),
        ({"redis_key_password": "x"}, "features.redis_key_password is set without features.redis_key_file"),
    ],
)
def test_redis_settings_that_cannot_work_are_refused_naming_the_setting(tmp_path, fields, message):
    with pytest.raises(ValidationError, match=message) as raised:
        redis_features(tmp_path, **fields)
    assert "a,b" not in settings_problems(raised.value)
