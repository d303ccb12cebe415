"""Feast's Redis connection string, built from ``FeatureSettings``: password, ACL user and TLS.

Feast opens Redis from one string, ``host:port,key=value,...``, whose values it JSON-decodes and
hands to redis-py (``password``, ``username``, ``ssl``, ``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_password``). Two forms:

* ``with_secrets=True``: the passwords themselves, for the ``RepoConfig`` built in memory by
  ``store.open_store``; it is never written anywhere.
* ``with_secrets=False``: what ``feature_store.yaml`` holds for Feast's own CLI. Each password is
  a reference to the environment variable the settings read it from
  (``password="${STREAMINFER_FEATURES__REDIS_PASSWORD}"``), which Feast expands when it loads
  the file, so no password is written to disk.

Values are JSON-quoted so Feast reads them back as the exact strings (a password of ``123`` or
``true`` stays a string). A value cannot contain a comma: the settings refuse one.
"""

from __future__ import annotations

import json

from streaminfer.streams.features.settings import FeatureSettings

PASSWORD_VARIABLE = "STREAMINFER_FEATURES__REDIS_PASSWORD"
KEY_PASSWORD_VARIABLE = "STREAMINFER_FEATURES__REDIS_KEY_PASSWORD"


def redis_connection_string(settings: FeatureSettings, *, with_secrets: bool) -> str:
    parts = [settings.redis_url]

    def add(key: str, value: object) -> None:
        parts.append(f"{key}={json.dumps(value)}")

    if settings.redis_username:
        add("username", settings.redis_username)
    if settings.redis_password is not None:
        if with_secrets:
            add("password", settings.redis_password.get_secret_value())
        else:
            parts.append(f'password="${{{PASSWORD_VARIABLE}}}"')
    if settings.redis_tls:
        add("ssl", True)
        for key, path in (("ssl_ca_certs", settings.redis_ca_file), ("ssl_certfile", settings.redis_cert_file),
                          ("ssl_keyfile", settings.redis_key_file)):
            if path is not None:
                add(key, str(path))
        if settings.redis_key_password is not None:
            if with_secrets:
                add("ssl_password", settings.redis_key_password.get_secret_value())
            else:
                parts.append(f'ssl_password="${{{KEY_PASSWORD_VARIABLE}}}"')
    return ",".join(parts)
