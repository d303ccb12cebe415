"""Commands of the feature store: create the Feast repository, run the feature worker, read an
entity's online features, and materialise offline features into the online store."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from streaminfer.cli.common import BootstrapOpt, console, friendly_errors, load_settings
from streaminfer.settings import AppSettings

if TYPE_CHECKING:
    from streaminfer.workers.models.maskings import ModelMaskings

features_app = typer.Typer(no_args_is_help=True, help="Streaming features in a Feast feature repository.")

RepoPathOpt = typer.Option(None, "--repo", help="Feast repository (default: .streaminfer/features).")
OnlineOpt = typer.Option(None, "--online-store", help="sqlite (default) or redis.")
RedisOpt = typer.Option(None, "--redis", help="Redis HOST:PORT for --online-store redis.")


def _settings(bootstrap: str | None, repo: Path | None, online: str | None, redis: str | None) -> AppSettings:
    return load_settings(bootstrap, features={"repo_path": repo, "online_store": online, "redis_url": redis})


@features_app.command("init")
@friendly_errors
def init(repo: Path | None = RepoPathOpt, online_store: str | None = OnlineOpt,
         redis: str | None = RedisOpt) -> None:
    """Create the Feast repository (feature_store.yaml, registry, offline files) and register the
    feature views. Safe to run again: existing data is kept."""
    from streaminfer.streams.features.store import init_repository, stats_features

    settings = _settings(None, repo, online_store, redis).features
    root = init_repository(settings)
    console.print(f"feast repository  {root.resolve()}  (online store: {settings.online_store})")
    console.print(f"features          {', '.join(stats_features(settings))}")


@features_app.command("worker")
@friendly_errors
def worker(bootstrap: str | None = BootstrapOpt, repo: Path | None = RepoPathOpt,
           online_store: str | None = OnlineOpt, redis: str | None = RedisOpt,
           metrics_port: int | None = typer.Option(None, help="Prometheus endpoint port (0: any free port)."),
           log_level: str = typer.Option("warning", help="Faust's log level (info shows rebalances and recovery).")) -> None:
    """Run the feature app (Faust) and the Feast sink until interrupted."""
    import asyncio

    from streaminfer.streams.clients import check_reachable
    from streaminfer.streams.features.store import init_repository
    from streaminfer.streams.features.worker import run_worker

    settings = _settings(bootstrap, repo, online_store, redis)
    asyncio.run(check_reachable(settings.kafka))
    init_repository(settings.features)
    port = settings.metrics.port if metrics_port is None else metrics_port
    host = settings.metrics if port is not None else None

    def ready(url: str | None) -> None:
        console.print(f"feature worker    reading {settings.topics.requests}, {settings.topics.predictions}; "
                      f"writing {settings.features.repo_path.resolve()}; metrics {url or 'off'}", highlight=False)

    run_worker(settings.kafka, settings.topics, settings.features, host, port or 0, on_ready=ready,
               log_level=log_level.upper(), maskings=_maskings(settings))


@features_app.command("get")
@friendly_errors
def get(entity: list[str] = typer.Argument(..., help="Entity ids."), repo: Path | None = RepoPathOpt,
        online_store: str | None = OnlineOpt, redis: str | None = RedisOpt) -> None:
    """Print an entity's online features as JSON (null where the store has none)."""
    import json

    from streaminfer.streams.features.online import OnlineFeatures
    from streaminfer.streams.features.store import stats_features

    settings = _settings(None, repo, online_store, redis).features
    values = OnlineFeatures(settings).read(entity, stats_features(settings))
    console.print_json(json.dumps(values))


@features_app.command("materialize")
@friendly_errors
def materialize(repo: Path | None = RepoPathOpt, online_store: str | None = OnlineOpt,
                redis: str | None = RedisOpt,
                since_days: float = typer.Option(7.0, help="Load offline rows newer than this many days.")) -> None:
    """Load the newest offline feature values into the online store: after switching online
    stores, or to rebuild one that was lost."""
    from datetime import timedelta

    from streaminfer.streams.features.store import open_store

    settings = _settings(None, repo, online_store, redis).features
    end = datetime.now(timezone.utc)
    open_store(settings).materialize(start_date=end - timedelta(days=since_days), end_date=end)
    console.print(f"materialized      offline → {settings.online_store} online store, up to {end.isoformat()}")


def _maskings(settings: AppSettings) -> ModelMaskings:
    """The served models' privacy policies; one that hashes without ``privacy.hash_key`` stops the
    worker here, in one line, before anything is stored unmasked."""
    from streaminfer.workers.models.maskings import ModelMaskings as Maskings
    from streaminfer.workers.models.repository import ModelRepository

    maskings = Maskings(ModelRepository(settings.model_repository, settings.privacy.hash_key),
                             settings.pipeline.default_model)
    for name in settings.served_model_names():
        maskings.of(name)
    return maskings
