"""HMAC-SHA256 signatures of webhook bodies.

A receiver that knows the shared secret recomputes the HMAC over the exact bytes it received and
compares; anything else on the network (or a replayed body with another payload) fails. The
header value is ``sha256=<hex>``, the shape GitHub and most webhook senders use, so stock
verification snippets work unchanged.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The ``SIGNATURE_HEADER`` value for ``body``: sign the bytes sent, never a re-encoding."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return PREFIX + digest


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body``. The comparison takes the same time
    however many leading characters match, so the signature cannot be guessed byte by byte."""
    header = (header or "").strip()
    if not header.startswith(PREFIX):
        return False
    return hmac.compare_digest(sign(body, secret).encode(), header.encode())
