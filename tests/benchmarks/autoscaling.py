"""How fast the autoscaler reacts: a lag spike to a new consumer actor consuming, an idle group to
its first drain and back to one consumer.

    PYTHONPATH=. python tests/benchmarks/autoscaling.py [--broker tansu|kafka] [--runs 3] [--backlog 4000]

Each run starts the pipeline with one consumer actor and the integration test's fast scaling
settings (``tests/support/scaling.FAST_SCALING``: readings every 0.25 s, idle for 2 s before a
drain), sends requests in chunks, keeping at least ``--backlog`` unanswered until a consumer added
for them owns partitions (``tests.support.scaling.burst_then_idle``), and watches the group (every 50 ms): when a
consumer added for the burst first owns partitions, when every request has been answered and
committed (the group is idle), when the first consumer leaves and when the group is back at one.
It prints one line per run and the medians. The reaction to a spike is the reading interval plus
starting Ray actor processes that load their ONNX Runtime sessions and join the group; the reaction
to idleness is ``idle_for_s`` plus the reading interval, then a drain (finish, commit, leave).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray

from streaminfer.app import start_ray
from streaminfer.broker import EmbeddedBroker, free_port
from streaminfer.demo.model import build_demo_model, demo_data
from streaminfer.running import ConsumerGroupApp
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.settings import RaySettings
from tests.integration.test_autoscaling import SLOW_CONSUMER
from tests.integration.test_pipeline import demo_records
from tests.support.harness import app_settings, started
from tests.support.scaling import FAST_SCALING, burst_then_idle, driver_samples


async def one_run(bootstrap: str, repository: ModelRepository, backlog: int, index: int) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap=bootstrap, group_id=f"bench-{suffix}", session_timeout_ms=6000,
                          heartbeat_interval_ms=500, rebalance_timeout_ms=6000)
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}", deadletter=f"deadletter-{suffix}")
    settings = app_settings(kafka, topics, repository, consumers=1, pipeline=PipelineSettings(**SLOW_CONSUMER),
                            metrics={"port": 0, "targets_file": None}).model_copy(update={"scaling": FAST_SCALING})
    app = await started(settings)
    assert isinstance(app, ConsumerGroupApp)
    try:
        rows = demo_data().x_test
        run = await burst_then_idle(app, kafka, topics, lambda first, count: demo_records(rows, count, f"b{index}", first),
                                    backlog=backlog, chunk=max(1, backlog // 2))
        assert app.driver_metrics_url is not None
        samples = driver_samples(app.driver_metrics_url)
    finally:
        await app.stop()
    ids = run.collected.ids(run.collected.predictions)
    up = ("streaminfer_scaling_action_seconds_sum", (("direction", "up"),))
    up_count = samples.get(("streaminfer_scaling_action_seconds_count", (("direction", "up"),)), 0)
    down = ("streaminfer_scaling_action_seconds_sum", (("direction", "down"),))
    down_count = samples.get(("streaminfer_scaling_action_seconds_count", (("direction", "down"),)), 0)
    return {
        "peak": run.peak,
        "spike_to_consuming_s": run.to_new_consumer_s if run.to_new_consumer_s is not None else float("nan"),
        "scale_up_action_s": samples.get(up, 0) / up_count if up_count else float("nan"),
        "idle_to_first_drain_s": run.idle_to_first_drain_s if run.idle_to_first_drain_s is not None else float("nan"),
        "idle_to_one_s": run.idle_to_min_s if run.idle_to_min_s is not None else float("nan"),
        "drain_s": samples.get(down, 0) / down_count if down_count else float("nan"),
        "answered": len(ids),
        "duplicates": sum(n - 1 for n in ids.values()),
    }


async def main(args: argparse.Namespace) -> None:
    repository = ModelRepository(Path(tempfile.mkdtemp(prefix="models-")))
    build_demo_model(repository)
    if args.broker == "kafka":
        from tests.fixtures.apache_kafka import ApacheKafkaBroker, ensure_kafka_jars

        broker = ApacheKafkaBroker(Path(tempfile.mkdtemp(prefix="kafka-")), ensure_kafka_jars())
    else:
        broker = EmbeddedBroker()
    with broker:
        start_ray(RaySettings(num_cpus=2, dashboard_port=free_port(), temp_dir=f"/tmp/ray-{uuid.uuid4().hex[:6]}"),
                  log_to_driver=False)
        try:
            rows = []
            for index in range(args.runs):
                row = await one_run(broker.bootstrap, repository, args.backlog, index)
                rows.append(row)
                print(f"run {index + 1}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in row.items()), flush=True)
        finally:
            ray.shutdown()
    print(f"medians of {args.runs} runs on {args.broker}, a backlog of at least {args.backlog} until scaled:")
    for key in ("spike_to_consuming_s", "scale_up_action_s", "idle_to_first_drain_s", "idle_to_one_s", "drain_s"):
        print(f"  {key}: {statistics.median(row[key] for row in rows):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=4000)
    asyncio.run(main(parser.parse_args()))
