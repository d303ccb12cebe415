"""A process's own ``/metrics`` endpoint, and the address others should scrape it at.

Bound to loopback by default (nothing leaves the machine). Bound to all interfaces (``0.0.0.0``,
as in docker-compose, where Prometheus runs in another container), the address written into
the scrape targets is the node's IP as Ray sees it, since ``0.0.0.0`` is not an address anyone
can scrape.

``MetricsAccess`` can ask scrapers for HTTP basic auth (``username`` and ``password``) and serve
over TLS (``tls_cert_file`` and ``tls_key_file``); Prometheus then scrapes with ``basic_auth``
and ``scheme: https`` plus ``tls_config`` (see ``infra/prometheus/prometheus.yml``). A request
without the right credentials gets 401. The password and the key's password are ``SecretStr``,
read only here, when the server starts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from streaminfer.monitoring.errors import MetricsEndpointInvalid

ANY_INTERFACE = {"0.0.0.0", "::", ""}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
REALM = "streaminfer metrics"

log = logging.getLogger(__name__)


class MetricsAccess(BaseModel):
    """Where a ``/metrics`` endpoint listens and what a scraper must show (``metrics.*``)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused combination may hold the password

    host: str = "127.0.0.1"
    """Interface to bind: loopback unless told otherwise (``0.0.0.0`` for every interface)."""

    username: str | None = None
    """With ``password``: scrapes must send HTTP basic auth, others get 401."""

    password: SecretStr | None = None

    tls_cert_file: Path | None = None
    """PEM certificate (chain) of the endpoint: with ``tls_key_file`` it serves HTTPS only."""

    tls_key_file: Path | None = None
    tls_key_password: SecretStr | None = None
    """Only if ``tls_key_file`` is encrypted."""

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Absolute when the settings load: Ray actors serve from another working directory."""
        return path.resolve() if path is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> MetricsAccess:
        problems = []
        if bool(self.username) != bool(self.password):
            problems.append("metrics basic auth needs both metrics.username and metrics.password")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            problems.append("metrics TLS needs both metrics.tls_cert_file and metrics.tls_key_file")
        if self.tls_key_password is not None and self.tls_key_file is None:
            problems.append("metrics.tls_key_password is set without metrics.tls_key_file")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def uses_auth(self) -> bool:
        return self.password is not None


def serve_metrics(where: str | MetricsAccess, port: int, registry: CollectorRegistry) -> tuple[object, str]:
    """Start the endpoint on ``where`` (a host: open; or ``MetricsAccess``); returns the server
    (to shut down) and the URL to scrape."""
    access = MetricsAccess(host=where) if isinstance(where, str) else where
    context = _tls_context(access) if access.uses_tls else None
    app = make_wsgi_app(registry)
    if access.uses_auth:
        app = _basic_auth(app, access)
    elif access.host not in LOOPBACK:
        log.warning("metrics endpoint on %s answers anyone who can reach it: set metrics.username and "
                    "metrics.password (and TLS) to restrict it", access.host)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in access.host else socket.AF_INET

        def handle_error(self, request: Any, client_address: Any) -> None:
            """A client that fails the TLS handshake or hangs up is its own business: no traceback."""

    server = make_server(access.host, port, app, Server, handler_class=_Quiet)
    if context is not None:
        # the handshake happens in each request's thread, so a silent client cannot hold up accept()
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True).start()
    scheme = "https" if context is not None else "http"
    return server, f"{scheme}://{advertised_host(access.host)}:{server.server_port}/metrics"


def _tls_context(access: MetricsAccess) -> ssl.SSLContext:
    for name in ("tls_cert_file", "tls_key_file"):
        path = getattr(access, name)
        if not path.is_file():
            raise MetricsEndpointInvalid(f"metrics.{name}={path} is not a readable file")
    password = access.tls_key_password.get_secret_value() if access.tls_key_password else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(access.tls_cert_file, access.tls_key_file, password=password)  # type: ignore[arg-type]
    except ssl.SSLError as exc:
        # the library's reason names the PEM problem, never the password
        raise MetricsEndpointInvalid(f"cannot load metrics.tls_cert_file / metrics.tls_key_file: "
                                     f"{exc.reason or exc}") from None
    return context


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _basic_auth(app: WsgiApp, access: MetricsAccess) -> WsgiApp:
    """``app`` behind HTTP basic auth; credentials compared in constant time."""
    assert access.username is not None and access.password is not None
    expected = f"{access.username}:{access.password.get_secret_value()}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if hmac.compare_digest(_credentials(environ.get("HTTP_AUTHORIZATION", "")), expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", f'Basic realm="{REALM}"'),
                                            ("Content-Type", "text/plain; charset=utf-8")])
        return [b"basic auth required\n"]

    return guarded


def _credentials(header: str) -> bytes:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


class _Quiet(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


def advertised_host(host: str) -> str:
    if host not in ANY_INTERFACE:
        return host
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray: fall back to the host name
        import socket

        return socket.gethostname()


def stop_serving(server: object | None) -> None:
    if server is not None:
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]
