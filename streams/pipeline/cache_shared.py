"""The prediction cache shared between consumers, in Redis.

Versions whose cache policy says ``"shared": true`` look here after a miss in their consumer's
own cache, and write their computed answers here with the policy's TTL, so a request another
consumer has answered is not computed again. The connection is the feature store's Redis
(``features.redis_url``, ACL user, password, TLS files), built from the same ``FeatureSettings``.

A cache is an optimisation: when Redis cannot be reached, reads are misses and writes are
skipped (one warning per outage), and answers keep flowing from the model.

redis-py is imported when a store is made: a consumer without a shared cache never loads it
(about 150 ms and several MiB per consumer process).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streaminfer.streams.features.settings import FeatureSettings

if TYPE_CHECKING:
    from redis import asyncio as aioredis

log = logging.getLogger(__name__)


def redis_options(settings: FeatureSettings) -> dict[str, Any]:
    """redis-py's connection arguments from the feature store's Redis settings."""
    host, _, port = settings.redis_url.rpartition(":")
    options: dict[str, Any] = {"host": host or "127.0.0.1", "port": int(port or 6379)}
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls:
        options["ssl"] = True
        for key, path in (("ssl_ca_certs", settings.redis_ca_file), ("ssl_certfile", settings.redis_cert_file),
                          ("ssl_keyfile", settings.redis_key_file)):
            if path is not None:
                options[key] = str(path)
        if settings.redis_key_password is not None:
            options["ssl_password"] = settings.redis_key_password.get_secret_value()
    return options


class RedisStore:
    """``SharedStore`` over one Redis client; every call costs one round trip."""

    def __init__(self, client: aioredis.Redis) -> None:
        from redis.exceptions import RedisError

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._client = client
        self._down = False

    @classmethod
    def from_settings(cls, settings: FeatureSettings, timeout_s: float = 0.5) -> RedisStore:
        from redis import asyncio as aioredis

        return cls(aioredis.Redis(**redis_options(settings), socket_timeout=timeout_s,
                                  socket_connect_timeout=timeout_s))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        try:
            values = await self._client.mget(keys)
        except self._errors as exc:
            self._failed(exc)
            return [None] * len(keys)
        self._back()
        return list(values)

    async def put_many(self, entries: list[tuple[str, bytes]], ttl_s: float) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in entries:
                    pipe.set(key, value, px=max(1, int(ttl_s * 1000)))
                await pipe.execute()
        except self._errors as exc:
            self._failed(exc)
            return
        self._back()

    async def close(self) -> None:
        await self._client.aclose()

    def _failed(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            log.warning("shared prediction cache unreachable (%s): answering from the model", type(exc).__name__)

    def _back(self) -> None:
        if self._down:
            self._down = False
            log.warning("shared prediction cache reachable again")


def shared_store(features: FeatureSettings | None) -> RedisStore | None:
    """The shared store when the feature store is Redis; None otherwise (each consumer keeps its own)."""
    if features is None or features.online_store != "redis":
        return None
    return RedisStore.from_settings(features)
