"""Security settings turned into what aiokafka and Faust take.

SSL contexts and token providers are built in the process that opens the client, never pickled:
Ray ships ``KafkaSettings`` (file paths and ``SecretStr``) to each actor, and the actor builds
its own. Secrets are read here and only here.
"""

from __future__ import annotations

import importlib
import ssl
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from streaminfer.streams.errors import KafkaSecurityInvalid
from streaminfer.streams.security.settings import KafkaSecuritySettings, OAuthSettings


def ssl_context(security: KafkaSecuritySettings) -> ssl.SSLContext | None:
    """The TLS context of ``security``, or None when it does not use TLS."""
    if not security.uses_tls:
        return None
    password = security.ssl_key_password.get_secret_value() if security.ssl_key_password else None
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        path = getattr(security, name)
        if path is not None and not path.is_file():
            raise KafkaSecurityInvalid(f"kafka.{name}={path} is not a readable file")
    try:
        context = create_ssl_context(
            cafile=security.ssl_ca_file, certfile=security.ssl_cert_file,
            keyfile=security.ssl_key_file, password=password,
        )
    except ssl.SSLError as exc:
        # the library's message names the PEM problem, never the password
        raise KafkaSecurityInvalid(f"cannot load the TLS files in kafka.ssl_*: {exc.reason or exc}") from None
    if security.ssl_ca_file is None:
        context.load_default_certs()
    context.check_hostname = security.ssl_check_hostname
    return context


def token_provider(oauth: OAuthSettings) -> AbstractTokenProvider:
    """OAUTHBEARER tokens from ``oauth.token_provider`` or else the client-credentials flow."""
    if oauth.token_provider:
        module_name, _, attribute = oauth.token_provider.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError):
            raise KafkaSecurityInvalid(
                f"kafka.oauth.token_provider={oauth.token_provider!r} is not an importable module:callable"
            ) from None
        provider = factory(oauth)
        if not isinstance(provider, AbstractTokenProvider):
            raise KafkaSecurityInvalid(f"kafka.oauth.token_provider={oauth.token_provider!r} did not return an "
                                       "aiokafka AbstractTokenProvider")
        return provider
    from streaminfer.streams.security.tokens import ClientCredentialsTokens

    return ClientCredentialsTokens(oauth)


def client_options(security: KafkaSecuritySettings) -> dict[str, Any]:
    """Keyword arguments for every aiokafka client (consumer, producer, admin)."""
    options: dict[str, Any] = {"security_protocol": security.security_protocol}
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        if security.sasl_mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = token_provider(security.oauth)
        else:
            options["sasl_plain_username"] = security.sasl_username
            assert security.sasl_password is not None  # the settings' validator requires it
            options["sasl_plain_password"] = security.sasl_password.get_secret_value()
    return options


def faust_credentials(security: KafkaSecuritySettings) -> Any:
    """``broker_credentials`` for the Faust app: the same connection as every other client."""
    import faust

    context = ssl_context(security)
    if security.uses_sasl:
        if security.sasl_mechanism == "OAUTHBEARER":
            return faust.OAuthCredentials(oauth_cb=token_provider(security.oauth), ssl_context=context)
        assert security.sasl_password is not None
        return faust.SASLCredentials(
            username=security.sasl_username, password=security.sasl_password.get_secret_value(),
            ssl_context=context, mechanism=security.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
