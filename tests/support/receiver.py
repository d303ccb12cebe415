"""A real HTTP webhook receiver for tests: an aiohttp server on a free loopback port.

It records every request it gets (headers, exact body bytes, parsed JSON, arrival time, whether
the signature was valid, the status it answered) and can be switched between behaviours while
the test runs: ``down()`` stops listening (callers get connection refused) and ``up()`` listens
again on the same port; ``respond_with(status)`` and ``delay(seconds)`` change the answers.
Given ``tls`` (a certificate and key, e.g. from ``tests.support.certificates``), it serves HTTPS.

The signature is checked with its own HMAC code, not the project's ``signing`` module, so a bug
there cannot vouch for itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from streaminfer.broker import free_port
from streaminfer.schemas.notifications import IDEMPOTENCY_HEADER, SIGNATURE_HEADER


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    json: Any
    arrived: float
    """``time.monotonic()`` when the request arrived."""
    signature_valid: bool
    status: int
    """What the receiver answered (or was about to, for requests delayed past the caller's timeout)."""

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get(IDEMPOTENCY_HEADER.lower())


def _expected_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    def __init__(self, secret: str, path: str = "/hook", tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: the server's certificate (chain) and key PEM files; the receiver then serves HTTPS."""
        self.secret = secret
        self.path = path
        self.tls = tls
        self.port = free_port()
        self.received: list[Received] = []
        self._status = 200
        self._text = "ok"
        self._headers: dict[str, str] = {}
        self._delay_s = 0.0
        self._runner: web.AppRunner | None = None
        self._arrivals: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{self.path}"

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._arrivals = asyncio.Condition()
        await self.up()

    async def stop(self) -> None:
        await self.down()

    async def up(self) -> None:
        """Listen (again) on the same port. A fresh runner each time, because ``down()`` must
        also close kept-alive connections, or clients would still reach the old server."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", self.path, self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.2, handler_cancellation=True, access_log=None)
        await runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=context).start()
        self._runner = runner

    async def down(self) -> None:
        """Stop listening and drop open connections: callers get connection refused."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # behaviours ------------------------------------------------------------------------------

    def respond_with(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        self._status, self._text, self._headers = status, text, dict(headers or {})

    def delay(self, seconds: float) -> None:
        """Sleep this long in every request before answering."""
        self._delay_s = seconds

    # what arrived ----------------------------------------------------------------------------

    def by_idempotency_key(self) -> dict[str, int]:
        """Requests per ``Idempotency-Key``: every attempt that reached the server counts."""
        return dict(Counter(r.idempotency_key for r in self.received if r.idempotency_key is not None))

    def keys_in_arrival_order(self) -> list[str]:
        """Each key once, at its first arrival."""
        return list(dict.fromkeys(r.idempotency_key for r in self.received if r.idempotency_key is not None))

    async def until(self, predicate, timeout_s: float = 20.0) -> WebhookReceiver:
        """Wait until ``predicate(self)`` holds, re-checked on every arrival."""
        assert self._arrivals is not None, "start() the receiver first"
        async with self._arrivals:
            await asyncio.wait_for(self._arrivals.wait_for(lambda: predicate(self)), timeout_s)
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        signature = request.headers.get(SIGNATURE_HEADER, "")
        self.received.append(
            Received(
                headers={name.lower(): value for name, value in request.headers.items()},
                body=body,
                json=parsed,
                arrived=time.monotonic(),
                signature_valid=hmac.compare_digest(
                    _expected_signature(body, self.secret).encode(), signature.encode()
                ),
                status=self._status,
            )
        )
        assert self._arrivals is not None
        async with self._arrivals:
            self._arrivals.notify_all()
        status, text, headers = self._status, self._text, self._headers
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        return web.Response(status=status, text=text, headers=headers)
