"""Feature-store helpers for tests: a Redis server, the feature worker as a real process, and
the features recomputed from the stream by their definition."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from streaminfer.broker import free_port
from streaminfer.streams.features.settings import FeatureSettings, FeatureTopics
from streaminfer.streams.settings import KafkaSettings, TopicSettings

ROOT = Path(__file__).parents[2]


class RedisServer:
    """Debian's ``redis-server`` on a loopback port, in memory only."""

    def __init__(self, port: int | None = None) -> None:
        """``port``: the port of a server stopped before, to start one where its clients look."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        self.port = port if port is not None else free_port()
        self.url = f"127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


def feature_settings(tmp_path: Path, online_store: str, redis: RedisServer | None) -> FeatureSettings:
    """Its own repository, Feast project, Faust app id and topics, so tests never share state."""
    suffix = uuid.uuid4().hex[:8]
    return FeatureSettings(
        repo_path=tmp_path / "features",
        project=f"p{suffix}",
        online_store=online_store,  # type: ignore[arg-type]
        redis_url=redis.url if redis else "127.0.0.1:6379",
        app_id=f"features-{suffix}",
        sink_group_id=f"sink-{suffix}",
        sink_batch_wait_ms=100,
        topics=FeatureTopics(**{name: f"{value}-{suffix}" for name, value in FeatureTopics().model_dump().items()}),
    )


def settings_json_with_secrets(kafka: KafkaSettings) -> str:
    """The settings as JSON for a child process's environment, secrets revealed: pydantic writes
    ``**********`` for a ``SecretStr``, which would be the password the child logs in with."""
    data = json.loads(kafka.model_dump_json())
    for name in ("sasl_password", "ssl_key_password"):
        if (secret := getattr(kafka, name)) is not None:
            data[name] = secret.get_secret_value()
    if kafka.oauth.client_secret is not None:
        data["oauth"]["client_secret"] = kafka.oauth.client_secret.get_secret_value()
    return json.dumps(data)


class FeatureWorker:
    """``streaminfer features worker`` as its own process, so a test can kill it outright."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, settings: FeatureSettings, log: Path) -> None:
        self._env = {
            **os.environ,
            "STREAMINFER_KAFKA": settings_json_with_secrets(kafka),
            "STREAMINFER_TOPICS": topics.model_dump_json(),
            "STREAMINFER_FEATURES": settings.model_dump_json(),
            "PYTHONPATH": str(ROOT),
        }
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> FeatureWorker:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "streaminfer.cli", "features", "worker", "--metrics-port", "0", "--log-level", "info"],
            env=self._env, cwd=ROOT, stdout=self._log.open("ab"), stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=30)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-4000:]

    def __enter__(self) -> FeatureWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def read_topic(bootstrap: str, topic: str, idle_s: float = 1.0) -> list[Any]:
    """Every record on ``topic`` now, from the start."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            fetched = await consumer.getmany(timeout_ms=200)
            for batch in fetched.values():
                records.extend(batch)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


def redis_fixture() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


async def wait_for(predicate: Any, timeout_s: float, what: str, detail: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {detail()}")
        await asyncio.sleep(0.5)


def features_as_of(events: list[tuple[int, float]], spec: Any, at_ms: int) -> dict[str, float | int]:
    """An entity's features by their definition: its requests (time, score) up to ``at_ms``, in
    ``at_ms``'s step bucket (tumbling) and in the ``size/step`` buckets ending with it (hopping)."""
    step_ms = spec.step_s * 1000
    current = at_ms // step_ms
    tumbling = [score for ts, score in events if ts <= at_ms and ts // step_ms == current]
    hopping = [score for ts, score in events if ts <= at_ms and current - spec.buckets < ts // step_ms <= current]
    names = spec.feature_names()
    return {
        names[0]: len(tumbling), names[1]: sum(tumbling) / len(tumbling) if tumbling else 0.0,
        names[2]: len(hopping), names[3]: sum(hopping) / len(hopping) if hopping else 0.0,
    }
