"""Seldon MLServer 1.7.1 in Kafka mode, as a benchmark peer serving the same ONNX model.

MLServer's pins conflict with ours, so it lives in its own virtual environment under ``home``
(``ensure_installed``, once; a marker file records success) and runs as a subprocess
(``start`` / ``stop``). This module runs in the main venv and imports nothing from mlserver; the
runtime MLServer loads is ``bench.mlserver_runtime.OnnxModel``, imported only inside
MLServer's processes from a copy of that one file staged in the run folder (``pythonpath/``), so
MLServer's PYTHONPATH holds nothing else of ours: not the repository, and never the main venv's
site-packages, whose pins would shadow MLServer's.

What MLServer's Kafka mode does, read from its source (``mlserver/kafka``) and checked here:

- One ``AIOKafkaConsumer`` with no group: it starts at the latest offset of every partition,
  never commits, and drops what it has not answered when stopped.
- It routes by the ``mlserver-model`` header (``request_headers()``); a record without it fails
  and is only logged.
- The Kafka key, when present, replaces the body's ``id`` (with neither, MLServer makes up a
  uuid); the answer carries that id both as its key and in its body, plus CloudEvents headers
  (``Ce-Id``, ``Ce-Requestid``). ``answer_key`` reads the body's ``id``.
- A failed request is logged and dropped: no answer, no dead letter.

Readiness: HTTP ``/v2/health/ready`` and ``/v2/models/<name>/ready`` say the model is loaded, but
not that the Kafka consumer has its positions (it resolves "latest" lazily, and anything sent
before that is skipped). So ``start`` then sends one warm-up request to every input partition
and waits for the answer to each, re-sending to partitions still silent. Warm-up ids start with
``WARMUP_PREFIX``; ``answer_key`` returns None for their answers, so a collector ignores them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from streaminfer.broker import LOOPBACK, free_port
from streaminfer.schemas.codec import request_body
from streaminfer.schemas.errors import StreamInferError
from streaminfer.streams.clients import KafkaClients
from streaminfer.streams.settings import KafkaSettings

MLSERVER_VERSION = "1.7.1"
REQUIREMENTS = (f"mlserver=={MLSERVER_VERSION}", "uvloop<0.22", "onnxruntime", "numpy")
"""uvloop 0.22 breaks MLServer 1.7.1's parallel workers at start-up, hence the pin."""
RUNTIME = "bench.mlserver_runtime.OnnxModel"
MODEL_HEADER = "mlserver-model"
WARMUP_PREFIX = "mlserver-peer-warmup-"
RUNTIME_SOURCE = Path(__file__).with_name("mlserver_runtime.py")
_NETWORK_MARKERS = (
    "NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
    "Name or service not known", "Network is unreachable", "ConnectTimeoutError", "Read timed out",
    "ProxyError", "Connection refused", "No route to host",
)


