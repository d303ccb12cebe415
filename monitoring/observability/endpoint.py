"""A process's own ``/metrics`` endpoint, and the address others should scrape it at.

Bound to loopback by default (nothing leaves the machine). Bound to all interfaces (``0.0.0.0``,
as in docker-compose, where Prometheus runs in another container), the address written into
the scrape targets is the node's IP as Ray sees it, since ``0.0.0.0`` is not an address anyone
can scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

ANY_INTERFACE = {"0.0.0.0", "::", ""}


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> tuple[object, str]:
    """Start the endpoint; returns the server (to shut down) and the URL to scrape."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, f"http://{advertised_host(host)}:{server.server_port}/metrics"


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
