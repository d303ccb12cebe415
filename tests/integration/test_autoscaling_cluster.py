"""Autoscaling on a two-node Ray cluster, driven as a user would: ``streaminfer run --ray-address
ADDR --autoscale``. A burst scales the group from one consumer actor to what the cluster's CPUs
hold, on both nodes (the second cannot read the model repository: its consumers serve from the
mirror), every request is answered, and once idle the group drains back to one actor; the drained
actors are gone from the cluster and the decisions are in the driver's ``/metrics``."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from ray.util.state import list_actors, list_nodes

from streaminfer.schemas import headers as h
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from tests.integration.test_ray_cluster import PARTITIONS, fresh, repository, request, running
from tests.support.harness import Collector
from tests.support.models import LOOKUP_MODEL
from tests.support.ray_cluster import Cluster, two_node_cluster
from tests.support.scaling import driver_samples, keep_backlog_until

BACKLOG = 8000


def _settings_file(path: Path, repo: ModelRepository, kafka: KafkaSettings, topics: TopicSettings, cache: Path) -> Path:
    """One consumer actor at start, scaled up to four (two CPUs at 0.5 each, four partitions)."""
    path.write_text(
        f'model_repository = "{repo.root}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\ngroup_id = "{kafka.group_id}"\nsession_timeout_ms = 6000\n'
        'heartbeat_interval_ms = 500\nrebalance_timeout_ms = 6000\n'
        f'[topics]\nrequests = "{topics.requests}"\npredictions = "{topics.predictions}"\n'
        f'deadletter = "{topics.deadletter}"\nshadow = "{topics.shadow}"\ncontrol = "{topics.control}"\n'
        f'partitions = {PARTITIONS}\n'
        f'[pipeline]\ndefault_model = "{LOOKUP_MODEL}"\nconsumers = 1\n'
        'max_batch_size = 4\nfetch_max_records = 8\nmax_inflight_batches = 1\n'
        '[pool]\nnamespace = "autoscaled"\nactor_num_cpus = 0.5\n'
        '[runtime]\ndevice = "cpu"\n'
        f'[ray]\ncache_dir = "{cache}"\n'
        '[metrics]\nport = 0\n[monitor]\nenabled = false\n[experiments]\nenabled = false\n'
        '[scaling]\nenabled = true\nmin_consumers = 1\nmax_consumers = 4\ninterval_s = 0.25\nlag_per_consumer = 400\n'
        'idle_lag = 20\nidle_for_s = 2\nup_cooldown_s = 1\ndown_cooldown_s = 3\naction_timeout_s = 60\n'
    )
    return path


def _driver_metrics(log: Path) -> str:
    """The driver's endpoint: the first address ``run`` prints on its ``metrics:`` line."""
    found = re.search(r"metrics:\s+(\S+?)[,\s]", log.read_text())
    assert found, log.read_text()[-2000:]
    return found.group(1)


def _consumer_nodes(cluster: Cluster) -> list[str]:
    """The node of each live consumer actor."""
    return [actor.node_id for actor in list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")])
            if actor.class_name == "ConsumerActor"]


def _gauge(url: str, name: str) -> float:
    return driver_samples(url)[(name, ())]


def test_an_autoscaled_group_spreads_over_both_nodes_under_a_burst_and_drains_back_to_one_actor(tansu, tmp_path):
    repo = repository(tmp_path / "models")
    kafka, topics = fresh(tansu.bootstrap)
    settings = _settings_file(tmp_path / "streaminfer.toml", repo, kafka, topics, tmp_path / "cache")
    def requests(first: int, count: int) -> list:
        return [(f"s-{n}".encode(), request(f"s-{n}", n % 10), [(h.REQUEST_ID, f"s-{n}".encode())])
                for n in range(first, first + count)]

    with two_node_cluster(tmp_path, hidden_on_second=[repo.root]) as cluster, running(cluster, settings, tmp_path):
        driver = _driver_metrics(tmp_path / "run.log")
        nodes = {node.node_id for node in list_nodes(address=cluster.dashboard)}
        assert len(_consumer_nodes(cluster)) == 1 and _gauge(driver, "streaminfer_consumers_running") == 1

        async def burst() -> tuple[int, int, set[str], dict]:
            """Keep at least BACKLOG requests waiting until the group has grown over both nodes
            (a fixed burst races one consumer's speed, which varies with the machine's load)."""
            peak, seen, looked = 1, set(), 0.0

            async def grown() -> bool:
                nonlocal peak, seen, looked
                if time.monotonic() - looked >= 0.5:
                    where = await asyncio.to_thread(_consumer_nodes, cluster)
                    peak, seen, looked = max(peak, len(where)), seen | set(where), time.monotonic()
                return peak >= 3 and seen == nodes

            async with Collector(kafka.bootstrap, topics) as collector:
                sent, placed = await keep_backlog_until(grown, collector, kafka, topics, requests, BACKLOG // 2, BACKLOG,
                                                        200_000, 120)
                await collector.until(lambda c: len(c.unique_ids()) >= sent, 180)
                collected = await collector.caught_up(kafka, placed)
            deadline = time.monotonic() + 60
            while len(await asyncio.to_thread(_consumer_nodes, cluster)) > 1:
                assert time.monotonic() < deadline, "the group did not drain back to one actor within 60 s"
                await asyncio.sleep(0.5)
            return sent, peak, seen, collected.ids(collected.predictions)

        sent, peak, seen, ids = asyncio.run(burst())
        samples = driver_samples(driver)

    assert set(ids) == {f"s-{n}" for n in range(sent)}
    print(f"{sent} requests; peak {peak} consumer actors on {len(seen)} nodes; duplicates: {sum(n - 1 for n in ids.values())}")
    assert max(ids.values()) == 1, "scaling up and draining back answer nothing twice"
    assert peak >= 3 and seen == nodes, "the burst added consumers, spread over both nodes"
    decisions = {(dict(labels)["direction"], dict(labels)["reason"]): value for (name, labels), value in samples.items()
                 if name == "streaminfer_scaling_decisions_total"}
    assert decisions.get(("up", "lag"), 0) + decisions.get(("up", "growth"), 0) >= 1, decisions
    assert decisions.get(("down", "idle"), 0) >= 1, decisions
    assert samples[("streaminfer_consumers_running", ())] == 1
    assert samples[("streaminfer_scaling_limit_consumers", (("limit", "cpus"),))] >= 4
