"""The figures the scaling model (``streaminfer/capacity.py``) is built from, measured here.

    PYTHONPATH=. python tests/benchmarks/scaling_model.py [BACKLOG] [RUNS]
    PYTHONPATH=. python tests/benchmarks/scaling_model.py inference

An embedded broker, the demo model, a fresh Ray cluster per run (``tests.support.ray_cluster``).
Each run produces a backlog of BACKLOG demo requests, then ``streaminfer run --ray-address`` drains
it with 1 or 2 consumer actors on one node with 2 CPUs, or with 2 on a head and a second node with
1 CPU each (the second without the model repository, as in ``ray_cluster_throughput.py``); the
three take turns, so each sees the same machine load over time. Per run:

- answers/s between the first answer and the last (the answers' timestamps), and per consumer;
- CPU-seconds per 1,000 answers of the consumer actor processes, the broker process, the
  ``streaminfer run`` driver and this process (which collects the answers): ``psutil``
  ``cpu_times``, user + system, from the moment the actors are found to the last answer; only
  answers stamped in that window count;
- the cores the rest of the machine kept busy meanwhile (Ray's own processes and whatever other
  engineers run): the machine's busy CPU time less the groups above, over the window.

Then the models' inference cost alone (also by itself: ``scaling_model.py inference``): ONNX
Runtime on the CPU with one intra-op thread (as in a consumer), CPU-seconds per row at batch sizes
1, 32, 256 (the pipeline's ``max_batch_size``, what a backlog fills) and 512, for the demo models and
for the wide perceptron of ``gpu_inference.py`` (3 × 1,024 units). Prints each run, the medians
and the machine's load (``os.getloadavg``, as ``uptime`` shows it).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from ray.util.state import list_actors

from streaminfer.broker import EmbeddedBroker
from streaminfer.capacity import Layout, Rates, predict
from streaminfer.demo.model import INPUT_NAME, build_demo_mlp, build_demo_model, demo_data
from streaminfer.monitoring.cost.settings import CostSettings
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.execution.runtime import ModelRuntime
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import RuntimeSettings
from tests.benchmarks.ray_cluster_throughput import PARTITIONS, backlog
from tests.integration.test_ray_cluster import running
from tests.support.harness import Collector
from tests.support.ray_cluster import Cluster, two_node_cluster

CONSUMER_CLASS = "ConsumerActor"
BATCHES = (1, 32, 256, 512)
#: (consumer actors, nodes): one node with 2 CPUs, or a head and a second node with 1 CPU each
SHAPES = ((1, 1), (2, 1), (2, 2))


GROUPS = ("consumers", "broker", "driver", "collector")


@dataclass(frozen=True)
class Run:
    consumers: int
    nodes: int
    answers_per_s: float
    cpu_s_per_1000: dict[str, float]
    """CPU-seconds per 1,000 answers of each group: the consumer actors, the broker, the
    ``streaminfer run`` driver, and this process (the collector reading the answers)."""
    others_cores: float
    """Cores the rest of the machine kept busy meanwhile (Ray's processes, other engineers)."""
    counted: int
    """Answers stamped after the actors were found (the CPU figures' denominator)."""

    @property
    def per_consumer(self) -> float:
        return self.answers_per_s / self.consumers


def settings_file(path: Path, repo: Path, kafka: KafkaSettings, topics: TopicSettings, consumers: int) -> Path:
    path.write_text(
        f'model_repository = "{repo}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\ngroup_id = "{kafka.group_id}"\n'
        f'[topics]\nrequests = "{topics.requests}"\npredictions = "{topics.predictions}"\n'
        f'deadletter = "{topics.deadletter}"\nshadow = "{topics.shadow}"\ncontrol = "{topics.control}"\n'
        f'partitions = {PARTITIONS}\n'
        f'[pipeline]\nconsumers = {consumers}\n'
        f'[pool]\nnamespace = "scale-{uuid.uuid4().hex[:6]}"\n'
        '[metrics]\nport = 0\n[monitor]\nenabled = false\n[experiments]\nenabled = false\n'
    )
    return path


def cpu_s(processes: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in processes))


