"""A Redis online store that can be stopped and started again with its data, as a production
Redis with an append-only file is: stopped with SIGTERM (a clean shutdown), started again on the
same port and directory, holding what it held. (``tests.support.features.RedisServer`` keeps
nothing on disk: a restarted one is empty, and every enriched request would be missing its
features until they were written again.)"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from streaminfer.broker import free_port


class PersistentRedis:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self._command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PersistentRedis:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not self._answers():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits; clients get connection refused."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=30)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
