"""Settings of the feature app, its sink and the Feast repository it writes to."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

TABLES = ("pending", "entity-windows")
"""The app's Faust tables (``streams.features.faust_app``), each backed by a changelog topic."""


class FeatureTopics(BaseModel):
    """The app's own topics, each keyed by what the stage that reads it groups on."""

    joinable: str = "features.joinable"
    scored: str = "features.scored"
    rows: str = "features.rows"
    log: str = "features.log"
    deadletter: str = "features.deadletter"

    def all(self) -> list[str]:
        return [self.joinable, self.scored, self.rows, self.log, self.deadletter]


class FeatureSettings(BaseModel):
    repo_path: Path = Path(".streaminfer/features")
    """The Feast feature repository (``feature_store.yaml``, registry, offline files)."""

    project: str = "streaminfer"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    """SQLite: a file in the repository, nothing to run. Redis: for several readers and writers."""

    redis_url: str = "127.0.0.1:6379"
    """``host:port`` of the Redis online store (Feast's connection-string form)."""

    redis_username: str | None = None
    """Redis ACL user (Redis 6+); unset, ``default``."""

    redis_password: SecretStr | None = None
    """Redis ``AUTH`` password (``STREAMINFER_FEATURES__REDIS_PASSWORD``); kept out of
    ``feature_store.yaml`` (see ``streams.features.store``)."""

    redis_tls: bool = False
    """Connect to Redis over TLS; the server's certificate and host name are verified."""

    redis_ca_file: Path | None = None
    """PEM file of the CAs that signed Redis's certificate; unset, the system's CAs."""

    redis_cert_file: Path | None = None
    """PEM client certificate, for a Redis that requires one (``tls-auth-clients yes``); with
    ``redis_key_file``."""

    redis_key_file: Path | None = None
    redis_key_password: SecretStr | None = None
    """Only if ``redis_key_file`` is encrypted."""

    entity_parameter: str = "entity_id"
    """Request ``parameters`` field that names the entity a request is about."""

    step_s: int = Field(60, ge=1)
    """Tumbling window of the per-entity features, and the hop of the hopping window."""

    size_s: int = Field(300, ge=1)
    """Hopping window length (a multiple of ``step_s``)."""

    allowed_lateness_s: int = Field(600, ge=0)
    """How far (event time) behind an entity's newest request one may arrive and still count;
    the state kept per entity grows with it."""

    stall_after_s: float = Field(15.0, ge=0)
    """A source partition behind whose committed offset does not move for this long, outside a
    rebalance, counts as stuck, and the worker process restarts itself
    (``streams.features.stall``); 0: never."""

    app_id: str = "streaminfer-features"
    """Faust app id: its consumer group and the prefix of its changelog topics."""

    sink_group_id: str = "streaminfer-feature-sink"
    sink_batch_rows: int = Field(2000, ge=1)
    """Most rows in one write to the feature store."""

    sink_batch_wait_ms: int = Field(200, ge=0)
    """Longest a row waits for others to fill its write."""

    sink_retries: int = Field(4, ge=0)
    """Retries of a failed write (exponential backoff with jitter) before its rows become dead
    letters on ``topics.deadletter``."""

    sink_retry_backoff_s: float = Field(0.2, gt=0)

    topics: FeatureTopics = FeatureTopics()

    def changelog_topics(self) -> list[str]:
        """The tables' changelogs, named as Faust names them: ``<app_id>-<table>-changelog``."""
        return [f"{self.app_id}-{table}-changelog" for table in TABLES]

    @model_validator(mode="after")
    def _hop_divides_window(self) -> FeatureSettings:
        if self.size_s % self.step_s:
            raise ValueError(f"features size_s={self.size_s} must be a multiple of step_s={self.step_s}")
        return self

    @field_validator("redis_ca_file", "redis_cert_file", "redis_key_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Absolute when the settings load: Ray actors and the worker run from elsewhere."""
        return path.resolve() if path is not None else None

    @model_validator(mode="after")
    def _redis_connection_consistent(self) -> FeatureSettings:
        """Redis settings that cannot work are refused when they load, naming what to set (never
        the password: Feast's connection string cannot carry a comma)."""
        problems = []
        tls_files = [name for name in ("redis_ca_file", "redis_cert_file", "redis_key_file") if getattr(self, name)]
        if tls_files and not self.redis_tls:
            problems.append(f"features.{', features.'.join(tls_files)} set, but features.redis_tls is false")
        if bool(self.redis_cert_file) != bool(self.redis_key_file):
            problems.append("Redis client certificates need both features.redis_cert_file and features.redis_key_file")
        if self.redis_key_password is not None and self.redis_key_file is None:
            problems.append("features.redis_key_password is set without features.redis_key_file")
        for name in ("redis_password", "redis_key_password"):
            secret = getattr(self, name)
            if secret is not None and "," in secret.get_secret_value():
                problems.append(f"features.{name} contains a comma, which Feast's Redis connection string "
                                "cannot carry: choose one without")
        if problems:
            raise ValueError("; ".join(problems))
        return self