def machine_busy_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def broker_process() -> psutil.Process:
    """The embedded broker: this process's child running ``tansu broker``."""
    return next(p for p in psutil.Process().children() if "broker" in p.cmdline() and "tansu" in " ".join(p.cmdline()))


def consumer_processes(cluster: Cluster, consumers: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        actors = [a for a in list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")])
                  if a.class_name == CONSUMER_CLASS]
        if len(actors) == consumers:
            return [psutil.Process(a.pid) for a in actors]
        time.sleep(0.2)
    raise RuntimeError(f"{consumers} consumer actors did not come up")


async def drained(kafka: KafkaSettings, topics: TopicSettings, count: int,
                  groups: list[list[psutil.Process]]) -> tuple[float, int, list[float], float, float]:
    """Answers/s first to last; from the moment this is called to the last answer: the answers
    stamped, each group's CPU-seconds, the machine's busy CPU-seconds, the seconds."""
    since_ms, started = time.time() * 1000, time.monotonic()
    before, machine_before = [cpu_s(group) for group in groups], machine_busy_s()
    async with Collector(kafka.bootstrap, topics) as collector:
        collected = await collector.until(lambda c: c.total >= count, timeout_s=600)
        used = [cpu_s(group) - b for group, b in zip(groups, before)]
        machine, window_s = machine_busy_s() - machine_before, time.monotonic() - started
    stamps = sorted(r.timestamp for r in collected.predictions + collected.dead_letters)
    rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)
    return rate, sum(1 for s in stamps if s >= since_ms), used, machine, window_s


def one_run(work: Path, repo: Path, bootstrap: str, consumers: int, nodes: int, count: int) -> Run:
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"scale-{suffix}")
    topics = TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}",
                           shadow=f"sh-{suffix}", control=f"ct-{suffix}", partitions=PARTITIONS)
    asyncio.run(backlog(kafka, topics, count))
    settings = settings_file(work / "streaminfer.toml", repo, kafka, topics, consumers)
    broker = broker_process()
    cpus = {"head_cpus": 2, "second_cpus": 0} if nodes == 1 else {"head_cpus": 1, "second_cpus": 1}
    with two_node_cluster(work, hidden_on_second=[repo], **cpus) as cluster, running(cluster, settings, work) as driver:
        groups = [consumer_processes(cluster, consumers), [broker], [psutil.Process(driver.pid)], [psutil.Process()]]
        rate, answers, used, machine, window_s = asyncio.run(drained(kafka, topics, count, groups))
    per_1000 = {name: seconds * 1000 / answers for name, seconds in zip(GROUPS, used)}
    return Run(consumers, nodes, rate, per_1000, (machine - sum(used)) / window_s, answers)


def inference_cpu_s_per_row(model_path: Path, features: int, batches: tuple[int, ...] = BATCHES) -> dict[int, float]:
    """CPU-seconds per row of one CPU session with one intra-op thread, by batch size (median of 3
    timings of at least 0.5 CPU-seconds each)."""
    runtime = ModelRuntime(model_path, RuntimeSettings(device="cpu"))
    rows = demo_data().x_test.astype(np.float32)
    found: dict[int, float] = {}
    for batch in batches:
        x = np.resize(rows, (batch, features))
        timings = []
        for _ in range(3):
            calls, started = 0, time.process_time()
            while (used := time.process_time() - started) < 0.5:
                runtime.run({INPUT_NAME: x})
                calls += 1
            timings.append(used / (calls * batch))
        found[batch] = statistics.median(timings)
    return found


