"""How a webhook call reaches its receiver: a ``Transport`` with one ``post``.

Shaped like httpx's transports: ``WebhookDelivery`` takes a transport and hands it to its lanes;
``AiohttpTransport`` (the default) sends real requests, and ``MockTransport`` answers each request
with a function, so unit tests drive the lanes without a server::

    def handler(request: Request) -> Response:
        return Response(503) if request.headers["Idempotency-Key"] == "n-1" else Response(200)

    transport = MockTransport(handler)

A transport returns a ``Response`` for an answer of any status, and raises ``NoAnswer``
(``TimedOut`` past the timeout) when none came. Redirects are never followed: a POST must not
turn into a GET.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from streaminfer.streams.alerting.errors import NoAnswer, TimedOut


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout_s: float


@dataclass(frozen=True)
class Response:
    """An answer: its status, headers and (the start of) its body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        """One POST; raises ``NoAnswer`` when no answer came within ``timeout_s``."""
        ...

    async def aclose(self) -> None:
        """Release connections; the transport may be used again afterwards."""
        ...


class AiohttpTransport:
    """Real HTTP through one ``aiohttp.ClientSession`` (opened at the first call, in the running
    loop). Reads at most ``max_body_bytes`` of each answer: only an excerpt is ever kept."""

    def __init__(self, max_body_bytes: int = 64 * 1024) -> None:
        self._max_body_bytes = max_body_bytes
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(self._max_body_bytes) if self._max_body_bytes else b""
                return Response(response.status, dict(response.headers), raw)
        except asyncio.TimeoutError as exc:
            raise TimedOut(url, timeout_s) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise NoAnswer(url, repr(exc)) from exc

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """Answers every request with ``handler(request)`` (a function or a coroutine function,
    which may raise ``NoAnswer``); keeps the requests it was given, in order."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[Request] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        request = Request(url, body, dict(headers), timeout_s)
        self.requests.append(request)
        answer = self._handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    async def aclose(self) -> None:
        return None
