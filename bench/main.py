"""`streaminfer bench`: build the systems, run them one after another, write the report."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench import report
from bench.runner import BenchConfig, median_result, ort_alone, run_system
from bench.systems import System, baseline, mlserver, streaminfer
from streaminfer.broker import EmbeddedBroker
from streaminfer.demo.model import build_demo_model, demo_data
from streaminfer.workers.models.repository import ModelRepository


def build_systems(repository: Path, model_path: Path, scale: float, peer_home: Path, with_peer: bool) -> list[System]:
    """Message counts are sized for several seconds of work at each system's speed here."""
    def n(count: int) -> int:
        return max(200, int(count * scale))

    systems = [
        baseline("passthrough", "limit", n(300_000), model_path),
        baseline("naive", "baseline", n(8_000), model_path),
        baseline("microbatch", "baseline", n(150_000), model_path),
        streaminfer("streaminfer (defaults)", n(300_000), repository, None),
        streaminfer("streaminfer 1 worker", n(200_000), repository, 1),
        streaminfer("streaminfer 2 workers", n(300_000), repository, 2),
        *(streaminfer(f"streaminfer (defaults, exactly-once {ms} ms)", n(300_000), repository, None, exactly_once(ms),
                      rate_bucket_s=max(0.25, 10 * ms / 1000))  # answers come a transaction at a time
          for ms in EXACTLY_ONCE_INTERVALS_MS),
    ]
    for system in systems:
        if system.name == "passthrough":
            system.name = report.LIMIT_B
    if with_peer:
        systems.append(mlserver(n(3_000), peer_home, model_path))
    return systems


EXACTLY_ONCE_INTERVALS_MS = (100, 1000)
"""Transaction intervals the exactly-once systems run at (Apache Kafka only: the embedded broker
refuses the mode, so ``--broker tansu`` leaves them out)."""


def exactly_once(interval_ms: int) -> dict[str, str]:
    return {"STREAMINFER_PIPELINE__GUARANTEE": "exactly_once", "STREAMINFER_PIPELINE__TRANSACTION_INTERVAL_MS": str(interval_ms)}


async def run_bench(
    out_dir: Path, runs: int, scale: float, latency_seconds: float, with_peer: bool, console: Console,
    only: str | None = None, broker_kind: str = "tansu",
) -> list[Path]:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"streaminfer-bench-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    repository = ModelRepository(work / "models")
    entry = build_demo_model(repository)
    rows = demo_data().x_test
    peer_home = Path.home() / ".cache" / "streaminfer" / "mlserver-1.7.1"
    systems = build_systems(repository.root, entry.model_path, scale, peer_home, with_peer)
    if only:
        systems = [s for s in systems if only.lower() in s.name.lower()]
    if broker_kind == "tansu":  # no transactions there
        systems = [s for s in systems if "exactly-once" not in s.name]
    results: dict[str, dict] = {report.LIMIT_A: median_result([ort_alone(entry.model_path, rows) for _ in range(runs)])}
    with _broker(broker_kind, work) as broker:
        config = BenchConfig(broker.bootstrap, work, rows, entry.model_path, runs=runs, latency_seconds=latency_seconds)
        columns = (TextColumn("{task.description:<40}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            for system in systems:
                per_run = [await run_system(system, config, run, progress) for run in range(1, runs + 1)]
                results[system.name] = median_result(per_run)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "broker": BROKERS[broker_kind],
        "model": f"{entry.name}/{entry.version} (GradientBoosting, ONNX), ~{len(rows[0])} FP32 features per request",
        "runs": runs,
        "command": f"streaminfer bench --runs {runs} --scale {scale} --latency-seconds {latency_seconds}"
        + ("" if with_peer else " --no-peer") + (f" --broker {broker_kind}" if broker_kind != "tansu" else "")
        + (f" --only {only!r}" if only else ""),
    }
    return report.write(meta, results, out_dir)


BROKERS = {"tansu": "embedded Tansu 0.6 (memory)", "kafka": "Apache Kafka 4.1.1 (KRaft, one node, from Maven jars)"}


def _broker(kind: str, work: Path):
    if kind == "kafka":
        from tests.support.kafka_jvm import ApacheKafkaBroker, ensure_kafka_jars

        return ApacheKafkaBroker(work / "kafka", ensure_kafka_jars())
    return EmbeddedBroker(log_path=work / "tansu.log")


def main(
    out_dir: Path, runs: int, scale: float, latency_seconds: float, with_peer: bool, console: Console,
    only: str | None = None, broker_kind: str = "tansu",
) -> list[Path]:
    return asyncio.run(run_bench(out_dir, runs, scale, latency_seconds, with_peer, console, only, broker_kind))
