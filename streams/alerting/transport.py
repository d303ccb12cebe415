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

HTTPS receivers' certificates are always verified, hostname included: against the system's CAs,
or against ``ca_file`` (a PEM bundle) when the receiver or the delivery settings name one. A
certificate that does not verify raises ``UntrustedCertificate``.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from streaminfer.streams.alerting.errors import NoAnswer, TimedOut, UntrustedCertificate


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout_s: float
    ca_file: Path | None = None


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
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, ca_file: Path | None = None
    ) -> Response:
        """One POST; raises ``NoAnswer`` when no answer came within ``timeout_s``, and
        ``UntrustedCertificate`` when an HTTPS receiver's certificate does not verify against
        ``ca_file`` (None: the system's CAs)."""
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
        self._contexts: dict[Path, ssl.SSLContext] = {}

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, ca_file: Path | None = None
    ) -> Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        verify: ssl.SSLContext | bool = self._context(url, ca_file) if ca_file is not None else True
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False, ssl=verify,
            ) as response:
                raw = await response.content.read(self._max_body_bytes) if self._max_body_bytes else b""
                return Response(response.status, dict(response.headers), raw)
        except asyncio.TimeoutError as exc:
            raise TimedOut(url, timeout_s) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", "") or exc.certificate_error
            where = f"ca_file {ca_file}" if ca_file is not None else "the system's CAs"
            raise UntrustedCertificate(url, f"the receiver's TLS certificate is not trusted ({why}; checked "
                                            f"against {where})") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise NoAnswer(url, repr(exc)) from exc

    def _context(self, url: str, ca_file: Path) -> ssl.SSLContext:
        """A verifying context trusting ``ca_file``, built once per file in this process."""
        context = self._contexts.get(ca_file)
        if context is None:
            try:
                context = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise UntrustedCertificate(url, f"ca_file {ca_file} cannot be loaded: "
                                                f"{getattr(exc, 'strerror', None) or exc}") from None
            self._contexts[ca_file] = context
        return context

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

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, ca_file: Path | None = None
    ) -> Response:
        request = Request(url, body, dict(headers), timeout_s, ca_file)
        self.requests.append(request)
        answer = self._handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    async def aclose(self) -> None:
        return None
