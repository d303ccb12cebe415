"""One security model for every Kafka client: validated when settings load, turned into aiokafka
and Faust options in one place, and never showing a secret."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError
from typer.testing import CliRunner

from streaminfer.cli.common import settings_problems
from streaminfer.cli.main import app as cli
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.errors import KafkaAuthenticationFailed, KafkaSecurityInvalid
from streaminfer.streams.security.options import client_options, faust_credentials, ssl_context
from streaminfer.streams.security.settings import OAuthSettings
from streaminfer.streams.security.tokens import ClientCredentialsTokens, UnsecuredJwsTokens
from streaminfer.streams.settings import KafkaSettings
from tests.support.certificates import CertificateAuthority

SECRET = "s3cr3t-do-not-print"


def scram(**extra) -> KafkaSettings:
    return KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                         sasl_username="app", sasl_password=SECRET, **extra)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


def test_plaintext_is_the_default_and_adds_only_the_protocol():
    assert client_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(("settings", "says"), [
    ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "needs sasl_username and sasl_password"),
    ({"sasl_mechanism": "PLAIN"}, "needs security_protocol SASL_SSL or SASL_PLAINTEXT"),
    ({"ssl_ca_file": "ca.pem"}, "does not use TLS"),
    ({"security_protocol": "SSL", "ssl_cert_file": "c.pem"}, "both ssl_cert_file and ssl_key_file"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "needs oauth.token_url"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "oauth": {"token_url": "https://idp/token"}},
     "needs oauth.client_id and oauth.client_secret"),
])
def test_combinations_that_cannot_connect_are_refused_when_settings_load(settings, says):
    with pytest.raises(ValidationError, match=says):
        KafkaSettings(**settings)


def test_a_settings_error_names_the_field_and_never_the_value_given(monkeypatch):
    monkeypatch.setenv("STREAMINFER_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMINFER_KAFKA__SASL_PASSWORD", SECRET)
    with pytest.raises(ValidationError) as caught:
        AppSettings()
    line = settings_problems(caught.value)
    assert line.startswith("invalid settings: kafka: security_protocol=SASL_SSL needs sasl_mechanism")
    assert SECRET not in line


def test_the_cli_prints_one_line_and_exits_2_on_invalid_security_settings(monkeypatch):
    monkeypatch.setenv("STREAMINFER_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMINFER_KAFKA__SASL_PASSWORD", SECRET)
    result = CliRunner().invoke(cli, ["topics", "list"])
    assert result.exit_code == 2
    assert "needs sasl_mechanism" in result.output and SECRET not in result.output
    assert "Traceback" not in result.output


def test_secrets_are_masked_in_repr_str_json_and_logs_but_survive_pickling_for_ray():
    settings = scram(ssl_key_password="key-" + SECRET, oauth={"client_secret": "oauth-" + SECRET})
    for shown in (repr(settings), str(settings), settings.model_dump_json(), repr(AppSettings(kafka=settings))):
        assert SECRET not in shown
    copy = pickle.loads(pickle.dumps(settings))  # what Ray does with an actor's arguments
    assert copy.sasl_password is not None and copy.sasl_password.get_secret_value() == SECRET


def test_sasl_settings_become_aiokafka_options(ca):
    options = client_options(scram(ssl_ca_file=ca.cert))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("app", SECRET)
    assert options["ssl_context"].check_hostname is True


def test_mutual_tls_loads_the_client_certificate_and_can_skip_the_hostname_check(ca):
    client = ca.issue("app")
    settings = KafkaSettings(security_protocol="SSL", ssl_ca_file=ca.cert, ssl_cert_file=client.cert,
                             ssl_key_file=client.key, ssl_check_hostname=False)
    context = ssl_context(settings)
    assert context is not None and context.check_hostname is False
    assert faust_credentials(settings).protocol.value == "SSL"


def test_a_missing_tls_file_is_named_in_one_line(tmp_path):
    settings = KafkaSettings(security_protocol="SSL", ssl_ca_file=tmp_path / "nope.pem")
    with pytest.raises(KafkaSecurityInvalid, match=r"kafka.ssl_ca_file=.*nope.pem is not a readable file"):
        client_options(settings)


def test_faust_gets_the_same_sasl_login(ca):
    credentials = faust_credentials(scram(ssl_ca_file=ca.cert))
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("app", SECRET, "SCRAM-SHA-512")
    assert credentials.protocol.value == "SASL_SSL"
    assert SECRET not in repr(credentials)


def test_unsecured_jws_tokens_name_the_principal_and_expire():
    token = asyncio.run(UnsecuredJwsTokens(OAuthSettings(client_id="app")).token())
    header, claims, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    assert decode(header) == {"alg": "none"} and signature == ""
    assert decode(claims)["sub"] == "app" and decode(claims)["exp"] > decode(claims)["iat"]


def test_a_token_provider_that_does_not_import_is_named():
    settings = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                             oauth={"token_provider": "no.such.module:thing"})
    with pytest.raises(KafkaSecurityInvalid, match=r"no\.such\.module:thing"):
        client_options(settings)


async def _token_endpoint(answers: list[tuple[int, dict]], seen: list[web.Request]) -> tuple[web.AppRunner, str]:
    async def token(request: web.Request) -> web.Response:
        seen.append(request)
        await request.post()
        status, body = answers.pop(0)
        return web.json_response(body, status=status)

    application = web.Application()
    application.router.add_post("/token", token)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/token"


async def test_client_credentials_tokens_are_fetched_once_and_renewed_before_they_expire():
    seen: list[web.Request] = []
    runner, url = await _token_endpoint([(200, {"access_token": "one", "expires_in": 120}),
                                         (200, {"access_token": "two", "expires_in": 120})], seen)
    now = [1000.0]
    try:
        tokens = ClientCredentialsTokens(OAuthSettings(token_url=url, client_id="app", client_secret=SECRET,
                                                       scope="kafka"), clock=lambda: now[0])
        assert await tokens.token() == "one"
        assert await tokens.token() == "one"
        now[0] += 61  # inside the last minute of its two
        assert await tokens.token() == "two"
    finally:
        await runner.cleanup()
    assert len(seen) == 2
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(f"app:{SECRET}".encode()).decode()


async def test_a_refused_client_is_an_authentication_error_without_the_secret():
    runner, url = await _token_endpoint([(401, {"error": "invalid_client"})], [])
    try:
        tokens = ClientCredentialsTokens(OAuthSettings(token_url=url, client_id="app", client_secret=SECRET))
        with pytest.raises(KafkaAuthenticationFailed, match="refused client 'app': HTTP 401 invalid_client") as caught:
            await tokens.token()
    finally:
        await runner.cleanup()
    assert SECRET not in str(caught.value)


def test_settings_load_from_a_toml_file_named_in_the_environment_and_the_environment_wins(tmp_path: Path, monkeypatch):
    path = tmp_path / "streaminfer.toml"
    path.write_text(f'[kafka]\nbootstrap = "file:9093"\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n'
                    f'sasl_username = "app"\nsasl_password = "{SECRET}"\n')
    monkeypatch.setenv("STREAMINFER_SETTINGS_FILE", str(path))
    settings = AppSettings()
    assert settings.kafka.sasl_password is not None and settings.kafka.sasl_password.get_secret_value() == SECRET
    monkeypatch.setenv("STREAMINFER_KAFKA__BOOTSTRAP", "env:9094")
    assert AppSettings().kafka.bootstrap == "env:9094"


def test_a_settings_file_that_is_not_there_is_one_line(tmp_path, monkeypatch):
    # --settings exports STREAMINFER_SETTINGS_FILE for the command's process: undone after the test
    monkeypatch.setenv("STREAMINFER_SETTINGS_FILE", "")
    result = CliRunner().invoke(cli, ["--settings", str(tmp_path / "missing.toml"), "topics", "list"])
    assert result.exit_code == 2
    assert "missing.toml does not exist" in result.output


class _Recorded:
    def __init__(self, *topics: str, **options: object) -> None:
        self.topics, self.options = topics, options


class RecordingClients(KafkaClients):
    producer_type = consumer_type = admin_type = _Recorded


def test_every_client_built_from_the_settings_carries_the_security_options(ca):
    clients = RecordingClients(scram(ssl_ca_file=ca.cert))
    for client in (clients.producer(), clients.consumer("t"), clients.admin()):
        assert client.options["security_protocol"] == "SASL_SSL"
        assert client.options["sasl_plain_password"] == SECRET
        assert client.options["ssl_context"] is clients.security["ssl_context"]  # loaded once


def test_a_reader_without_a_group_joins_none_and_the_default_is_the_settings_group():
    clients = RecordingClients(KafkaSettings(group_id="pipeline"))
    assert clients.consumer("t").options["group_id"] == "pipeline"
    assert clients.consumer("t", group_id=None).options["group_id"] is None
    assert clients.consumer("t", group_id="sink").options["group_id"] == "sink"


def test_an_authorization_failure_names_the_missing_acl_from_what_the_component_reads_and_writes():
    from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    from streaminfer.streams.security.authorization import not_authorized

    where = {"reads": ["req"], "writes": ["pred", "dlq"], "group": "g", "principal": "User:app"}
    wrapped = RuntimeError("delivery failed")
    wrapped.__cause__ = TopicAuthorizationFailedError({"pred"})
    refusal = not_authorized(wrapped, **where)
    assert refusal is not None and (refusal.resource_type, refusal.resource, refusal.operation) == ("topic", "pred", "Write")
    assert str(refusal).startswith("principal User:app may not Write topic 'pred'")
    assert not_authorized(TopicAuthorizationFailedError("req"), **where).operation == "Read"
    assert not_authorized(GroupAuthorizationFailedError("g"), **where).resource == "g"
    assert not_authorized(ValueError("other"), **where) is None
