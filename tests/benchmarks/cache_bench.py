"""What the prediction cache gains and costs: a stream with half of its inputs repeated against one
with none repeated, with the cache on and off, side by side in one run.

    python -m tests.benchmarks.cache_bench [REQUESTS] [RUNS] [--model demo|mlp|wide]

``demo`` is the GradientBoosting demo (about a microsecond per row: as cheap as the cache's own
lookup), ``mlp`` the demo perceptron, ``wide`` a seeded random perceptron 30 → 2048 → 2048 → 2 (four
million multiply-adds per row) standing in for a model whose inference is the cost.

Two measurements, each four figures (repeated half / none repeated × cache on / off), runs
interleaved so the machine's noise falls on each alike, medians of RUNS:

* end to end: REQUESTS requests produced to the embedded broker first, then ``start_app`` with
  two consuming actors (in-process ONNX Runtime sessions), and answers per second from the
  group's first commit to its last;
* the inference path alone: the same requests, decoded once, submitted a fetch (256) at a time,
  with as many fetches in flight as the loop allows (``max_inflight_batches``), to the per-version
  batchers (``ModelBatchers``, the cache in front of a real session), so the cache's gain and its
  overhead are not hidden behind Kafka.

In the repeated stream every other request repeats an input first sent about 2,000 requests
earlier (so it was answered in an earlier batch) under the same key, so it reaches the consumer
that answered it; the other stream's inputs are all distinct. Results go to
tests/benchmarks/results/cache.md.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import numpy as np
from aiokafka.structs import ConsumerRecord
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streaminfer.app import start_ray
from streaminfer.broker import EmbeddedBroker, free_port
from streaminfer.demo.model import (
    DEMO_MLP_MODEL,
    DEMO_MODEL,
    DEMO_VERSION,
    INPUT_NAME,
    build_demo_mlp,
    build_demo_model,
    demo_data,
)
from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.process import tune_gc_for_streaming
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.streams.pipeline.decoding import decode_record
from streaminfer.streams.pipeline.version_batchers import ModelBatchers
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.execution.local import LocalPool
from streaminfer.workers.execution.runtime import ModelRuntime
from streaminfer.workers.models.caching import CachePolicy
from streaminfer.workers.models.repository import ModelMetadata, ModelRepository
from streaminfer.workers.routing.served import ServedModels
from streaminfer.workers.settings import RaySettings, RuntimeSettings
from tests.benchmarks.secured_throughput import drain_rate
from tests.support.harness import app_settings, send, started

ROOT = Path(__file__).resolve().parents[2]
REPEAT_DISTANCE = 1000  # a repeat's input was new about 2 x this many requests earlier
FETCH = 256
STREAMS = ("half repeated", "none repeated")
CACHE = ("cache on", "cache off")


def unique_rows(count: int, seed: int = 7) -> np.ndarray:
    """``count`` distinct demo rows (test rows, each scaled by its own tiny factor)."""
    rng = np.random.default_rng(seed)
    base = demo_data().x_test
    rows = base[np.arange(count) % len(base)] * (1 + 1e-3 * rng.standard_normal((count, 1)))
    return rows.astype(np.float32)


def stream(kind: str, count: int) -> list[tuple[int, np.ndarray]]:
    """(input id, row) per request: all distinct, or every other one a repeat of an earlier input."""
    if kind == "none repeated":
        rows = unique_rows(count)
        return [(i, rows[i]) for i in range(count)]
    rows = unique_rows((count + 1) // 2)
    out = []
    for i in range(count):
        new = i // 2
        index = new if i % 2 == 0 else max(0, new - REPEAT_DISTANCE)
        out.append((index, rows[index]))
    return out


def records(model: str, items: list[tuple[int, np.ndarray]], prefix: str) -> list:
    return [(f"input-{index}".encode(), request_body(f"{prefix}-{n}", INPUT_NAME, row[np.newaxis, :]),
             [(h.MODEL_NAME, model.encode()), (h.REQUEST_ID, f"{prefix}-{n}".encode())])
            for n, (index, row) in enumerate(items)]


WIDE_MODEL = "wide-mlp"


def build_wide_model(repository: ModelRepository) -> None:
    """A seeded random perceptron 30 -> 2048 -> 2048 -> 2 with ReLUs: same input as the demo."""
    rng = np.random.default_rng(11)
    sizes = [30, 2048, 2048, 2]
    nodes, initializers, current = [], [], INPUT_NAME
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{layer}"], [f"h{layer}"]))
        current = f"h{layer}"
        if layer < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{layer}"]))
            current = f"r{layer}"
    nodes.append(helper.make_node("Identity", [current], ["score"]))
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 30])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 2])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory = repository.root / WIDE_MODEL / DEMO_VERSION
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    signature = ModelRuntime(directory / "model.onnx", RuntimeSettings()).signature
    repository.save_metadata(ModelMetadata(name=WIDE_MODEL, version=DEMO_VERSION, signature=signature))


MODELS: dict[str, tuple[str, Callable[[ModelRepository], object]]] = {"demo": (DEMO_MODEL, build_demo_model), "mlp": (DEMO_MLP_MODEL, build_demo_mlp), "wide": (WIDE_MODEL, build_wide_model)}


def repositories(work: Path, chosen: str) -> dict[str, ModelRepository]:
    model, build = MODELS[chosen]
    plain = ModelRepository(work / "off")
    build(plain)
    cached = ModelRepository(work / "on")
    shutil.copytree(plain.root / model / DEMO_VERSION, cached.root / model / DEMO_VERSION)
    metadata = plain.resolve(model).metadata
    cached.save_metadata(msgspec.structs.replace(metadata, deterministic=True, cache=CachePolicy(ttl_s=600)))
    return {"cache on": cached, "cache off": plain}


Figures = tuple[float, float]
"""Answers per second (wall clock), and CPU-microseconds per answer (the processes doing the work)."""


def cpu_per_answer_us(metrics_urls: list[str]) -> float:
    """CPU-microseconds per answer of the consuming actors, from their own cost counters (process
    CPU time since the pipeline started, model loading excluded; ``monitoring.cost.meter``)."""
    cpu = answers = 0.0
    for url in metrics_urls:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "streaminfer_cost_cpu_seconds_total":
                    cpu += sample.value
                elif sample.name == "streaminfer_cost_answers_total":
                    answers += sample.value
    return cpu / max(answers, 1) * 1e6


async def end_to_end(bootstrap: str, repository: ModelRepository, model: str, payloads: list) -> Figures:
    suffix = uuid.uuid4().hex[:6]
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"cache-bench-{suffix}")
    topics = TopicSettings(requests=f"req-{suffix}", predictions=f"pred-{suffix}", deadletter=f"dlq-{suffix}",
                           shadow=f"shadow-{suffix}", partitions=4)
    settings = app_settings(kafka, topics, repository, consumers=2, metrics={"port": 0, "targets_file": None})
    settings.pipeline.default_model = model
    sent = await send(bootstrap, topics.requests, payloads)
    drained = asyncio.create_task(drain_rate(kafka, sent))
    app = await started(settings)
    try:
        rate = await drained
        await asyncio.sleep(2 * settings.pipeline.commit_interval_ms / 1000)  # the meters' last settle
        return rate, await asyncio.to_thread(cpu_per_answer_us, [str(a["metrics_url"]) for a in app.actors])
    finally:
        await app.stop()


async def inference_path(repository: ModelRepository, model: str, payloads: list) -> Figures:
    """Requests per second through the batchers (cache and session) for decoded fetches."""
    models = ServedModels(repository, model, lambda entry: LocalPool(entry, RuntimeSettings(), "bench"))
    served = await models.serve(model)
    batchers = ModelBatchers(models, PipelineSettings(), PipelineMetrics(CollectorRegistry()), 1)
    batchers.start()
    decoded = [decode_record(ConsumerRecord("req", 0, n, 0, 0, key, value, None, len(key), len(value), headers), models)
               for n, (key, value, headers) in enumerate(payloads)]
    settings = PipelineSettings()
    tune_gc_for_streaming(settings.gc_threshold)  # as a consuming process does
    slots = asyncio.Semaphore(settings.max_inflight_batches)  # fetches in flight at once, as in the loop

    async def fetch(items: list) -> None:
        async with slots:
            await batchers.submit(served, items)

    try:
        started_at, cpu_before = time.perf_counter(), time.process_time()
        await asyncio.gather(*(fetch(decoded[start:start + FETCH]) for start in range(0, len(decoded), FETCH)))
        elapsed, cpu = time.perf_counter() - started_at, time.process_time() - cpu_before
        return len(decoded) / elapsed, cpu / len(decoded) * 1e6
    finally:
        await batchers.stop()
        await models.stop()


def table(title: str, figures: dict[tuple[str, str], list[Figures]]) -> list[str]:
    lines = [f"### {title}", "",
             "| stream | cache on: answers/s | cache off: answers/s | on / off | cache on: CPU µs/answer | cache off: CPU µs/answer | on / off |",
             "|---|---|---|---|---|---|---|"]
    for kind in STREAMS:
        rate = {c: statistics.median(f[0] for f in figures[(kind, c)]) for c in CACHE}
        cpu = {c: statistics.median(f[1] for f in figures[(kind, c)]) for c in CACHE}
        lines.append(f"| {kind} | {rate['cache on']:,.0f} | {rate['cache off']:,.0f} | {_ratio(rate['cache on'], rate['cache off'])} "
                     f"| {cpu['cache on']:,.1f} | {cpu['cache off']:,.1f} | {_ratio(cpu['cache on'], cpu['cache off'])} |")
    runs = "; ".join(f"{kind}, {c}: " + ", ".join(f"{r:,.0f}/s {u:,.1f} µs" for r, u in figures[(kind, c)])
                     for kind in STREAMS for c in CACHE)
    return [*lines, "", f"<sub>runs: {runs}</sub>", ""]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "-"


async def main(requests: int, runs: int, chosen: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    model = MODELS[chosen][0]
    repos = repositories(work, chosen)
    payloads = {kind: records(model, stream(kind, requests), kind.split()[0]) for kind in STREAMS}
    path_rates: dict[tuple[str, str], list[Figures]] = {}
    for cache in CACHE:  # warm-up: the first session of a process pays for loading and first runs
        await inference_path(repos[cache], model, payloads[STREAMS[0]][:2000])
    for _ in range(runs):
        for kind in STREAMS:
            for cache in CACHE:
                figures = await inference_path(repos[cache], model, payloads[kind])
                path_rates.setdefault((kind, cache), []).append(figures)
                print(f"inference path {kind}, {cache}: {figures[0]:,.0f} answers/s, {figures[1]:.1f} CPU µs/answer", flush=True)
    start_ray(RaySettings(num_cpus=2, dashboard_port=free_port(), temp_dir=f"/tmp/ray-{uuid.uuid4().hex[:6]}"),
              log_to_driver=False)
    e2e_rates: dict[tuple[str, str], list[Figures]] = {}
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        for run in range(runs):
            for kind in STREAMS:
                for cache in CACHE:
                    figures = await end_to_end(broker.bootstrap, repos[cache], model, payloads[kind])
                    e2e_rates.setdefault((kind, cache), []).append(figures)
                    print(f"run {run + 1}/{runs} {kind}, {cache}: {figures[0]:,.0f} answers/s, "
                          f"{figures[1]:.1f} CPU µs/answer", flush=True)
    lines = [
        "# The prediction cache: half the inputs repeated vs none repeated, cache on and off",
        "",
        f"`python -m tests.benchmarks.cache_bench {requests} {runs} --model {chosen}` "
        f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, model `{model}` {DEMO_VERSION}; {requests:,} requests per "
        f"run, medians of {runs} runs interleaved. A shared 2-core machine (other work ran beside it): "
        "answers per second swing with the neighbours' load; CPU microseconds per answer hold steadier (end to "
        "end: the consuming actors' own cost counters, consumer and inference parts, from the pipeline's start; "
        "inference path: this process).",
        "",
        *table("End to end: embedded broker, two consuming actors (answers/s from the group's first commit to "
               "its last)", e2e_rates),
        *table(f"The inference path alone: decoded fetches of {FETCH} through the batchers (cache + ONNX Runtime session)", path_rates),
    ]
    out = ROOT / f"tests/benchmarks/results/cache-{chosen}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    chosen = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "demo"
    args = [a for a in sys.argv[1:] if not a.startswith("--") and a not in MODELS]
    asyncio.run(main(int(args[0]) if args else 20_000, int(args[1]) if len(args) > 1 else 3, chosen))
