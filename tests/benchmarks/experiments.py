"""What a traffic experiment costs the inference path, and how fast a failing canary is undone.

    PYTHONPATH=. python tests/benchmarks/experiments.py [REQUESTS] [ROUNDS]

1. Throughput, side by side in one running system (two consumer actors, the demo model): no
   experiment, a 50/50 split over two versions, and a shadow mirroring every request to a second
   version. The policy is switched live between arms; arms rotate; medians over ROUNDS.
2. Time to rollback: a canary whose candidate fails on a fifth of its requests, under a steady
   1,000 requests/s, with the experiment controller running. From the candidate's first failed
   request (its dead letter's timestamp) to the rollback decision, and from the decision to the
   candidate's last answer (the consumers' routing poll).

Not part of the test suite: figures for the closing notes, taken with nothing else running.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer

from streaminfer.app import start_app, start_ray
from streaminfer.broker import EmbeddedBroker, free_port
from streaminfer.demo.model import DEMO_MODEL, build_demo_model
from streaminfer.monitoring.settings import ExperimentSettings, MonitorSettings, MonitorTopics
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.schemas.deadletter import read_error_headers
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import make_producer, start_client
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.registry import PRODUCTION, ModelRegistry
from streaminfer.workers.models.repository import METADATA_FILE, ModelRepository
from streaminfer.workers.routing.traffic import Arm, Canary, Shadow, TrafficPolicy, save_policy
from streaminfer.workers.settings import RaySettings
from tests.benchmarks.alerting_isolation import time_requests
from tests.support.models import EXPERIMENT_MODEL, write_table_model

POLICIES = {
    "none": None,
    "split 50/50": TrafficPolicy("bench-split", arms=(Arm("control", PRODUCTION, 50), Arm("b", "1.1.0", 50))),
    "shadow 100%": TrafficPolicy("bench-shadow", shadow=Shadow("1.1.0", 1.0)),
}


def second_version(repository: ModelRepository) -> None:
    """The demo model again as 1.1.0: the same work per request, so only routing differs."""
    source = repository.resolve(DEMO_MODEL, "1.0.0").directory
    target = source.parent / "1.1.0"
    if not target.exists():
        shutil.copytree(source, target)
        text = (target / METADATA_FILE).read_text().replace('"version": "1.0.0"', '"version": "1.1.0"')
        (target / METADATA_FILE).write_text(text)


async def throughput(scratch: Path, kafka: KafkaSettings, count: int, rounds: int) -> None:
    repository = ModelRepository(scratch / "models")
    build_demo_model(repository)
    second_version(repository)
    ModelRegistry(repository).promote(DEMO_MODEL, "1.0.0", who="bench")
    suffix = uuid.uuid4().hex[:6]
    settings = AppSettings(
        model_repository=repository.root, kafka=kafka,
        topics=TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}",
                             shadow=f"sh-{suffix}"),
        pipeline=PipelineSettings(routing_poll_s=0.2),
        monitor=MonitorSettings(enabled=False), experiments=ExperimentSettings(enabled=False),
        metrics={"port": None, "targets_file": None},
    )
    app = await start_app(settings)
    try:
        for _ in range(3):  # warm-up: sessions, Kafka clients and the load generator settle
            await time_requests(settings, count)
        runs: dict[str, list[float]] = {arm: [] for arm in POLICIES}
        for round_ in range(rounds):
            order = list(POLICIES) if round_ % 2 == 0 else list(reversed(POLICIES))
            for arm in order:
                save_policy(repository.root / DEMO_MODEL, POLICIES[arm])
                await asyncio.sleep(1.0)  # every consumer has polled it (and started the second pool)
                runs[arm].append(count / await time_requests(settings, count))
            print("   round " + ", ".join(f"{arm} {runs[arm][-1]:,.0f}/s" for arm in order), flush=True)
    finally:
        await app.stop()
    base = statistics.median(runs["none"])
    for arm, values in runs.items():
        print(f"   {arm:12s} median {statistics.median(values):9,.0f} req/s  ratio to none "
              f"{statistics.median(values) / base:.2f}", flush=True)


async def time_to_rollback(scratch: Path, kafka: KafkaSettings, trial: int) -> tuple[float, float]:
    repository = ModelRepository(scratch / f"canary-{trial}")
    write_table_model(repository, "1.0.0")
    write_table_model(repository, "1.2.0-broken", size=80)
    ModelRegistry(repository).promote(EXPERIMENT_MODEL, "1.0.0", who="bench")
    save_policy(repository.root / EXPERIMENT_MODEL, TrafficPolicy(f"bench-canary-{trial}", canary=Canary(
        control=PRODUCTION, candidate="1.2.0-broken", steps=(10.0, 50.0, 100.0), min_requests=100)))
    suffix = uuid.uuid4().hex[:6]
    settings = AppSettings(
        model_repository=repository.root, kafka=kafka,
        topics=TopicSettings(requests=f"rq-{suffix}", predictions=f"pr-{suffix}", deadletter=f"dl-{suffix}",
                             shadow=f"sh-{suffix}"),
        pipeline=PipelineSettings(default_model=EXPERIMENT_MODEL, routing_poll_s=0.5),
        monitor=MonitorSettings(enabled=False, topics=MonitorTopics(labels=f"lb-{suffix}", metrics=f"mt-{suffix}")),
        experiments=ExperimentSettings(group_id=f"ex-{suffix}", snapshots_dir=scratch / "snapshots"),
        metrics={"port": None, "targets_file": None},
    )
    app = await start_app(settings)
    producer = make_producer(kafka)
    await start_client(producer, kafka.bootstrap)
    try:
        for n in range(15_000):  # 1,000 requests/s until the controller acts
            body = request_body(f"r-{n}", "input", np.array([[(37 * n) % 100, 0]], dtype=np.float32))
            await producer.send(settings.topics.requests, body, key=f"user-{n % 400}".encode())
            if n % 50 == 49:
                await asyncio.sleep(0.05)
                if n % 1000 == 999 and (await app.experiments.describe.remote())["actions"]:  # type: ignore[union-attr]
                    break
        await producer.flush()
        await asyncio.sleep(3)
        actions = (await app.experiments.describe.remote()).detail["actions"]  # type: ignore[union-attr]
    finally:
        await producer.stop()
        await app.stop()
    decided_s = actions[0][0] / 1000
    first_failure_s, last_candidate_s = await candidate_times(kafka, settings)
    return decided_s - first_failure_s, last_candidate_s - decided_s


async def candidate_times(kafka: KafkaSettings, settings: AppSettings) -> tuple[float, float]:
    consumer = AIOKafkaConsumer(settings.topics.predictions, settings.topics.deadletter, bootstrap_servers=kafka.bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    failures, answers = [], []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches:
                break
            for records in batches.values():
                for r in records:
                    if r.topic == settings.topics.deadletter and read_error_headers(r.headers).get("version") == "1.2.0-broken":
                        failures.append(r.timestamp / 1000)
                    elif dict(r.headers).get(h.MODEL_VERSION) == b"1.2.0-broken":
                        answers.append(r.timestamp / 1000)
    finally:
        await consumer.stop()
    return min(failures), max(answers + failures)


async def main(bootstrap: str, count: int, rounds: int) -> None:
    scratch = Path(tempfile.mkdtemp())
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}")
    start_ray(RaySettings(num_cpus=2, dashboard_port=free_port(), temp_dir=str(Path("/tmp") / f"ray-{uuid.uuid4().hex[:6]}")),
              log_to_driver=False)
    print(f"1. throughput, {count} requests per run, {rounds} rounds", flush=True)
    await throughput(scratch, kafka, count, rounds)
    print("2. failing canary (20% errors) at 1,000 req/s: first failure -> rollback decision -> last candidate answer",
          flush=True)
    for trial in range(3):
        kafka = kafka.model_copy(update={"group_id": f"g-{uuid.uuid4().hex[:6]}"})
        decide, apply = await time_to_rollback(scratch, kafka, trial)
        print(f"   trial {trial}: {decide:.2f} s to decide, {apply:.2f} s until the candidate answered no more",
              flush=True)


if __name__ == "__main__":
    broker = EmbeddedBroker().start()
    try:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
        rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
        asyncio.run(main(broker.bootstrap, count, rounds))
    finally:
        broker.stop()
