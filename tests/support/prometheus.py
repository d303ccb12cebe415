"""A real Prometheus server for integration tests: the binary from Debian's ``prometheus`` package.

Why a real one: what tests care about is what Prometheus makes of our targets file and metrics
(service discovery, relabelling, counter names after the ``_total`` suffix, rule evaluation),
and only Prometheus itself answers that. It scrapes every second, so a test sees a new value
within a few seconds.

Synchronous on purpose (subprocess and ``urllib``), so it works from plain and async tests alike.

    with PrometheusServer(tmp_path, targets_file=tmp_path / "targets.json") as prometheus:
        ...  # write the targets file, export metrics
        prometheus.wait_for_value("sum(demo_things_total)", 7)
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from streaminfer.broker import free_port

READY_TIMEOUT_S = 30.0
_POLL_S = 0.2
_LOG_TAIL_LINES = 30


class PrometheusError(RuntimeError):
    """Prometheus did not start, or answered a query with an error."""


def prometheus_binary() -> str | None:
    """Path of the ``prometheus`` binary (PATH first, then Debian's location), or None."""
    found = shutil.which("prometheus")
    if found:
        return found
    debian = Path("/usr/bin/prometheus")
    return str(debian) if debian.is_file() else None


class PrometheusServer:
    """One Prometheus on 127.0.0.1, its config, data and log under ``workdir``.

    One job, ``streaminfer``, whose targets come from ``targets_file`` through file-based service
    discovery (the file the app writes; it may appear after ``start()``, and its name must end in
    .json, .yml or .yaml). Scrapes and rule evaluations run every second. ``scrape_options`` go
    into that job as they are, e.g. ``{"scheme": "https", "tls_config": {"ca_file": ...},
    "basic_auth": {"username": ..., "password_file": ...}}`` for a secured endpoint. ``start()`` and
    ``stop()`` are safe to call twice; the object is also a context manager.
    """

    def __init__(
        self,
        workdir: Path,
        targets_file: Path,
        *,
        rule_files: Sequence[Path] = (),
        scrape_options: Mapping[str, Any] | None = None,
        binary: str | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.workdir = Path(workdir)
        self.targets_file = Path(targets_file)
        self.rule_files = [Path(path) for path in rule_files]
        self.scrape_options = dict(scrape_options or {})
        self.binary = binary or prometheus_binary()
        self.ready_timeout_s = ready_timeout_s
        self.port: int | None = None
        self.config_file = self.workdir / "prometheus.yml"
        self.log_file = self.workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait for ``/-/ready``; on failure stop it and raise with its log."""
        if self._process is not None:
            return
        if self.binary is None:
            raise PrometheusError(
                "no prometheus binary: "
                "install Debian's prometheus package (apt-get install prometheus)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        self.port = free_port()
        self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=info",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate (then kill after 10 s) the server; keeps its log and data for a post-mortem."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result list (``{"metric": {...}, "value": [ts, "v"]}`` items).

        A scalar or string result comes back as one item with empty ``metric``.
        """
        data = self._get("/api/v1/query", {"query": expr})
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        assert isinstance(result, list)
        return result

    def value(self, expr: str) -> float | None:
        """Sum of the instant vector's values, or None when it is empty."""
        result = self.query(expr)
        if not result:
            return None
        return sum(float(item["value"][1]) for item in result)

    def wait_for_value(self, expr: str, expected: float, timeout_s: float = 30.0) -> float | None:
        """Poll until ``expr`` sums to ``expected``; return the last value.

        Raises AssertionError with the last value (None: empty result) and the scrape targets'
        health when it has not got there within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            last = self.value(expr)
            if last is not None and math.isclose(last, expected, rel_tol=1e-9, abs_tol=1e-12):
                return last
            if time.monotonic() >= deadline:
                health = [
                    (t["labels"].get("instance"), t["health"], t["lastError"])
                    for t in self.targets()["activeTargets"]
                ]
                raise AssertionError(
                    f"{expr} = {last}, expected {expected} within {timeout_s} s; targets: {health}"
                )
            time.sleep(_POLL_S)

    def targets(self) -> dict[str, Any]:
        """``/api/v1/targets``: ``{"activeTargets": [...], "droppedTargets": [...]}``."""
        data: dict[str, Any] = self._get("/api/v1/targets", {})
        return data

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if not self.log_file.exists():
            return ""
        with self.log_file.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines))

    def _config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path.resolve()) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": "streaminfer",
                    "file_sd_configs": [
                        {"files": [str(self.targets_file.resolve())], "refresh_interval": "1s"}
                    ],
                    **self.scrape_options,
                }
            ],
        }

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self._process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet, or 503 while it replays its WAL
            if time.monotonic() >= deadline:
                raise PrometheusError(
                    f"prometheus not ready after {self.ready_timeout_s} s:\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}"
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422/503 carry a JSON error body
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"GET {path} {params}: HTTP {exc.code}: {detail}") from exc
        if body.get("status") != "success":
            error = f"{body.get('errorType')}: {body.get('error')}"
            raise PrometheusError(f"GET {path} {params}: {error}")
        return body["data"]
