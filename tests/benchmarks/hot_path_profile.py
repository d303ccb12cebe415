"""Where a consumer actor's time goes per message, against limit B's passthrough, under py-spy.

One process, one consumer, the embedded broker: a backlog of demo requests is preloaded, then
either the pipeline (``Pipeline`` with in-process ONNX Runtime sessions, as a consumer actor
runs it) or limit B's ``BatchPassthrough`` (the same fetch settings and ``BatchSender``, one
commit per fetch) works it off. Wall time and this process's CPU time (the ORT thread included)
are taken over the drain only; with ``--profile DIR`` py-spy samples the same window
(``--native`` off) and writes a flame graph (SVG) and a speedscope file per system there.

    python -m tests.benchmarks.hot_path_profile --requests 60000 --runs 3 --profile tests/benchmarks/results/profiles

Figures per system: answers per second and CPU µs per answer, medians of the runs, with the
load average beside them (the machine is shared: compare the two systems of one invocation).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from bench.load import blast, payloads
from bench.passthrough import BatchPassthrough
from streaminfer.broker import EmbeddedBroker
from streaminfer.demo.model import build_demo_model, demo_data
from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.process import tune_gc_for_streaming
from streaminfer.streams.clients import KafkaClients, ensure_topic_names, start_client
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.execution.local import LocalPool
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from streaminfer.workers.settings import RuntimeSettings

SYSTEMS = ("passthrough", "pipeline")
PARTITIONS = 4


async def preload(bootstrap: str, topic: str, count: int) -> None:
    rows = demo_data().x_test
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await start_client(producer, bootstrap)
    try:
        batch = payloads(rows, uuid.uuid4().hex[:6], count, [])
        for start in range(0, count, 10_000):
            await blast(producer, topic, batch[start:start + 10_000], {})
    finally:
        await producer.stop()


class Sampler:
    """py-spy on this process for the measured window (nothing when ``out`` is None)."""

    native = False
    """Also sample C frames (``--native``): where the time inside a C call goes."""

    def __init__(self, out: Path | None, name: str) -> None:
        self._out, self._name = out, name
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Sampler:
        if self._out is not None:
            spy = str(Path(sys.executable).with_name("py-spy"))
            for fmt, suffix in (("flamegraph", "svg"), ("speedscope", "speedscope.json")):
                self._processes.append(subprocess.Popen(
                    [spy, "record", "--pid", str(os.getpid()), "--rate", "250", "--format", fmt,
                     "-o", str(self._out / f"{self._name}.{suffix}"), *(["--native"] if self.native else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)  # attached before the clock starts
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self._processes:
            process.send_signal(signal.SIGINT)
        for process in self._processes:
            process.wait(timeout=60)


async def drain_passthrough(kafka: KafkaSettings, topics: TopicSettings, settings: PipelineSettings, count: int,
                            out: Path | None) -> tuple[float, float]:
    passthrough = BatchPassthrough(KafkaClients(kafka), topics.requests, topics.predictions, kafka.group_id, settings)
    async with passthrough:
        moved = await passthrough.step()  # joined and fetching before the clock starts
        with Sampler(out, "passthrough"):
            started, cpu = time.perf_counter(), time.process_time()
            while moved < count:
                moved += await passthrough.step()
            return time.perf_counter() - started, time.process_time() - cpu


async def drain_pipeline(kafka: KafkaSettings, topics: TopicSettings, settings: PipelineSettings, count: int,
                         repository: ModelRepository, model: str, out: Path | None,
                         runtime: RuntimeSettings) -> tuple[float, float]:
    models = ServedModels(repository, model, lambda entry: LocalPool(entry, runtime, "profile"))
    served = await models.serve(model)
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    pipeline = Pipeline(kafka, topics, settings, models, metrics, label="profile")

    def answered() -> float:
        return sum(s.value for m in metrics.requests.collect() for s in m.samples if s.name.endswith("_total"))

    async with pipeline:
        while answered() < 1:  # noqa: ASYNC110 - a Prometheus counter has no event to wait on
            await asyncio.sleep(0.001)
        with Sampler(out, "pipeline"):
            started, cpu = time.perf_counter(), time.process_time()
            while answered() < count:  # noqa: ASYNC110 - as above
                await asyncio.sleep(0.001)
            elapsed, spent = time.perf_counter() - started, time.process_time() - cpu
    [pool] = await served.pool.describe()
    print(f"  batches on the event loop's thread {pool['batches_inline']}, on the session's {pool['batches_threaded']}")
    await models.stop()
    return elapsed, spent


async def one(system: str, bootstrap: str, repository: ModelRepository, model: str, count: int,
              out: Path | None, fetch_records: int, runtime: RuntimeSettings) -> tuple[float, float]:
    suffix = uuid.uuid4().hex[:6]
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"profile-{suffix}")
    topics = TopicSettings(requests=f"req-{suffix}", predictions=f"pred-{suffix}", deadletter=f"dlq-{suffix}",
                           partitions=PARTITIONS)
    await ensure_topic_names(kafka, [topics.requests, topics.predictions, topics.deadletter], PARTITIONS, 1)
    await preload(bootstrap, topics.requests, count)
    settings = PipelineSettings(default_model=model, fetch_max_records=fetch_records)
    if system == "passthrough":
        elapsed, cpu = await drain_passthrough(kafka, topics, settings, count, out)
    else:
        elapsed, cpu = await drain_pipeline(kafka, topics, settings, count, repository, model, out, runtime)
    return count / elapsed, cpu / count * 1e6


async def main(requests: int, runs: int, out: Path | None, only: list[str], fetch_records: int,
               runtime: RuntimeSettings) -> None:
    tune_gc_for_streaming(PipelineSettings().gc_threshold)  # as a consuming process does
    work = Path(tempfile.mkdtemp(prefix="hot-path-"))
    repository = ModelRepository(work / "models")
    entry = build_demo_model(repository)
    figures: dict[str, list[tuple[float, float]]] = {s: [] for s in only}
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        for run in range(runs):
            for system in only:
                sampled = out if run == runs - 1 else None  # the last round under py-spy
                figures[system].append(await one(system, broker.bootstrap, repository, entry.name, requests, sampled,
                                                     fetch_records, runtime))
                print(f"run {run + 1} {system}: {figures[system][-1][0]:,.0f}/s {figures[system][-1][1]:.1f} µs/answer "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = figures.get("passthrough")
    for system, values in figures.items():
        rate = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        ratio = ""
        if base and system != "passthrough":
            ratios = [a[0] / b[0] for a, b in zip(values, base)]
            cpus = [a[1] / b[1] for a, b in zip(values, base)]
            ratio = f"  ×passthrough: rate {statistics.median(ratios):.2f}, CPU/answer {statistics.median(cpus):.2f}"
        print(f"{system}: {rate:,.0f} answers/s, {cpu:.1f} CPU µs/answer{ratio}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None, help="write py-spy flame graphs here (last run)")
    parser.add_argument("--only", default=",".join(SYSTEMS))
    parser.add_argument("--fetch-records", type=int, default=PipelineSettings().fetch_max_records,
                        help="most records per fetch; a few (6) is what a consumer fetches at a low offered rate, "
                             "where the cost per fetch dominates")
    parser.add_argument("--inline-below-ms", type=float, default=RuntimeSettings().inline_below_ms,
                        help="runtime.inline_below_ms for the pipeline (0: every batch on the session's thread)")
    parser.add_argument("--native", action="store_true", help="py-spy samples C frames too (diagnosis only)")
    args = parser.parse_args()
    Sampler.native = args.native
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.requests, args.runs, args.profile, [s for s in args.only.split(",") if s],
                         args.fetch_records, RuntimeSettings(inline_below_ms=args.inline_below_ms)))
