"""`streaminfer broker` gives its port back however it is stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from streaminfer.broker import free_port, port_in_use


def _start_broker(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "streaminfer.cli", "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TERM": "dumb"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the broker command exited while starting"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"nothing listened on {port} within 60 s")


def _port_freed_within(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not port_in_use("127.0.0.1", port):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(("sig", "graceful"), [(signal.SIGTERM, True), (signal.SIGINT, True), (signal.SIGKILL, False)],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_the_broker_command_stopped_by_a_signal_leaves_no_broker_on_its_port(sig, graceful):
    port = free_port()
    process = _start_broker(port)
    process.send_signal(sig)
    code = process.wait(timeout=30)
    if graceful:
        assert code in (0, 130), code
    assert _port_freed_within(port, 10), "the Tansu child still holds the port"
    again = _start_broker(port)  # a new broker on the same port starts
    again.terminate()
    again.wait(timeout=30)
