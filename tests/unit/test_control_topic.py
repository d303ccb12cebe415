"""The control topic without a broker: the driver's bridge publishes the registry, a follower
writes it into a node-local mirror, and the routing code serves from the mirror as from the
repository. Kafka is the in-memory fake; model files come from a source that counts its reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import MirrorMetrics, RegistryBridgeMetrics
from streaminfer.streams.control.bridge import RegistryBridge
from streaminfer.streams.control.documents import SEGMENT_BYTES, RepositoryScan, segments
from streaminfer.streams.control.mirror import ControlFollower, Mirror
from streaminfer.streams.errors import ControlTopicBehind
from streaminfer.streams.topics import TopicSpec
from streaminfer.workers.errors import ArtifactInvalid
from streaminfer.workers.models.distribution import ArtifactCache, StoreSource, VersionManifest, digest_of
from streaminfer.workers.models.registry import ModelRegistry
from streaminfer.workers.models.repository import MODEL_FILE, ModelRepository
from streaminfer.workers.routing.served import ServedModels
from streaminfer.workers.routing.traffic import Arm, TrafficPolicy, load_policy, save_policy
from tests.support.fake_kafka import FakeBroker, FakeClients
from tests.support.models import LOOKUP_MODEL, write_lookup_model

CONTROL = TopicSpec("control", 1, 1, compacted=True)


class RepositorySource:
    """Files as the driver's node has them, and how often each was asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reads: list[str] = []

    async def fetch(self, name: str, version: str, file: str) -> bytes:
        self.reads.append(f"{name}/{version}/{file}")
        return (self.root / name / version / file).read_bytes()


class StubPool:
    @property
    def names(self) -> list[str]:
        return []

    async def start(self) -> list[dict[str, object]]:
        return []

    async def stop(self) -> None:
        return None


@pytest.fixture
def repository(tmp_path: Path) -> ModelRepository:
    repository = ModelRepository(tmp_path / "driver")
    write_lookup_model(repository, "1.0.0")
    write_lookup_model(repository, "1.1.0")
    ModelRegistry(repository).promote(LOOKUP_MODEL, "1.0.0", who="ana")
    return repository


def follower(clients: FakeClients, root: Path, source: object, cache: Path | None = None) -> ControlFollower:
    mirror = Mirror(root, ArtifactCache(cache or root.parent / "cache", source))  # type: ignore[arg-type]
    return ControlFollower(clients, CONTROL.name, mirror, poll_timeout_ms=5)


