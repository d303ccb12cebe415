"""`streaminfer broker` gives its port back however it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streaminfer.broker import free_port, port_in_use


def _start_broker(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Ready once the command says it listens: it is then past start-up and waiting on its broker."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streaminfer.cli", "broker", "--port", str(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "TERM": "dumb"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the broker command exited while starting:\n{log.read_text()}"
        if "bootstrap:" in log.read_text(errors="replace") and port_in_use("127.0.0.1", port):
            return process
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"nothing listened on {port} within 60 s:\n{log.read_text()}")


def _port_freed_within(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not port_in_use("127.0.0.1", port):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(("sig", "graceful"), [(signal.SIGTERM, True), (signal.SIGINT, True), (signal.SIGKILL, False)],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_the_broker_command_stopped_by_a_signal_leaves_no_broker_on_its_port(sig, graceful, tmp_path):
    port = free_port()
    log = tmp_path / "broker.log"
    process = _start_broker(port, log)
    process.send_signal(sig)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"still running 30 s after {sig.name}; its output:\n{log.read_text()}") from None
    if graceful:
        assert code in (0, 130), code
    assert _port_freed_within(port, 10), "the Tansu child still holds the port"
    again = _start_broker(port, tmp_path / "again.log")  # a new broker on the same port starts
    again.terminate()
    again.wait(timeout=30)
