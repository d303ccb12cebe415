"""One run of one system: its backlog (throughput, CPU, memory, start-up), then fixed rates.

The throughput phase preloads a backlog (or, for a system that starts at the latest offset,
sends it once the system is ready), starts the system, and measures the sustained answer rate,
CPU per 1,000 answers of the whole process tree, resident memory (RSS peak) and PSS by process
(``bench.footprint``) under load and at rest, and the time from launch to the first answer.
The latency phase offers every system the same fixed rates from a load process of its own
(``bench.offered``), so neither generator nor collector shares the harness's process.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from aiokafka.admin import NewTopic
from rich.progress import Progress

from bench.connection import merged_environment
from bench.footprint import PssSampler, grouped, pss_by_process
from bench.load import Collector, blast, payloads
from bench.measure import PeakMemory, tree_cpu_seconds
from bench.systems import Running, System, Target, Topics
from streaminfer.streams.clients import KafkaClients, start_client

FIXED_RATES = (1_000.0, 5_000.0, 10_000.0)
LIMIT_SHARE_LABEL = "50% limit B"
OVER_CAPACITY = 0.9
"""A rate above this share of a system's own maximum is not offered to it: no steady state."""


@dataclass
class BenchConfig:
    clients: KafkaClients
    target: Target
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
    startup_s: float | None = None
    memory_under_load: dict | None = None
    memory_at_rest: dict | None = None
    lost: int = 0
    duplicates: int = 0
    latency: dict[str, dict[str, float | None]] = field(default_factory=dict)
    error: str | None = None


def rate_label(rate: float) -> str:
    return f"{rate / 1000:g}k" if rate >= 1000 else f"{rate:g}"


def offered_rates(limit_b: float | None, fixed: tuple[float, ...] = FIXED_RATES) -> dict[str, float]:
    """The rates every system is offered: fixed ones, and half of limit B when it was measured."""
    rates = {rate_label(rate): rate for rate in fixed}
    if limit_b:
        rates[LIMIT_SHARE_LABEL] = round(limit_b * 0.5)
    return rates


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
    admin = config.clients.admin()
    await start_client(admin, config.clients.kafka.bootstrap)
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
    median = float(np.median(counts[1:-1]) / bucket_s)
    # answers in a few bursts (a small backlog, a starved machine) leave most buckets empty
    return median if median > 0 else (len(times) - 1) / (stop - start)


async def run_system(system: System, config: BenchConfig, run: int, progress: Progress,
                     rates_for: Callable[[float], dict[str, float]]) -> RunResult:
    """``rates_for(own_max)``: the rates to offer, given this system's measured maximum (limit B
    offers itself half of its own)."""
    assert system.launch is not None
    topics = await _fresh_topics(config)
    collector = Collector(config.clients, topics.answers, system.answer_key)
    await collector.start()
    producer = config.clients.producer(linger_ms=5, max_batch_size=512 * 1024)
    await start_client(producer, config.clients.kafka.bootstrap)
    sent_at: dict[str, float] = {}
    result = RunResult()
    task = progress.add_task(f"{system.name} run {run}", total=3)
    backlog = payloads(config.rows, f"b{run}", system.backlog, system.request_headers)
    backlog_keys = [k.decode() for k, _, _ in backlog]
    running = None
    try:
        if system.consumes_backlog:
            await blast(producer, topics.requests, backlog, sent_at)
        launched = time.time()
        running = system.launch(config.target, topics)
        ready = time.time()
        with PeakMemory(running.pid) as memory, PssSampler(running.pid) as pss:
            cpu_series: list[tuple[float, float]] = []
            sampler = asyncio.create_task(_sample_cpu(running.pid, cpu_series))
            if not system.consumes_backlog:
                await blast(producer, topics.requests, backlog, sent_at)
            progress.advance(task)
            await _answered_unless_exited(collector.wait_for(backlog_keys, timeout_s=600, idle_s=60), running)
            times = [collector.received_at[k][0] for k in backlog_keys if k in collector.received_at]
            result.throughput = sustained_rate(times, system.rate_bucket_s)
            result.startup_s = (min(times) if system.consumes_backlog and times else ready) - launched
            await asyncio.sleep(0.6)  # a CPU sample after the last answer closes the window
            result.cpu_s_per_1000 = _cpu_per_1000(cpu_series, times)
            sampler.cancel()
        result.peak_rss_mib = memory.peak_bytes / 2**20
        result.memory_under_load = pss.peak
        await asyncio.sleep(2)  # late duplicates; the system settles
        result.memory_at_rest = await asyncio.to_thread(lambda: grouped(pss_by_process(running.pid)))
        result.lost = sum(1 for key in sent_at if key not in collector.received_at)
        result.duplicates = sum(len(v) - 1 for v in collector.received_at.values())
        await collector.stop()
        progress.advance(task)
        result.latency = await _offer(system, config, topics, run, rates_for(result.throughput or 0.0),
                                      result.throughput or 0.0)
        result.lost += sum(int(step.get("sent") or 0) - int(step.get("answered") or 0) for step in result.latency.values())
    except Exception as exc:  # noqa: BLE001 - a system that cannot run here is a result, with its reason
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if running is not None:
            running.stop()
        await producer.stop()
        await collector.stop()
        progress.update(task, completed=3)
    return result


