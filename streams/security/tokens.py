"""OAUTHBEARER token providers for aiokafka.

``ClientCredentialsTokens`` is the OAuth 2.0 client-credentials flow every managed Kafka with
OAuth documents (Confluent Cloud, MSK with IAM-issued tokens behind a broker, Aiven, Event
Hubs). ``UnsecuredJwsTokens`` makes the unsigned tokens that Kafka's built-in development login
accepts; it is for local clusters only, which is why it must be named explicitly as
``oauth.token_provider``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import aiohttp
from aiokafka.abc import AbstractTokenProvider

from streaminfer.streams.errors import KafkaAuthenticationFailed
from streaminfer.streams.security.settings import OAuthSettings

RENEW_BEFORE_S = 60.0
"""A token is renewed this long before it expires, so a connection never presents a stale one."""


class ClientCredentialsTokens(AbstractTokenProvider):
    """POSTs ``grant_type=client_credentials`` to ``token_url`` with HTTP basic auth and keeps the
    token until shortly before ``expires_in`` runs out."""

    def __init__(self, oauth: OAuthSettings, clock: Any = time.monotonic) -> None:
        assert oauth.token_url and oauth.client_id and oauth.client_secret  # the settings' validator
        self._oauth, self._clock = oauth, clock
        self._token: str | None = None
        self._renew_at = 0.0

    async def token(self) -> str:
        if self._token is None or self._clock() >= self._renew_at:
            self._token, lifetime_s = await self._fetch()
            self._renew_at = self._clock() + max(lifetime_s - RENEW_BEFORE_S, lifetime_s / 2)
        return self._token

    async def _fetch(self) -> tuple[str, float]:
        oauth = self._oauth
        assert oauth.token_url and oauth.client_id and oauth.client_secret
        form = {"grant_type": "client_credentials"}
        if oauth.scope:
            form["scope"] = oauth.scope
        auth = aiohttp.BasicAuth(oauth.client_id, oauth.client_secret.get_secret_value())
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.post(oauth.token_url, data=form, auth=auth) as response:
                body = await response.json(content_type=None)
                if response.status != 200 or "access_token" not in body:
                    error = body.get("error") if isinstance(body, dict) else None
                    raise KafkaAuthenticationFailed(
                        f"token endpoint {oauth.token_url} refused client {oauth.client_id!r}: "
                        f"HTTP {response.status}{f' {error}' if error else ''}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KafkaAuthenticationFailed(f"token endpoint {oauth.token_url} unreachable: {type(exc).__name__}") from None
        return str(body["access_token"]), float(body.get("expires_in", 300))


class UnsecuredJwsTokens(AbstractTokenProvider):
    """Unsigned (``alg: none``) JWS tokens for ``oauth.client_id`` as the principal: what Kafka's
    default OAUTHBEARER validator (``OAuthBearerUnsecuredValidatorCallbackHandler``) accepts.
    Never use it against a production cluster; those validate signed tokens."""

    def __init__(self, oauth: OAuthSettings, lifetime_s: int = 3600) -> None:
        if not oauth.client_id:
            raise ValueError("UnsecuredJwsTokens needs oauth.client_id (the principal)")
        self._principal, self._lifetime_s = oauth.client_id, lifetime_s
        self._scope = oauth.scope

    async def token(self) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": self._principal, "iat": now, "exp": now + self._lifetime_s}
        if self._scope:
            claims["scope"] = self._scope
        return f"{_b64(json.dumps({'alg': 'none'}))}.{_b64(json.dumps(claims))}."


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
