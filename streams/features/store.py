"""The Feast feature repository: its definitions, creating it, and opening it.

Two feature views, both fed through push sources so the stream writes them as it goes:

* ``entity_stats``: per-entity window aggregates, online (for enrichment) and offline (for
  point-in-time training joins);
* ``prediction_log``: the exact inputs of every prediction with its score, offline only: what a
  training set is built from, with ``entity_stats`` joined as of each prediction's time.

The definitions live here rather than in a ``feast apply``-scanned Python file, so the sink, the
pipeline and the CLI always agree on them; ``init`` also writes ``feature_store.yaml`` so Feast's
own CLI works on the repository.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from streaminfer.streams.errors import FeatureRepoMissing
from streaminfer.streams.features.aggregates import WindowSpec
from streaminfer.streams.features.connection import redis_connection_string
from streaminfer.streams.features.settings import FeatureSettings

STATS_VIEW = "entity_stats"
LOG_VIEW = "prediction_log"
STATS_PUSH = "entity_stats_push"
LOG_PUSH = "prediction_log_push"
ENTITY_KEY = "entity_id"
REQUEST_KEY = "request_id"
TIMESTAMP = "event_timestamp"
CREATED = "created"
"""When a row was computed: of two rows for the same entity and time, the later corrects the other."""
CONFIG_FILE = "feature_store.yaml"


def offline_path(settings: FeatureSettings, view: str) -> Path:
    """The file behind a view's push source: what the offline store (and training) reads."""
    return settings.repo_path.resolve() / "data" / f"{view}.parquet"


def window_spec(settings: FeatureSettings) -> WindowSpec:
    return WindowSpec(step_s=settings.step_s, size_s=settings.size_s, lateness_s=settings.allowed_lateness_s)


def stats_features(settings: FeatureSettings) -> list[str]:
    """Feature references (``view:feature``) of the per-entity aggregates."""
    return [f"{STATS_VIEW}:{name}" for name in window_spec(settings).feature_names()]


def repo_config(settings: FeatureSettings, *, with_secrets: bool = False) -> dict[str, Any]:
    """``feature_store.yaml`` as a dict; paths are relative to the repository, as Feast expects.
    Redis passwords appear only ``with_secrets`` (in memory); the file refers to the environment
    instead (``streams.features.connection``)."""
    online: dict[str, Any] = (
        {"type": "sqlite", "path": "data/online_store.db"}
        if settings.online_store == "sqlite"
        else {"type": "redis", "connection_string": redis_connection_string(settings, with_secrets=with_secrets)}
    )
    return {
        "project": settings.project,
        "registry": "data/registry.db",
        "provider": "local",
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def stats_schema(settings: FeatureSettings) -> pa.Schema:
    names = window_spec(settings).feature_names()
    columns = [(ENTITY_KEY, pa.string()), (TIMESTAMP, pa.timestamp("us", tz="UTC")),
               (CREATED, pa.timestamp("us", tz="UTC"))]
    columns += [(name, pa.int64() if name.startswith("requests_") else pa.float64()) for name in names]
    return pa.schema(columns)


LOG_SCHEMA = pa.schema([
    (REQUEST_KEY, pa.string()), (TIMESTAMP, pa.timestamp("us", tz="UTC")), (ENTITY_KEY, pa.string()),
    ("model", pa.string()), ("version", pa.string()), ("inputs", pa.string()), ("score", pa.float64()),
])


def definitions(settings: FeatureSettings) -> list[Any]:
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Float64, Int64, String

    entity = Entity(name="entity", join_keys=[ENTITY_KEY], value_type=ValueType.STRING,
                    description="What a request is about (a customer, a device, ...)")
    request = Entity(name="request", join_keys=[REQUEST_KEY], value_type=ValueType.STRING)
    stats_push = PushSource(name=STATS_PUSH, batch_source=FileSource(
        name=f"{STATS_VIEW}_files", path=str(offline_path(settings, STATS_VIEW)), timestamp_field=TIMESTAMP,
        created_timestamp_column=CREATED))
    log_push = PushSource(name=LOG_PUSH, batch_source=FileSource(
        name=f"{LOG_VIEW}_files", path=str(offline_path(settings, LOG_VIEW)), timestamp_field=TIMESTAMP))
    stats_fields = [
        Field(name=name, dtype=Int64 if name.startswith("requests_") else Float64)
        for name in window_spec(settings).feature_names()
    ]
    stats = FeatureView(name=STATS_VIEW, entities=[entity], ttl=timedelta(days=7), schema=stats_fields,
                        source=stats_push, online=True)
    log = FeatureView(
        name=LOG_VIEW, entities=[request], ttl=timedelta(days=365), online=False, source=log_push,
        schema=[Field(name=ENTITY_KEY, dtype=String), Field(name="model", dtype=String),
                Field(name="version", dtype=String), Field(name="inputs", dtype=String),
                Field(name="score", dtype=Float64)],
    )
    return [entity, request, stats_push, log_push, stats, log]


def init_repository(settings: FeatureSettings) -> Path:
    """Create (or bring up to date) the repository and register the definitions. Idempotent:
    existing offline files are kept."""
    root = settings.repo_path
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).write_text(yaml.safe_dump(repo_config(settings), sort_keys=False))
    for view, schema in ((STATS_VIEW, stats_schema(settings)), (LOG_VIEW, LOG_SCHEMA)):
        path = offline_path(settings, view)
        if not path.exists():
            pq.write_table(schema.empty_table(), path)  # typed, so appends cast cleanly
    store = open_store(settings)
    store.apply(definitions(settings))
    return root


def open_store(settings: FeatureSettings) -> Any:
    """A ``feast.FeatureStore`` on the repository; it must have been initialised."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    root = settings.repo_path
    if not (root / CONFIG_FILE).is_file():
        raise FeatureRepoMissing(root)
    config = RepoConfig(repo_path=root.resolve(), **_absolute(repo_config(settings, with_secrets=True), root.resolve()))
    return FeatureStore(config=config)


def _absolute(config: dict[str, Any], root: Path) -> dict[str, Any]:
    config = dict(config)
    config["registry"] = str(root / config["registry"])
    if config["online_store"]["type"] == "sqlite":
        config["online_store"] = {**config["online_store"], "path": str(root / config["online_store"]["path"])}
    return config