async def until(predicate, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_follower_starts_with_the_whole_registry_in_its_mirror(repository, tmp_path):
    clients = FakeClients(FakeBroker())
    source = RepositorySource(repository.root)
    async with (
        RegistryBridge(repository.root, clients, CONTROL, every_s=0.01),
        follower(clients, tmp_path / "mirror", source) as following,
    ):
        mirrored = ModelRepository(following.mirror.root)
        assert mirrored.versions(LOOKUP_MODEL) == ["1.0.0", "1.1.0"]
        assert ModelRegistry(mirrored).production(LOOKUP_MODEL) == "1.0.0"
        assert ModelRegistry(mirrored).history(LOOKUP_MODEL) == ModelRegistry(repository).history(LOOKUP_MODEL)
        for version in ("1.0.0", "1.1.0"):
            assert mirrored.load(LOOKUP_MODEL, version).model_path.read_bytes() == \
                repository.load(LOOKUP_MODEL, version).model_path.read_bytes()
    assert CONTROL.name in clients.created()


async def test_a_promotion_on_the_driver_switches_the_routes_served_from_the_mirror(repository, tmp_path):
    clients = FakeClients(FakeBroker())
    async with (
        RegistryBridge(repository.root, clients, CONTROL, every_s=0.01),
        follower(clients, tmp_path / "mirror", RepositorySource(repository.root)) as following,
    ):
        served = ServedModels(ModelRepository(following.mirror.root), LOOKUP_MODEL, lambda entry: StubPool())  # type: ignore[arg-type,return-value]
        assert (await served.serve(LOOKUP_MODEL)).entry.version == "1.0.0"
        ModelRegistry(repository).promote(LOOKUP_MODEL, "1.1.0", who="ana", why="better")

        async def routed() -> str:
            await served.refresh()
            return served.route(LOOKUP_MODEL, None, b"k").served.entry.version

        deadline = asyncio.get_running_loop().time() + 5
        while await routed() != "1.1.0":
            assert asyncio.get_running_loop().time() < deadline, "the promotion never reached the mirror"
            await asyncio.sleep(0.01)
        assert ModelRegistry(ModelRepository(following.mirror.root)).history(LOOKUP_MODEL)[-1].why == "better"


async def test_a_removed_traffic_policy_is_removed_from_the_mirror(repository, tmp_path):
    clients = FakeClients(FakeBroker())
    model_dir = repository.root / LOOKUP_MODEL
    save_policy(model_dir, TrafficPolicy("ab", arms=(Arm("a", "1.0.0", 50), Arm("b", "1.1.0", 50))))
    async with (
        RegistryBridge(repository.root, clients, CONTROL, every_s=0.01),
        follower(clients, tmp_path / "mirror", RepositorySource(repository.root)) as following,
    ):
        mirrored = following.mirror.root / LOOKUP_MODEL
        assert load_policy(mirrored) == load_policy(model_dir)
        save_policy(model_dir, None)
        await until(lambda: load_policy(mirrored) is None)


async def test_versions_are_published_before_the_documents_that_name_them(repository):
    broker = FakeBroker()
    async with RegistryBridge(repository.root, FakeClients(broker), CONTROL, every_s=60):
        pass
    keys = [r.key.decode() for r in broker.logs[next(tp for tp in broker.logs if tp.topic == CONTROL.name)]]
    assert keys == [f"{LOOKUP_MODEL}/1.0.0/manifest.json", f"{LOOKUP_MODEL}/1.1.0/manifest.json",
                    f"{LOOKUP_MODEL}/aliases.json", f"{LOOKUP_MODEL}/audit.jsonl/000000"]


async def test_the_bridge_sends_nothing_while_nothing_changes(repository):
    broker = FakeBroker()
    async with RegistryBridge(repository.root, FakeClients(broker), CONTROL, every_s=60) as bridge:
        first = bridge.sent
        assert await bridge.publish_changes() == 0
        ModelRegistry(repository).promote(LOOKUP_MODEL, "1.1.0")
        assert await bridge.publish_changes() == 2  # aliases.json and the audit log's last segment
    assert first == 4


async def test_a_restarted_bridge_tombstones_what_went_away_and_resends_nothing_unchanged(repository):
    broker = FakeBroker()
    model_dir = repository.root / LOOKUP_MODEL
    save_policy(model_dir, TrafficPolicy("ab", arms=(Arm("a", "1.0.0", 50), Arm("b", "1.1.0", 50))))
    async with RegistryBridge(repository.root, FakeClients(broker), CONTROL, every_s=60) as first:
        assert first.sent == 5
    save_policy(model_dir, None)  # the experiment stopped while no driver ran
    async with RegistryBridge(repository.root, FakeClients(broker), CONTROL, every_s=60) as second:
        assert second.sent == 1
    (log,) = [records for tp, records in broker.logs.items() if tp.topic == CONTROL.name]
    assert (log[-1].key, log[-1].value) == (f"{LOOKUP_MODEL}/traffic.json".encode(), None)


async def test_the_bridge_and_a_mirror_export_what_was_published_and_how_far_behind_the_mirror_is(repository, tmp_path):
    clients = FakeClients(FakeBroker())
    registry = CollectorRegistry()
    bridge = RegistryBridge(repository.root, clients, CONTROL, every_s=60, metrics=RegistryBridgeMetrics(registry))
    mirror = Mirror(tmp_path / "mirror", ArtifactCache(tmp_path / "cache", RepositorySource(repository.root)))
    following = ControlFollower(clients, CONTROL.name, mirror, poll_timeout_ms=5, metrics=MirrorMetrics(registry))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    async with bridge, following:
        assert value("streaminfer_control_published_total", kind="document") == 4
        assert value("streaminfer_control_documents") == 4
        assert value("streaminfer_control_last_publish_timestamp_seconds") > 0
        assert value("streaminfer_control_mirror_applied_total") == 4
        assert value("streaminfer_control_mirror_lag_records") == 0
        save_policy(repository.root / LOOKUP_MODEL, TrafficPolicy("ab", arms=(Arm("a", "1.0.0", 50), Arm("b", "1.1.0", 50))))
        await bridge.publish_changes()
        save_policy(repository.root / LOOKUP_MODEL, None)
        await bridge.publish_changes()
        await until(lambda: value("streaminfer_control_mirror_applied_total") == 6)
        assert value("streaminfer_control_published_total", kind="tombstone") == 1
        assert value("streaminfer_control_documents") == 4
        assert value("streaminfer_control_mirror_lag_records") == 0
        assert value("streaminfer_control_mirror_refused_versions") == 0


def test_an_audit_line_being_appended_is_published_up_to_its_last_whole_line(repository):
    audit = repository.root / LOOKUP_MODEL / "audit.jsonl"
    whole = audit.read_bytes()
    with audit.open("ab") as log:
        log.write(b'{"at_ms": 1, "who"')
    assert RepositoryScan(repository.root).documents()[f"{LOOKUP_MODEL}/audit.jsonl/000000"] == whole


async def test_a_long_audit_log_travels_in_segments_and_a_promotion_sends_only_the_last(repository, tmp_path):
    """A log of any length stays under the broker's message size, and the mirror's history is
    the driver's line for line."""
    audit = repository.root / LOOKUP_MODEL / "audit.jsonl"
    line = audit.read_bytes()
    audit.write_bytes(line * 3000)  # about 3000 promotions: several segments of 256 KiB
    broker = FakeBroker()
    clients = FakeClients(broker)
    async with (
        RegistryBridge(repository.root, clients, CONTROL, every_s=60) as bridge,
        follower(clients, tmp_path / "mirror", RepositorySource(repository.root)) as following,
    ):
        (log,) = [records for tp, records in broker.logs.items() if tp.topic == CONTROL.name]
        segments = [r for r in log if r.key.decode().startswith(f"{LOOKUP_MODEL}/audit.jsonl/")]
        lines_per_segment = SEGMENT_BYTES // len(line)
        assert len(segments) == -(-3000 // lines_per_segment) > 1
        assert max(len(r.value) for r in segments) <= SEGMENT_BYTES
        ModelRegistry(repository).promote(LOOKUP_MODEL, "1.1.0", who="ana", why="better")
        sent_before = len(log)
        assert await bridge.publish_changes() == 2  # aliases.json and the last segment
        assert sum(len(r.value) for r in log[sent_before:]) < SEGMENT_BYTES
        mirrored = following.mirror.root / LOOKUP_MODEL / "audit.jsonl"
        await until(lambda: mirrored.is_file() and mirrored.read_bytes() == audit.read_bytes())
        history = ModelRegistry(ModelRepository(following.mirror.root)).history(LOOKUP_MODEL)
        assert len(history) == 3001 and history[-1].why == "better"


def test_segments_are_whole_lines_and_an_append_changes_only_the_last():
    data = b"".join(b"%d\n" % n * (n % 7 + 1) for n in range(500))
    parts = segments(data, limit=100)
    assert b"".join(parts) == data and all(p.endswith(b"\n") and len(p) <= 100 for p in parts)
    grown = segments(data + b"more\n", limit=100)
    assert grown[: len(parts) - 1] == parts[:-1]
    assert segments(b"x" * 300 + b"\n", limit=100) == [b"x" * 300 + b"\n"]  # a long line is its own segment


async def test_a_version_whose_file_differs_from_its_manifest_is_left_out_until_published_right(repository, tmp_path):
    model = repository.load(LOOKUP_MODEL, "1.0.0")
    key = f"{LOOKUP_MODEL}/1.0.0/manifest.json"
    metadata = (model.directory / "metadata.json").read_text()
    cache = ArtifactCache(tmp_path / "cache", RepositorySource(repository.root))
    with pytest.raises(ArtifactInvalid, match="the manifest says"):
        await cache.materialize(LOOKUP_MODEL, "1.0.0", VersionManifest(metadata, {MODEL_FILE: digest_of(b"other")}),
                                tmp_path / "elsewhere")
    mirror = Mirror(tmp_path / "mirror", cache)
    await mirror.apply(key, msgspec.json.encode(VersionManifest(metadata, {MODEL_FILE: digest_of(b"another model")})))
    assert ModelRepository(mirror.root).versions(LOOKUP_MODEL) == [] and "the manifest says" in mirror.refused[key]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    right = VersionManifest(metadata, {MODEL_FILE: digest_of(model.model_path.read_bytes())})
    await mirror.apply(key, msgspec.json.encode(right))
    assert ModelRepository(mirror.root).versions(LOOKUP_MODEL) == ["1.0.0"] and not mirror.refused


async def test_a_key_outside_the_mirror_is_ignored(tmp_path):
    mirror = Mirror(tmp_path / "mirror", ArtifactCache(tmp_path / "cache", RepositorySource(tmp_path)))
    for key in ("../escape.json", "m/../../escape.json", "/etc/passwd", "m/.registry.lock", "m/1.0.0/model.onnx"):
        await mirror.apply(key, b"{}")
    assert not (tmp_path / "escape.json").exists() and mirror.applied == 0
    assert not (tmp_path / "mirror").exists()


async def test_mirrors_on_one_node_fetch_each_distinct_file_once(repository, tmp_path):
    clients = FakeClients(FakeBroker())
    source = RepositorySource(repository.root)
    async with RegistryBridge(repository.root, clients, CONTROL, every_s=60):
        async with follower(clients, tmp_path / "a", source, tmp_path / "cache"):
            pass
        async with follower(clients, tmp_path / "b", source, tmp_path / "cache") as second:
            assert ModelRepository(second.mirror.root).versions(LOOKUP_MODEL) == ["1.0.0", "1.1.0"]
    # the two versions' model files have the same bytes: cached by digest, one fetch serves both
    assert source.reads == [f"{LOOKUP_MODEL}/1.0.0/{MODEL_FILE}"]


async def test_a_model_store_uri_serves_the_files_checked_by_sha256(repository, tmp_path):
    clients = FakeClients(FakeBroker())
    store = StoreSource(repository.root.as_uri())
    async with (
        RegistryBridge(repository.root, clients, CONTROL, every_s=60),
        follower(clients, tmp_path / "mirror", store) as following,
    ):
        entry = ModelRepository(following.mirror.root).load(LOOKUP_MODEL, "1.1.0")
        assert digest_of(entry.model_path.read_bytes()) == digest_of(
            repository.load(LOOKUP_MODEL, "1.1.0").model_path.read_bytes())
    with pytest.raises(ArtifactInvalid, match="model store"):
        await StoreSource((tmp_path / "nowhere").as_uri()).fetch(LOOKUP_MODEL, "1.0.0", MODEL_FILE)


async def test_a_follower_that_cannot_catch_up_in_time_does_not_start(repository, tmp_path):
    class Stalled(RepositorySource):
        async def fetch(self, name: str, version: str, file: str) -> bytes:
            await asyncio.sleep(0.2)
            return await super().fetch(name, version, file)

    clients = FakeClients(FakeBroker())
    async with RegistryBridge(repository.root, clients, CONTROL, every_s=60):
        following = follower(clients, tmp_path / "mirror", Stalled(repository.root))
        with pytest.raises(ControlTopicBehind, match="control"):
            await following.start(catch_up_s=0.1)
    assert clients.consumers[-1].stopped == 1