async def _offer(system: System, config: BenchConfig, topics: Topics, run: int, rates: dict[str, float],
                 own_max: float) -> dict[str, dict[str, float | None]]:
    """The fixed rates this system can sustain, from ``bench.offered`` in a process of its own;
    the others are marked over capacity."""
    offered = {label: rate for label, rate in rates.items() if rate <= OVER_CAPACITY * own_max}
    latency: dict[str, dict[str, float | None]] = {
        label: {"rate": rate, "over_capacity": 1.0} for label, rate in rates.items()}  # in the order offered
    if not offered:
        return latency
    work = config.target.work_dir
    plan_path, result_path = work / f"offer-{topics.group}.json", work / f"offered-{topics.group}.json"
    plan_path.write_text(json.dumps({
        "requests": topics.requests, "answers": topics.answers, "rates": list(offered.values()),
        "seconds": config.latency_seconds, "prefix": f"o{run}", "answer_key": system.answer_key_kind,
        "rows": str(_rows_file(config)),
        "headers": [(name, value.decode()) for name, value in system.request_headers],
    }))
    command = [sys.executable, "-m", "bench.offered", str(plan_path), str(result_path)]
    env = merged_environment(dict(config.target.child_environment()))
    code = await asyncio.to_thread(_call_logged, command, env, work / "offered.log")
    if code != 0:
        raise RuntimeError(f"the load process exited with {code} (log: {work / 'offered.log'})")
    for label, step in zip(offered, json.loads(result_path.read_text())):
        latency[label] = step
    return latency


async def _answered_unless_exited(waiting: Coroutine[Any, Any, int], running: Running) -> int:
    """``waiting``, unless the system exits first: then its exit code and log, not a long wait."""
    task = asyncio.ensure_future(waiting)
    try:
        while not task.done():
            code = running.exit_code()
            if code is not None:
                raise RuntimeError(f"the system exited with code {code} (log: {running.log_path})")
            await asyncio.wait({task}, timeout=0.5)
        return task.result()
    finally:
        task.cancel()


def _rows_file(config: BenchConfig) -> Path:
    """The request rows, for the load process (which then needs neither scikit-learn nor the model)."""
    path = config.target.work_dir / "rows.npy"
    if not path.is_file():
        np.save(path, config.rows)
    return path


def _call_logged(command: list[str], env: dict[str, str], log_path: Path) -> int:
    with open(log_path, "ab") as log:
        return subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)


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


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and v == v]
    return statistics.median(present) if present else None


def median_result(runs: list[RunResult]) -> dict[str, object]:
    """Medians of the runs that ran; the footprint is the run with the median peak PSS (one
    run's processes, so its groups add up)."""
    ok = [r for r in runs if r.error is None]
    if not ok:
        return {"error": runs[0].error if runs else "not run"}
    latency = {}
    for label in ok[0].latency:
        keys = {key for r in ok for key in r.latency.get(label, {})}
        latency[label] = {key: _median([r.latency.get(label, {}).get(key) for r in ok]) for key in sorted(keys)}
    by_memory = sorted((r for r in ok if r.memory_under_load), key=lambda r: float((r.memory_under_load or {})["total_mib"]))
    middle = by_memory[len(by_memory) // 2] if by_memory else None
    return {
        "throughput": _median([r.throughput for r in ok]),
        "cpu_s_per_1000": _median([r.cpu_s_per_1000 for r in ok]),
        "peak_rss_mib": _median([r.peak_rss_mib for r in ok]),
        "startup_s": _median([r.startup_s for r in ok]),
        "memory_under_load": middle.memory_under_load if middle else None,
        "memory_at_rest": middle.memory_at_rest if middle else None,
        "lost": sum(r.lost for r in ok),
        "duplicates": sum(r.duplicates for r in ok),
        "latency": latency,
        "runs": len(ok),
        "failed_runs": [r.error for r in runs if r.error],
    }