def inference(directory: Path) -> None:
    """The demo models and the wide perceptron of ``gpu_inference.py`` on this machine's CPU."""
    import onnx

    from tests.benchmarks.gpu_inference import _wide_perceptron

    features = demo_data().x_test.shape[1]
    wide = directory / "wide-mlp.onnx"
    onnx.save(_wide_perceptron(features, hidden=1024, layers=3), str(wide))
    repository = ModelRepository(directory / "models")
    models = {"breast-cancer": build_demo_model(repository).model_path,
              "breast-cancer-mlp": build_demo_mlp(repository).model_path, "wide-mlp": wide}
    for name, path in models.items():
        per_row = inference_cpu_s_per_row(path, features)
        print(f"ONNX Runtime, {name}, CPU, 1 thread: " + ", ".join(
            f"batch {batch} {seconds * 1e6:.2f}" for batch, seconds in per_row.items()) + " CPU-µs per row", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["inference"]:
        with tempfile.TemporaryDirectory() as tmp:
            inference(Path(tmp))
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        repo = Path(tmp) / "models"
        build_demo_model(ModelRepository(repo))
        found: dict[tuple[int, int], list[Run]] = {shape: [] for shape in SHAPES}
        for run in range(runs):
            for consumers, nodes in SHAPES:  # in turn, so each sees the same machine load over time
                work = Path(tmp) / f"run-{run}-{consumers}-{nodes}"
                work.mkdir()
                result = one_run(work, repo, broker.bootstrap, consumers, nodes, count)
                found[consumers, nodes].append(result)
                print(f"run {run + 1}, {_shape(consumers, nodes)}: {result.answers_per_s:,.0f} answers/s "
                      f"({result.per_consumer:,.0f} per consumer), CPU-s per 1,000 answers "
                      f"{_groups(result.cpu_s_per_1000)} over {result.counted:,} answers; "
                      f"the rest of the machine busy {result.others_cores:.2f} cores; load {os.getloadavg()[0]:.2f}",
                      flush=True)
        for (consumers, nodes), results in found.items():
            medians = {g: statistics.median(r.cpu_s_per_1000[g] for r in results) for g in GROUPS}
            print(f"{_shape(consumers, nodes)}, medians of {len(results)}: "
                  f"{statistics.median(r.answers_per_s for r in results):,.0f} answers/s, "
                  f"{statistics.median(r.per_consumer for r in results):,.0f} per consumer, CPU-s per 1,000 answers "
                  f"{_groups(medians)}, the rest of the machine busy "
                  f"{statistics.median(r.others_cores for r in results):.2f} cores")
        check(found)
        inference(Path(tmp))
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")


def check(found: dict[tuple[int, int], list[Run]]) -> None:
    """The scaling model against each shape's runs: the medians of every run's CPU-seconds per
    answer, and each run's cores left by the rest of the machine; the broker and the answers'
    reader share those cores with the consumers."""
    runs = [r for results in found.values() for r in results]
    consumer_s = statistics.median(r.cpu_s_per_1000["consumers"] for r in runs) / 1000
    beside_s = statistics.median(r.cpu_s_per_1000["broker"] + r.cpu_s_per_1000["collector"] + r.cpu_s_per_1000["driver"]
                                 for r in runs) / 1000
    rates = Rates(client_cpu_s=consumer_s, inference_cpu_s=0.0, broker_cpu_s=beside_s)
    print(f"a consumer actor: {consumer_s * 1e6:.1f} CPU-µs per answer ({1 / consumer_s:,.0f} answers/s per core); "
          f"broker, driver and reader: {beside_s * 1e6:.1f} CPU-µs per answer")
    for (consumers, nodes), results in found.items():
        # partitions = consumers: the model's consumer count is what ran
        predicted = [predict(Layout(consumers, 1, max(0.1, 2 - r.others_cores), actor_num_cpus=0.01), rates, CostSettings()).answers_per_s
                     for r in results]
        measured = statistics.median(r.answers_per_s for r in results)
        model = statistics.median(predicted)
        full = predict(Layout(consumers, 1, 2, actor_num_cpus=0.01), rates, CostSettings()).answers_per_s
        print(f"model, {_shape(consumers, nodes)}: {model:,.0f} answers/s on the cores left ({measured / model - 1:+.0%} "
              f"measured), {full:,.0f} on both cores")


def _shape(consumers: int, nodes: int) -> str:
    return f"{consumers} consumer(s) on " + ("one node with 2 CPUs" if nodes == 1 else "two nodes with 1 CPU each")


def _groups(per_1000: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.4f}" for name, seconds in per_1000.items())


if __name__ == "__main__":
    main()
