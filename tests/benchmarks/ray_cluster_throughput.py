"""Throughput of the pipeline on one Ray node against two on this machine, the same cores split.

    PYTHONPATH=. python tests/benchmarks/ray_cluster_throughput.py [BACKLOG] [RUNS]

An embedded broker and the demo model. Each run produces a backlog of BACKLOG demo requests
(``streaminfer.loadgen``), then starts ``streaminfer run --ray-address`` with two consumer actors
on a fresh cluster (``tests.support.ray_cluster``): either one node with 2 CPUs, or a head with 1
CPU and a second node with 1 CPU whose raylet cannot see the model repository (its consumer
serves from the mirror the control topic feeds). Throughput is the requests answered per second
between the first answer and the last (the answers' timestamps). Prints each run and the median.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from streaminfer.broker import EmbeddedBroker
from streaminfer.demo.model import INPUT_NAME, build_demo_model, demo_data
from streaminfer.loadgen import demo_payloads, send_all
from streaminfer.streams.clients import KafkaClients, ensure_topic_names
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from tests.integration.test_ray_cluster import running
from tests.support.harness import Collector
from tests.support.ray_cluster import two_node_cluster

PARTITIONS = 4


def settings_file(path: Path, repo: Path, kafka: KafkaSettings, topics: TopicSettings) -> Path:
    path.write_text(
        f'model_repository = "{repo}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\ngroup_id = "{kafka.group_id}"\n'
        f'[topics]\nrequests = "{topics.requests}"\npredictions = "{topics.predictions}"\n'
        f'deadletter = "{topics.deadletter}"\nshadow = "{topics.shadow}"\ncontrol = "{topics.control}"\n'
        f'partitions = {PARTITIONS}\n'
        '[pipeline]\nconsumers = 2\n'
        f'[pool]\nnamespace = "bench-{uuid.uuid4().hex[:6]}"\n'
        '[metrics]\nport = 0\n[monitor]\nenabled = false\n[experiments]\nenabled = false\n'
    )
    return path


async def backlog(kafka: KafkaSettings, topics: TopicSettings, count: int) -> None:
    await ensure_topic_names(kafka, [topics.requests, topics.predictions, topics.deadletter], PARTITIONS, 1)
    producer = KafkaClients(kafka).producer(linger_ms=5)
    await producer.start()
    try:
        await send_all(producer, topics.requests, demo_payloads(demo_data().x_test, count, "breast-cancer", INPUT_NAME))
    finally:
        await producer.stop()


async def answered(kafka: KafkaSettings, topics: TopicSettings, count: int) -> float:
    async with Collector(kafka.bootstrap, topics) as collector:
        collected = await collector.until(lambda c: c.total >= count, timeout_s=600)
    stamps = sorted(r.timestamp for r in collected.predictions + collected.dead_letters)
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)


def one_run(work: Path, repo: Path, bootstrap: str, nodes: int, count: int) -> float:
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"bench-{suffix}")
    topics = TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}",
                           shadow=f"sh-{suffix}", control=f"ct-{suffix}", partitions=PARTITIONS)
    asyncio.run(backlog(kafka, topics, count))
    settings = settings_file(work / "streaminfer.toml", repo, kafka, topics)
    cpus = {"head_cpus": 2, "second_cpus": 0} if nodes == 1 else {"head_cpus": 1, "second_cpus": 1}
    with two_node_cluster(work, hidden_on_second=[repo], **cpus) as cluster, running(cluster, settings, work):
        return asyncio.run(answered(kafka, topics, count))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        repo = Path(tmp) / "models"
        build_demo_model(ModelRepository(repo))
        rates: dict[int, list[float]] = {1: [], 2: []}
        for run in range(runs):
            for nodes in (1, 2):  # alternating, so both see the same machine load over time
                work = Path(tmp) / f"run-{run}-{nodes}"
                work.mkdir()
                started = time.monotonic()
                rate = one_run(work, repo, broker.bootstrap, nodes, count)
                rates[nodes].append(rate)
                print(f"run {run + 1}, {nodes} node(s): {rate:,.0f} requests/s ({time.monotonic() - started:.0f} s)", flush=True)
        for nodes, found in rates.items():
            print(f"{nodes} node(s), 2 CPUs in all: median {statistics.median(found):,.0f} requests/s of {[round(r) for r in found]}")


if __name__ == "__main__":
    main()
