"""The security half of ``KafkaSettings``: what users know from librdkafka and aiokafka.

One model serves every client the system opens (the pipeline, the monitor, alerting, the
experiment controller, the Faust feature app, admin clients, the command line, the benchmark),
so a cluster that needs TLS and SASL is configured once. Secrets are ``SecretStr``: their
``repr``, ``str`` and JSON show ``**********``; only ``streams.security.options`` reads them, at
the moment a client is built. Every setting can come from the environment
(``STREAMINFER_KAFKA__SASL_PASSWORD``) or from the settings file (``STREAMINFER_SETTINGS_FILE``),
so no secret needs to appear on a command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class OAuthSettings(BaseModel):
    """OAUTHBEARER tokens: from a token endpoint (the client-credentials flow) or from a provider
    of your own (``token_provider``)."""

    token_url: str | None = None
    """The identity provider's token endpoint; tokens are fetched with the client credentials
    below and renewed before they expire."""

    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None

    token_provider: str | None = None
    """``module:callable`` taking these settings and returning an aiokafka
    ``AbstractTokenProvider``, used instead of ``token_url``. For development brokers that accept
    unsecured JWS tokens (Kafka's default OAUTHBEARER validator):
    ``streaminfer.streams.security.tokens:UnsecuredJwsTokens``, with ``client_id`` as the principal."""


class KafkaSecuritySettings(BaseModel):
    """TLS and SASL settings of every Kafka client (mixed into ``KafkaSettings``)."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    """``SSL`` and ``SASL_SSL`` encrypt; ``SASL_*`` authenticate with ``sasl_mechanism``; ``SSL``
    with a client certificate is mutual TLS."""

    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    ssl_ca_file: Path | None = None
    """PEM file of the CAs that signed the brokers' certificates; unset, the system's trusted CAs
    (what managed clusters with public certificates need)."""

    ssl_cert_file: Path | None = None
    """PEM client certificate (chain) for mutual TLS; with ``ssl_key_file``."""

    ssl_key_file: Path | None = None
    ssl_key_password: SecretStr | None = None
    """Only if ``ssl_key_file`` is encrypted."""

    ssl_check_hostname: bool = True
    """Whether the broker's certificate must name the host connected to. Certificates are
    verified against the CAs either way."""

    oauth: OAuthSettings = OAuthSettings()

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecuritySettings:
        """Combinations that cannot work are refused when the settings load, naming what to set."""
        problems = []
        if self.uses_sasl:
            if self.sasl_mechanism is None:
                problems.append(f"security_protocol={self.security_protocol} needs sasl_mechanism "
                                "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
            elif self.sasl_mechanism == "OAUTHBEARER":
                if not (self.oauth.token_url or self.oauth.token_provider):
                    problems.append("sasl_mechanism=OAUTHBEARER needs oauth.token_url (with oauth.client_id "
                                    "and oauth.client_secret) or oauth.token_provider")
                elif self.oauth.token_url and not (self.oauth.client_id and self.oauth.client_secret):
                    problems.append("oauth.token_url needs oauth.client_id and oauth.client_secret")
            elif not (self.sasl_username and self.sasl_password):
                problems.append(f"sasl_mechanism={self.sasl_mechanism} needs sasl_username and sasl_password")
        elif self.sasl_mechanism is not None:
            problems.append(f"sasl_mechanism={self.sasl_mechanism} needs security_protocol SASL_SSL or SASL_PLAINTEXT")
        tls_files = [name for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file") if getattr(self, name)]
        if tls_files and not self.uses_tls:
            problems.append(f"{', '.join(tls_files)} set, but security_protocol={self.security_protocol} "
                            "does not use TLS (SSL or SASL_SSL)")
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            problems.append("mutual TLS needs both ssl_cert_file and ssl_key_file")
        if problems:
            raise ValueError("; ".join(problems))
        return self
