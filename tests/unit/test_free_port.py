"""``free_port`` chooses ports that an outgoing connection cannot take before the server binds
them: a raylet once failed to start because a port chosen with ``bind(0)`` had meanwhile become
the local port of another process's connection."""

from __future__ import annotations

import socket

from streaminfer import broker
from streaminfer.broker import LOOPBACK, ephemeral_port_range, free_port


def test_a_chosen_port_lies_below_the_range_outgoing_connections_draw_from():
    low, _ = ephemeral_port_range()
    ports = {free_port() for _ in range(50)}
    assert all(20000 <= port < low for port in ports)
    assert len(ports) > 40  # chosen at random, so two callers rarely pick alike


def test_a_chosen_port_can_be_bound_by_a_server_on_loopback_and_on_every_address():
    port = free_port()
    for address in (LOOPBACK, "0.0.0.0"):
        with socket.socket() as server:
            server.bind((address, port))


def test_without_room_below_the_range_the_kernel_chooses(monkeypatch):
    monkeypatch.setattr(broker, "ephemeral_port_range", lambda: (1024, 65535))
    assert 1024 <= free_port() <= 65535
