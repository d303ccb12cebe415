"""`streaminfer bench`: build the systems, run them round by round, write the report.

Each round runs every system once, limits first, so the figures a ratio compares come from one
round (minutes apart, under the same load on the machine); reported figures are medians over
the rounds, ratios and added latencies medians of the per-round values.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench import report
from bench.connection import BenchConnection, write_connection
from bench.runner import FIXED_RATES, BenchConfig, RunResult, median_result, offered_rates, ort_alone, run_system
from bench.systems import CHECKOUT, System, Target, baseline, mlserver, streaminfer
from streaminfer.demo.model import build_demo_model, demo_data
from streaminfer.settings import SETTINGS_FILE_VARIABLE, AppSettings
from streaminfer.streams.settings import KafkaSettings, PipelineSettings
from streaminfer.workers.models.repository import ModelRepository


def build_systems(repository: Path, model_path: Path, scale: float, peer_home: Path, with_peer: bool) -> list[System]:
    """Message counts are sized for several seconds of work at each system's speed here."""
    def n(count: int) -> int:
        return max(200, int(count * scale))

    systems = [
        baseline(report.LIMIT_B, "limit", n(300_000), model_path, "batch-passthrough", processes=2),
        baseline(report.LIMIT_B_1, "limit", n(300_000), model_path, "batch-passthrough", processes=1),
        baseline(report.PER_RECORD, "baseline", n(200_000), model_path, "passthrough"),
        baseline("naive", "baseline", n(8_000), model_path),
        baseline("microbatch", "baseline", n(150_000), model_path),
        streaminfer(report.DEFAULTS, n(300_000), repository, None),
        streaminfer("streaminfer (1 consumer actor)", n(200_000), repository, 1),
        streaminfer("streaminfer (2 consumer actors)", n(300_000), repository, 2),
        *(streaminfer(f"streaminfer (defaults, exactly-once {ms} ms)", n(300_000), repository, None, exactly_once(ms),
                      rate_bucket_s=max(0.25, 10 * ms / 1000))  # answers come a transaction at a time
          for ms in EXACTLY_ONCE_INTERVALS_MS),
    ]
    if with_peer:
        systems.append(mlserver(n(3_000), peer_home, model_path))
    return systems


EXACTLY_ONCE_INTERVALS_MS = (100, 1000)
"""Transaction intervals the exactly-once systems run at (Apache Kafka only: the embedded broker
refuses the mode, so ``--broker tansu`` leaves them out)."""


def exactly_once(interval_ms: int) -> dict[str, str | None]:
    return {"STREAMINFER_PIPELINE__GUARANTEE": "exactly_once", "STREAMINFER_PIPELINE__TRANSACTION_INTERVAL_MS": str(interval_ms)}


def _selected(systems: list[System], only: str | None, transactions: bool) -> list[System]:
    """``only`` (comma-separated) keeps the systems whose name contains one of its parts (and
    limit B, which the offered rates and every ratio need); without transactions (the embedded
    broker) no exactly-once system."""
    if only:
        parts = [part.strip().lower() for part in only.split(",") if part.strip()]
        systems = [s for s in systems if any(p in s.name.lower() for p in parts) or s.name == report.LIMIT_B]
    return [s for s in systems if transactions or "exactly-once" not in s.name]


