"""The pipeline on a two-node Ray cluster started on this machine (``ray start --head`` and a
second ``ray start --address``), driven as a user would: ``streaminfer run --ray-address``.

Consumer actors spread over both nodes, as the Ray state API shows, and every request is answered.
With the model repository hidden from the second node (its raylet runs in a mount namespace of
its own, with an empty tmpfs over the repository's path) its consumers serve from a mirror fed by
the control topic and the object store, and a promotion made on the driver's machine under live
traffic reaches them within a second, with no request lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from ray.util.state import list_actors, list_nodes

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import decode_prediction
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from streaminfer.workers.models.registry import ALIASES_FILE, ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from tests.support.harness import Collector, committed_through
from tests.support.models import LOOKUP_MODEL, write_lookup_model
from tests.support.ray_cluster import Cluster, two_node_cluster

CLI = [sys.executable, "-m", "streaminfer.cli"]
PARTITIONS = 4


def repository(root: Path) -> ModelRepository:
    repo = ModelRepository(root)
    for version in ("1.0.0", "1.1.0"):
        write_lookup_model(repo, version)
    ModelRegistry(repo).promote(LOOKUP_MODEL, "1.0.0", who="test")
    return repo


def settings_file(path: Path, repo: ModelRepository, kafka: KafkaSettings, topics: TopicSettings, cache: Path,
                  consumers: int = 2, gpus_per_actor: float = 0) -> Path:
    path.write_text(
        f'model_repository = "{repo.root}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\ngroup_id = "{kafka.group_id}"\nsession_timeout_ms = 6000\n'
        'heartbeat_interval_ms = 500\nrebalance_timeout_ms = 6000\n'
        f'[topics]\nrequests = "{topics.requests}"\npredictions = "{topics.predictions}"\n'
        f'deadletter = "{topics.deadletter}"\nshadow = "{topics.shadow}"\ncontrol = "{topics.control}"\n'
        f'partitions = {PARTITIONS}\n'
        f'[pipeline]\ndefault_model = "{LOOKUP_MODEL}"\nconsumers = {consumers}\n'
        f'[pool]\nnamespace = "cluster-{uuid.uuid4().hex[:6]}"\nsize = 2\nactor_num_gpus = {gpus_per_actor}\n'
        '[runtime]\ndevice = "cpu"\n'
        f'[ray]\ncache_dir = "{cache}"\n'
        '[metrics]\nport = 0\n[monitor]\nenabled = false\n[experiments]\nenabled = false\n'
    )
    return path


@contextmanager
def running(cluster: Cluster, settings: Path, work: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``streaminfer run --ray-address`` until it says it consumes; Ctrl-C afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMINFER_")}
    log = work / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen([*CLI, "--settings", str(settings), "run", "--ray-address", cluster.address],
                               cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C to stop" not in log.read_text():
            assert run.poll() is None and time.monotonic() < deadline, f"run did not start:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        yield run
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=90)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
    assert run.returncode in (0, 130) and "Traceback" not in log.read_text(), log.read_text()[-4000:]


def placement(cluster: Cluster) -> tuple[str, dict[str, set[str]]]:
    """The head's node id, and the nodes each live actor class runs on (Ray's state API)."""
    head = next(node.node_id for node in list_nodes(address=cluster.dashboard) if node.is_head_node)
    where: dict[str, set[str]] = {}
    for actor in list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")]):
        where.setdefault(actor.class_name, set()).add(actor.node_id)
    return head, where


def request(rid: str, index: int) -> bytes:
    return json.dumps({"id": rid, "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [index, 0]}]}).encode()


class Traffic:
    """Requests at a steady rate from a background task; remembers when each was sent."""

    def __init__(self, bootstrap: str, topic: str, per_tick: int = 5, tick_s: float = 0.05) -> None:
        self._bootstrap, self._topic, self._per_tick, self._tick_s = bootstrap, topic, per_tick, tick_s
        self.sent_at: dict[str, float] = {}
        self._stop = asyncio.Event()

    async def run(self) -> dict:
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5)
        await producer.start()
        ends: dict = {}
        try:
            while not self._stop.is_set():
                futures = []
                for _ in range(self._per_tick):
                    rid = f"r-{len(self.sent_at)}"
                    self.sent_at[rid] = time.time()
                    futures.append(await producer.send(self._topic, request(rid, len(self.sent_at) % 10), key=rid.encode()))
                for meta in await asyncio.gather(*futures):
                    ends[meta.topic_partition] = max(ends.get(meta.topic_partition, 0), meta.offset + 1)
                await asyncio.sleep(self._tick_s)
        finally:
            await producer.stop()
        return ends

    def stop(self) -> None:
        self._stop.set()


def fresh(bootstrap: str) -> tuple[KafkaSettings, TopicSettings]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(requests=f"requests-{suffix}", predictions=f"predictions-{suffix}",
                           deadletter=f"deadletter-{suffix}", shadow=f"shadow-{suffix}", control=f"control-{suffix}",
                           partitions=PARTITIONS)
    return KafkaSettings(bootstrap=bootstrap, group_id=f"cluster-{suffix}"), topics


async def answers(kafka: KafkaSettings, topics: TopicSettings, ends: dict) -> dict[str, set[str]]:
    """Per request id, the model versions that answered it (after the group committed ``ends``)."""
    async with Collector(kafka.bootstrap, topics) as collector:
        await committed_through(kafka, ends, timeout_s=120)
        collected = await collector.read_to_end(kafka)
    assert not collected.dead_letters, [r.headers for r in collected.dead_letters][:3]
    versions: dict[str, set[str]] = {}
    for record in collected.predictions:
        rid = dict(record.headers)[h.REQUEST_ID].decode()
        versions.setdefault(rid, set()).add(decode_prediction(record.value).model_version)
    return versions


@pytest.mark.parametrize(("consumers", "spread"), [(2, "ConsumerActor"), (0, "InferenceActor")],
                         ids=["consumer-actors", "driver-and-worker-pool"])
def test_actors_spread_over_both_nodes_and_every_request_is_answered(consumers, spread, tansu, tmp_path):
    """The second node cannot read the repository either: its actors get the model from the
    object store (a mirror for consumers, the model's bytes for a worker pool)."""
    repo = repository(tmp_path / "models")
    kafka, topics = fresh(tansu.bootstrap)
    settings = settings_file(tmp_path / "streaminfer.toml", repo, kafka, topics, tmp_path / "cache", consumers)
    with two_node_cluster(tmp_path, hidden_on_second=[repo.root]) as cluster, running(cluster, settings, tmp_path):
        head, where = placement(cluster)
        nodes = {node.node_id for node in list_nodes(address=cluster.dashboard)}
        assert where[spread] == nodes and len(nodes) == 2
        if consumers:
            assert where["RegistryActor"] == {head}  # side services stay with the driver's files

        async def traffic() -> dict[str, set[str]]:
            load = Traffic(kafka.bootstrap, topics.requests, per_tick=20)
            task = asyncio.create_task(load.run())
            await asyncio.sleep(2)
            load.stop()
            versions = await answers(kafka, topics, await task)
            assert set(versions) == set(load.sent_at)
            return versions

        versions = asyncio.run(traffic())
    assert {v for found in versions.values() for v in found} == {"1.0.0"}


def test_actors_that_reserve_a_gpu_run_only_on_the_node_that_has_one(tansu, tmp_path):
    """The second node declares a GPU (Ray schedules by the declaration; the sessions run on the
    CPU here): both consumer actors go there, none to the head, and every request is answered."""
    repo = repository(tmp_path / "models")
    kafka, topics = fresh(tansu.bootstrap)
    settings = settings_file(tmp_path / "streaminfer.toml", repo, kafka, topics, tmp_path / "cache", gpus_per_actor=0.5)
    with (
        two_node_cluster(tmp_path, head_cpus=2, second_gpus=1, hidden_on_second=[repo.root]) as cluster,
        running(cluster, settings, tmp_path),
    ):
        head, where = placement(cluster)
        (with_gpu,) = {node.node_id for node in list_nodes(address=cluster.dashboard)} - {head}
        assert where["ConsumerActor"] == {with_gpu}

        async def traffic() -> None:
            load = Traffic(kafka.bootstrap, topics.requests, per_tick=20)
            task = asyncio.create_task(load.run())
            await asyncio.sleep(1)
            load.stop()
            assert set(await answers(kafka, topics, await task)) == set(load.sent_at)

        asyncio.run(traffic())


@pytest.mark.kafka_semantics
def test_a_promotion_under_live_traffic_reaches_a_node_without_the_repository_within_a_second(bootstrap, tmp_path):
    repo = repository(tmp_path / "models")
    kafka, topics = fresh(bootstrap)
    settings = settings_file(tmp_path / "streaminfer.toml", repo, kafka, topics, tmp_path / "cache")
    with two_node_cluster(tmp_path, hidden_on_second=[repo.root]) as cluster, running(cluster, settings, tmp_path):
        _, where = placement(cluster)
        assert len(where["ConsumerActor"]) == 2  # one consumer serves from a mirror: it cannot read repo.root

        async def promote_under_traffic() -> tuple[Traffic, dict[str, set[str]], float]:
            load = Traffic(kafka.bootstrap, topics.requests)
            task = asyncio.create_task(load.run())
            await asyncio.sleep(2)
            promoted = await asyncio.create_subprocess_exec(
                *CLI, "models", "promote", LOOKUP_MODEL, "1.1.0", "--model-repo", str(repo.root), "--why", "cluster test")
            assert await promoted.wait() == 0
            promoted_at = (repo.root / LOOKUP_MODEL / ALIASES_FILE).stat().st_mtime
            await asyncio.sleep(4)
            load.stop()
            return load, await answers(kafka, topics, await task), promoted_at

        load, versions, promoted_at = asyncio.run(promote_under_traffic())
    assert set(versions) == set(load.sent_at)  # nothing lost
    late = {rid: found for rid, found in versions.items() if load.sent_at[rid] >= promoted_at + 1.0}
    assert late and all(found == {"1.1.0"} for found in late.values()), {r: v for r, v in late.items() if v != {"1.1.0"}}
    assert any(found == {"1.0.0"} for found in versions.values())
    switched = max((load.sent_at[rid] for rid, found in versions.items() if "1.0.0" in found), default=promoted_at)
    print(f"last request answered by 1.0.0 was sent {switched - promoted_at:+.3f} s after the promotion")
