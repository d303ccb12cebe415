"""One benchmark run: every system, same model, same payloads, same broker, medians of N runs."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.progress import Progress

from bench.load import Collector, blast, open_loop, payloads
from bench.measure import PeakMemory, tree_cpu_seconds
from bench.systems import System, Topics

LOADS = (0.25, 0.5, 0.8)


@dataclass
class BenchConfig:
    bootstrap: str
    work_dir: Path
    rows: np.ndarray
    model_path: Path
    runs: int = 3
    latency_seconds: float = 5.0
    partitions: int = 4


@dataclass
class RunResult:
    throughput: float | None = None
    cpu_s_per_1000: float | None = None
    peak_rss_mib: float | None = None
    lost: int = 0
    duplicates: int = 0
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None


def ort_alone(model_path: Path, rows: np.ndarray, seconds: float = 3.0, batch: int = 256) -> RunResult:
    """Limit A: batched ONNX Runtime in this process, no Kafka."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    data = np.resize(rows, (batch, rows.shape[1])).astype(np.float32)
    session.run(None, {"input": data})
    done, cpu0, start = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"input": data})
        done += batch
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return RunResult(throughput=done / elapsed, cpu_s_per_1000=cpu / done * 1000)


async def _fresh_topics(config: BenchConfig) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"bench-in-{suffix}", f"bench-out-{suffix}", f"bench-dl-{suffix}", f"bench-{suffix}")
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(name, config.partitions, 1) for name in (topics.requests, topics.answers, topics.deadletter)
        ])
    finally:
        await admin.close()
    return topics


def sustained_rate(times: list[float], bucket_s: float = 0.25) -> float:
    """Median of per-bucket answer rates over the busy window, without its ragged first and last
    buckets: start-up and the tail do not count against a system, stalls in between do."""
    if len(times) < 2:
        return 0.0
    times = sorted(times)
    start, stop = times[0], times[-1]
    if stop - start < 4 * bucket_s:
        return (len(times) - 1) / max(stop - start, 1e-9)
    counts, _ = np.histogram(times, bins=np.arange(start, stop + bucket_s, bucket_s))
    return float(np.median(counts[1:-1]) / bucket_s)


async def run_system(system: System, config: BenchConfig, run: int, progress: Progress) -> RunResult:
    assert system.launch is not None
    topics = await _fresh_topics(config)
    collector = Collector(config.bootstrap, topics.answers, system.answer_key)
    await collector.start()
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    sent_at: dict[str, float] = {}
    result = RunResult()
    task = progress.add_task(f"{system.name} run {run}", total=2 + len(LOADS))
    backlog = payloads(config.rows, f"b{run}", system.backlog, system.request_headers)
    backlog_keys = [k.decode() for k, _, _ in backlog]
    running = None
    try:
        if system.consumes_backlog:
            await blast(producer, topics.requests, backlog, sent_at)
        running = system.launch(config.bootstrap, topics, config.work_dir)
        with PeakMemory(running.pid) as memory:
            cpu_series: list[tuple[float, float]] = []
            sampler = asyncio.create_task(_sample_cpu(running.pid, cpu_series))
            if not system.consumes_backlog:
                await blast(producer, topics.requests, backlog, sent_at)
            progress.advance(task)
            await collector.wait_for(backlog_keys, timeout_s=600, idle_s=60)
            times = [collector.received_at[k][0] for k in backlog_keys if k in collector.received_at]
            result.throughput = sustained_rate(times, system.rate_bucket_s)
            await asyncio.sleep(0.6)  # a CPU sample after the last answer closes the window
            result.cpu_s_per_1000 = _cpu_per_1000(cpu_series, times)
            progress.advance(task)
            for fraction in LOADS:
                rate = max(1.0, fraction * result.throughput)
                count = max(50, int(rate * config.latency_seconds))
                batch = payloads(config.rows, f"l{run}-{int(fraction * 100)}", count, system.request_headers)
                sent = await open_loop(producer, topics.requests, batch, rate, sent_at)
                keys = [k.decode() for k, _, _ in batch]
                await collector.wait_for(keys, timeout_s=120, idle_s=20)
                latencies = [
                    (collector.received_at[k][0] - sent_at[k]) * 1000 for k in keys if k in collector.received_at
                ]
                result.latency[f"{int(fraction * 100)}%"] = {
                    "rate": rate,
                    "p50_ms": float(np.percentile(latencies, 50)) if latencies else float("nan"),
                    "p99_ms": float(np.percentile(latencies, 99)) if latencies else float("nan"),
                    "generator_lag_p99_ms": sent.lag_p99_ms,
                    "generator_lag_max_ms": sent.lag_max_ms,
                }
                progress.advance(task)
            sampler.cancel()
            await asyncio.sleep(2)  # late duplicates
        result.peak_rss_mib = memory.peak_bytes / 2**20
        result.lost = sum(1 for key in sent_at if key not in collector.received_at)
        result.duplicates = sum(len(v) - 1 for v in collector.received_at.values())
    except Exception as exc:  # noqa: BLE001 - a system that cannot run here is a result, with its reason
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if running is not None:
            running.stop()
        await producer.stop()
        await collector.stop()
        progress.update(task, completed=2 + len(LOADS))
    return result


async def _sample_cpu(pid: int, series: list[tuple[float, float]]) -> None:
    while True:
        series.append((time.time(), await asyncio.to_thread(tree_cpu_seconds, pid)))
        await asyncio.sleep(0.25)


def _cpu_per_1000(series: list[tuple[float, float]], times: list[float]) -> float | None:
    """CPU of the system's process tree between its first and last answer of the backlog."""
    if len(times) < 2 or len(series) < 2:
        return None
    first, last = min(times), max(times)
    before = [cpu for t, cpu in series if t <= first]
    after = [cpu for t, cpu in series if t >= last]
    if not before or not after:
        return None
    return (after[0] - before[-1]) / len(times) * 1000


def median_result(runs: list[RunResult]) -> dict[str, object]:
    ok = [r for r in runs if r.error is None]
    if not ok:
        return {"error": runs[0].error if runs else "not run"}

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None and v == v]
        return statistics.median(present) if present else None

    latency = {}
    for load in ok[0].latency:
        latency[load] = {key: med([r.latency.get(load, {}).get(key) for r in ok]) for key in ok[0].latency[load]}
    return {
        "throughput": med([r.throughput for r in ok]),
        "cpu_s_per_1000": med([r.cpu_s_per_1000 for r in ok]),
        "peak_rss_mib": med([r.peak_rss_mib for r in ok]),
        "lost": sum(r.lost for r in ok),
        "duplicates": sum(r.duplicates for r in ok),
        "latency": latency,
        "runs": len(ok),
        "failed_runs": [r.error for r in runs if r.error],
    }