async def run_bench(
    out_dir: Path, runs: int, scale: float, latency_seconds: float, with_peer: bool, console: Console,
    only: str | None = None, broker_kind: str = "tansu", settings: AppSettings | None = None,
    bootstrap: str | None = None, ray_probe: bool = True, rates: tuple[float, ...] = FIXED_RATES,
) -> list[Path]:
    """``rates``: the fixed rates every system is offered (besides half of limit B). ``bootstrap``: a running broker (with ``settings.kafka``'s TLS and SASL) instead of one
    the benchmark starts (``broker_kind``). ``ray_probe``: also measure a bare local Ray with and
    without its dashboard."""
    settings = settings or AppSettings()
    load_at_start = _load()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"streaminfer-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    repository = ModelRepository(work / "models")
    entry = build_demo_model(repository)
    rows = demo_data().x_test
    peer_home = Path.home() / ".cache" / "streaminfer" / "mlserver-1.7.1"
    external = bootstrap is not None
    systems = _selected(build_systems(repository.root, entry.model_path, scale, peer_home, with_peer), only,
                        transactions=broker_kind == "kafka" or external)
    rounds: dict[str, list[RunResult]] = {report.LIMIT_A: [ort_alone(entry.model_path, rows) for _ in range(runs)]}
    with _broker(broker_kind, work, bootstrap) as address:
        kafka = settings.kafka.model_copy(update={"bootstrap": address}) if external else KafkaSettings(bootstrap=address)
        pipeline = settings.pipeline if external else _pipeline_without_settings_file()
        connection = BenchConnection(kafka=kafka, pipeline=pipeline)
        target = Target(address, write_connection(connection, work / "clients.json"), work, external,
                        plaintext=kafka.security_protocol == "PLAINTEXT")
        config = BenchConfig(connection.clients(), target, rows, entry.model_path, runs=runs,
                             latency_seconds=latency_seconds)
        columns = (TextColumn("{task.description:<48}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
        try:
            with Progress(*columns, console=console) as progress:
                for run in range(1, runs + 1):
                    limit_b: float | None = None  # this round's, once measured
                    for system in systems:
                        rates_for = functools.partial(_rates_for, system, limit_b, rates)
                        result = await run_system(system, config, run, progress, rates_for)
                        rounds.setdefault(system.name, []).append(result)
                        if system.name == report.LIMIT_B:
                            limit_b = result.throughput
        finally:
            target.clients_file.unlink(missing_ok=True)  # it holds the connection's secrets
    results = {name: median_result(per_run) for name, per_run in rounds.items()}
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load_average": f"{load_at_start} at the start, {_load()} at the end (1/5/15 min)",
        "broker": "external: " + kafka.security_protocol if external else BROKERS[broker_kind],
        "model": f"{entry.name}/{entry.version} (GradientBoosting, ONNX), ~{len(rows[0])} FP32 features per request",
        "runs": runs,
        "command": f"streaminfer bench --runs {runs} --scale {scale} --latency-seconds {latency_seconds}"
        + ("" if with_peer else " --no-peer") + ("" if external else f" --broker {broker_kind}")
        + (" --bootstrap HOST:PORT" if external else "") + (f" --only {only!r}" if only else "")
        + (f" --rates {','.join(f'{r:g}' for r in rates)}" if rates != FIXED_RATES else ""),
        "ray_bare": {"dashboard": _ray_bare(True), "no_dashboard": _ray_bare(False)} if ray_probe else None,
    }
    derived = report.per_round(rounds)
    stem = "bench_external" if external else report.STEMS[broker_kind]
    return report.write(meta, results, derived, out_dir, stem)


def _rates_for(system: System, limit_b: float | None, fixed: tuple[float, ...], own_max: float) -> dict[str, float]:
    """Limit B is offered half of its own maximum; the others half of limit B's in their round."""
    return offered_rates(own_max if system.name == report.LIMIT_B else limit_b, fixed)


BROKERS = {"tansu": "embedded Tansu 0.6 (memory)", "kafka": "Apache Kafka 4.1.1 (KRaft, one node, from Maven jars)"}


class _External:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def __enter__(self) -> str:
        return self.bootstrap

    def __exit__(self, *exc: object) -> None:
        return None


class _Started:
    """A broker the benchmark starts; its data (``discard``: gigabytes after a full run) is
    removed once it has stopped, its log is kept beside the systems' logs."""

    def __init__(self, broker, discard: Path | None = None) -> None:
        self.broker = broker
        self.discard = discard

    def __enter__(self) -> str:
        return self.broker.__enter__().bootstrap

    def __exit__(self, *exc: object) -> None:
        try:
            self.broker.__exit__(*exc)
        finally:
            if self.discard is not None:
                shutil.rmtree(self.discard, ignore_errors=True)


def _broker(kind: str, work: Path, bootstrap: str | None) -> _External | _Started:
    if bootstrap is not None:
        return _External(bootstrap)
    if kind == "kafka":
        from tests.support.kafka_jvm import ApacheKafkaBroker, ensure_kafka_jars

        return _Started(ApacheKafkaBroker(work / "kafka", ensure_kafka_jars()), discard=work / "kafka" / "data")
    from streaminfer.broker import EmbeddedBroker

    return _Started(EmbeddedBroker(log_path=work / "tansu.log"))


def _pipeline_without_settings_file() -> PipelineSettings:
    """The pipeline settings a ``streaminfer run`` on the benchmark's own broker reads (its
    environment without the settings file, ``bench.connection.system_environment``), so limit B
    fetches as that system does."""
    saved = os.environ.pop(SETTINGS_FILE_VARIABLE, None)
    try:
        return AppSettings().pipeline
    except ValidationError:  # the environment holds half of a secured connection; the file the rest
        return PipelineSettings()
    finally:
        if saved is not None:
            os.environ[SETTINGS_FILE_VARIABLE] = saved


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _ray_bare(dashboard: bool) -> dict | None:
    """What a bare local Ray costs, with or without its dashboard (``bench.footprint``)."""
    import json

    command = [sys.executable, "-m", "bench.footprint", "ray-bare", *([] if dashboard else ["--no-dashboard"])]
    try:
        done = subprocess.run(command, capture_output=True, timeout=180, check=True, cwd=CHECKOUT,
                              env={**os.environ, "PYTHONPATH": str(CHECKOUT)})
        return json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(
    out_dir: Path, runs: int, scale: float, latency_seconds: float, with_peer: bool, console: Console,
    only: str | None = None, broker_kind: str = "both", settings: AppSettings | None = None,
    bootstrap: str | None = None, ray_probe: bool = True, rates: tuple[float, ...] = FIXED_RATES,
) -> list[Path]:
    """``broker_kind``: tansu, kafka, or both (one after the other, a report each)."""
    kinds = ["tansu"] if bootstrap is not None else ["tansu", "kafka"] if broker_kind == "both" else [broker_kind]
    written: list[Path] = []
    for kind in kinds:
        written += asyncio.run(run_bench(out_dir, runs, scale, latency_seconds, with_peer, console, only, kind,
                                         settings, bootstrap, ray_probe, rates))
    return written