class PeerUnavailable(StreamInferError):
    """The peer cannot be installed or started. ``detail`` is one line; ``registry_unreachable``
    is True only when pip could not reach the package index (callers may skip on that alone)."""

    def __init__(self, detail: str, registry_unreachable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.registry_unreachable = registry_unreachable


class _Answer(msgspec.Struct):
    id: str | None = None


_answer_decoder = msgspec.json.Decoder(_Answer)


class MLServerPeer:
    """``start()`` and ``stop()`` are idempotent, and it is a context manager (``stop`` on exit).
    ``start`` blocks (up to ``timeout_s``); from async code call it with ``asyncio.to_thread``."""

    def __init__(self, home: Path, model_path: Path, model_name: str = "breast-cancer",
                 parallel_workers: int = 0) -> None:
        self.home = Path(home)
        self.model_path = Path(model_path).resolve()
        self.model_name = model_name
        self.parallel_workers = parallel_workers
        """0 runs inference in MLServer's main process (fastest for a tiny model); 1 or more use
        worker processes, which need the ``uvloop<0.22`` pin."""
        self.venv = self.home / "venv"
        self.run_dir: Path | None = None
        self.http_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # --- installation -------------------------------------------------------------------------

    @property
    def _marker(self) -> Path:
        return self.venv / ".streaminfer-installed"

    def ensure_installed(self) -> None:
        """Create ``home/venv`` and pip-install ``REQUIREMENTS`` once; later calls return at once."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes installing at once would collide
            if self._marker.is_file() and self._marker.read_text() == "\n".join(REQUIREMENTS):
                return
            if not (self.venv / "bin" / "python").is_file():
                # The main interpreter, so the peer runs the same Python version (MLServer needs < 3.13).
                self._run_installer([sys.executable, "-m", "venv", str(self.venv)], "venv")
            pip = [str(self.venv / "bin" / "python"), "-m", "pip", "install", "--timeout", "30", "--retries", "2"]
            self._run_installer([*pip, *REQUIREMENTS], "pip")
            self._marker.write_text("\n".join(REQUIREMENTS))

    def _run_installer(self, command: list[str], what: str) -> None:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        output = result.stdout + result.stderr
        unreachable = any(marker in output for marker in _NETWORK_MARKERS) and (
            "No matching distribution found" in output or "from versions: none" in output)
        reason = "package registry unreachable: " if unreachable else ""
        raise PeerUnavailable(f"{what} failed: {reason}{_key_error_line(output)}",
                              registry_unreachable=unreachable)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.run_dir / "mlserver.log" if self.run_dir is not None else None

    def start(self, bootstrap: str, input_topic: str, output_topic: str, timeout_s: float = 120,
              clients: KafkaClients | None = None) -> None:
        """Start MLServer reading ``input_topic`` and answering on ``output_topic``; return once
        its consumer answers a warm-up request on every input partition. ``clients``: how the
        warm-up reaches the broker (MLServer itself takes the bootstrap only)."""
        if self._process is not None and self._process.poll() is None:
            return
        if not self._marker.is_file():
            raise PeerUnavailable(f"MLServer is not installed in {self.venv}: call ensure_installed() first")
        if not self.model_path.is_file():
            raise PeerUnavailable(f"no model at {self.model_path}")
        deadline = time.monotonic() + timeout_s
        self.run_dir = self._write_settings(bootstrap, input_topic, output_topic)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_")}
        env.update(PYTHONPATH=str(self.run_dir / "pythonpath"), VIRTUAL_ENV=str(self.venv), MLSERVER_KAFKA_ENABLED="true",
                   PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(self.venv / "bin" / "mlserver"), "start", str(self.run_dir)], cwd=self.run_dir, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_http_ready(deadline)
            self._warm_up(clients or KafkaClients(KafkaSettings(bootstrap=bootstrap)), input_topic, output_topic, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM to MLServer's process group, then SIGKILL after 20 s. Unanswered requests are lost."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # parallel workers left behind, if any

    def __enter__(self) -> MLServerPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what a load generator and a collector need ---------------------------------------------

    def request_headers(self) -> list[tuple[str, bytes]]:
        """Headers every request needs: MLServer routes a Kafka record by its model header."""
        return [(MODEL_HEADER, self.model_name.encode())]

    @staticmethod
    def answer_key(key: bytes | None, value: bytes) -> str | None:
        """The request id an answer record belongs to: the body's ``id`` (MLServer sets it from the
        request key, else the request body's id), else the record key; None for warm-ups."""
        try:
            answer_id = _answer_decoder.decode(value).id
        except msgspec.DecodeError:
            answer_id = None
        if answer_id is None and key:
            answer_id = key.decode()
        if answer_id is None or answer_id.startswith(WARMUP_PREFIX):
            return None
        return answer_id

    # --- internals ----------------------------------------------------------------------------

    def _write_settings(self, bootstrap: str, input_topic: str, output_topic: str) -> Path:
        runs = [int(p.name[4:]) for p in self.home.glob("run-*") if p.name[4:].isdigit()]
        n = max(runs, default=0) + 1
        while True:  # another process may be starting a peer in the same home
            run_dir = self.home / f"run-{n}"
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                n += 1
        (run_dir / self.model_name).mkdir()
        package = run_dir / "pythonpath" / "bench"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        shutil.copy2(RUNTIME_SOURCE, package / RUNTIME_SOURCE.name)
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.http_port, grpc_port, metrics_port = ports
        settings = {
            "debug": False, "host": LOOPBACK, "http_port": self.http_port, "grpc_port": grpc_port,
            "metrics_port": metrics_port, "parallel_workers": self.parallel_workers,
            "metrics_dir": str(run_dir / ".metrics"), "environments_dir": str(run_dir / ".envs"),
            "kafka_enabled": True, "kafka_servers": bootstrap,
            "kafka_topic_input": input_topic, "kafka_topic_output": output_topic,
        }
        model_settings = {
            "name": self.model_name, "implementation": RUNTIME, "parameters": {"uri": str(self.model_path)},
        }
        (run_dir / "settings.json").write_text(json.dumps(settings, indent=2))
        (run_dir / self.model_name / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        return run_dir

    def _check_alive(self, deadline: float, waiting_for: str) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            code = self._process.returncode
            raise PeerUnavailable(f"mlserver exited with code {code} {waiting_for}: {self._log_tail()}")
        if time.monotonic() > deadline:
            raise PeerUnavailable(f"mlserver not ready in time ({waiting_for}): {self._log_tail()}")

    def _wait_http_ready(self, deadline: float) -> None:
        base = f"http://{LOOPBACK}:{self.http_port}/v2"
        for url in (f"{base}/health/ready", f"{base}/models/{self.model_name}/ready"):
            while not _http_ok(url):
                self._check_alive(deadline, f"waiting for {url}")
                time.sleep(0.2)

    def _warm_up(self, clients: KafkaClients, input_topic: str, output_topic: str, deadline: float) -> None:
        # A thread of its own, so start() works whether or not the caller runs an event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._warm_up_async(clients, input_topic, output_topic, deadline)).result()

    async def _warm_up_async(self, clients: KafkaClients, input_topic: str, output_topic: str, deadline: float) -> None:
        from aiokafka import TopicPartition

        producer = clients.producer()
        consumer = clients.consumer(group_id=None, fetch_max_wait_ms=20)
        await producer.start()
        await consumer.start()
        try:
            outputs = [TopicPartition(output_topic, p) for p in sorted(await producer.partitions_for(output_topic))]
            consumer.assign(outputs)
            await consumer.seek_to_end(*outputs)
            for tp in outputs:
                await consumer.position(tp)  # resolve now, before any warm-up is answered
            silent = set(await producer.partitions_for(input_topic))
            body, token = self._warm_up_body(), uuid.uuid4().hex[:8]
            attempt = 0
            while silent:
                self._check_alive(deadline, f"warming up partitions {sorted(silent)}")
                attempt += 1
                for p in silent:
                    request_id = f"{WARMUP_PREFIX}{token}-{p}-{attempt}"
                    await producer.send_and_wait(input_topic, body(request_id), key=request_id.encode(),
                                                 partition=p, headers=self.request_headers())
                records = await consumer.getmany(timeout_ms=2000)
                for batch in records.values():
                    for record in batch:
                        try:
                            answer = _answer_decoder.decode(record.value).id or ""
                        except msgspec.DecodeError:
                            continue  # not an answer of ours
                        if answer.startswith(f"{WARMUP_PREFIX}{token}-"):
                            silent.discard(int(answer.split("-")[-2]))
        finally:
            await consumer.stop()
            await producer.stop()

    def _warm_up_body(self) -> Callable[[str], bytes]:
        import onnxruntime as ort

        spec = ort.InferenceSession(str(self.model_path), providers=["CPUExecutionProvider"]).get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        row = np.zeros(shape, dtype=np.float32)
        return lambda request_id: request_body(request_id, spec.name, row)

    def _log_tail(self, lines: int = 3) -> str:
        """The log's ERROR lines and traceback conclusions (a failed model load ends with shutdown
        lines that say nothing), else its last lines, joined into one line."""
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return " | ".join(_telling_lines(self.log_path.read_text(errors="replace"))[-lines:]) or "(empty log)"


def _telling_lines(log: str) -> list[str]:
    errors: list[str] = []
    in_traceback = False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            errors.append(line.strip())  # the exception that ends the traceback
            in_traceback = False
        elif " ERROR " in line:
            errors.append(line.strip())
    return errors or [line.strip() for line in log.splitlines() if line.strip()]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _key_error_line(output: str) -> str:
    """pip's first ERROR line, with the "conflict is caused by" lines when resolution failed."""
    lines = output.splitlines()
    errors = [line.removeprefix("ERROR: ").strip() for line in lines if line.startswith("ERROR:")]
    conflict: list[str] = []
    if "The conflict is caused by:" in lines:
        for line in lines[lines.index("The conflict is caused by:") + 1:]:
            if not line.startswith("    "):
                break
            conflict.append(line.strip())
    head = errors[0] if errors else next((line.strip() for line in reversed(lines) if line.strip()), "no output")
    return re.sub(r"\s+", " ", "; ".join([head, *conflict]))
