"""All settings, read from the environment in one place.

Each subsystem owns a plain pydantic model (``streams.settings``, ``workers.settings``); this is
the only class that reads the environment, with the prefix ``STREAMINFER_`` and ``__`` between
levels, e.g. ``STREAMINFER_KAFKA__BOOTSTRAP=broker:9092`` or ``STREAMINFER_POOL__SIZE=4``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streaminfer.errors import SettingsFileMissing
from streaminfer.monitoring.observability.endpoint import MetricsAccess
from streaminfer.monitoring.settings import AlertingSettings, ExperimentSettings, MonitorSettings
from streaminfer.scaling.settings import ScalingSettings
from streaminfer.streams.features.settings import FeatureSettings
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.privacy import PrivacySettings
from streaminfer.workers.settings import PoolSettings, RaySettings, RuntimeSettings

SETTINGS_FILE_VARIABLE = "STREAMINFER_SETTINGS_FILE"
"""Names a TOML file of settings, laid out like the model (``[kafka]`` with ``sasl_password``...)."""


class MetricsSettings(MetricsAccess):
    """Every process's ``/metrics``: host (loopback by default), basic auth and TLS come from
    ``MetricsAccess`` (``STREAMINFER_METRICS__PASSWORD``, ``...__TLS_CERT_FILE``)."""

    port: int | None = Field(9400, ge=0, le=65535)
    """Port of the Prometheus endpoint; None turns it off, 0 picks a free one."""

    targets_file: Path | None = Path(".streaminfer/prometheus/targets.json")
    """Where the driver lists every process's metrics endpoint for Prometheus's file-based
    service discovery (None: do not write it)."""


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMINFER_", env_nested_delimiter="__", extra="forbid",
        hide_input_in_errors=True,  # a refused value may be a password
    )

    model_repository: Path = Path("models")
    """Root of the versioned model repository (``<root>/<name>/<version>/model.onnx``)."""

    models: list[str] = []
    """Models to serve besides ``pipeline.default_model``."""

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    pipeline: PipelineSettings = PipelineSettings()
    pool: PoolSettings = PoolSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    ray: RaySettings = RaySettings()
    metrics: MetricsSettings = MetricsSettings()
    monitor: MonitorSettings = MonitorSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    alerting: AlertingSettings = AlertingSettings()
    features: FeatureSettings = FeatureSettings()
    privacy: PrivacySettings = PrivacySettings()
    scaling: ScalingSettings = ScalingSettings()
    """Autoscaling of the consumer actors on the group's lag (off by default)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the TOML file named by ``STREAMINFER_SETTINGS_FILE``
        (``--settings FILE`` on the command line): secrets can live in a file readable by the
        service's user alone instead of on a command line or in a shell's history."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path := os.environ.get(SETTINGS_FILE_VARIABLE):
            if not Path(path).is_file():
                raise SettingsFileMissing(Path(path))
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    @model_validator(mode="after")
    def _exactly_once_readers_read_committed(self) -> AppSettings:
        """With ``pipeline.guarantee = "exactly_once"``, every consumer built from ``kafka`` (the
        pipeline, monitor, alerting, experiments, feature worker, ``tail``) reads ``read_committed``,
        so none sees outputs of an aborted or open transaction."""
        _read_committed_if_exactly_once(self)
        return self

    @model_validator(mode="after")
    def _autoscaling_needs_consumer_actors(self) -> AppSettings:
        if self.scaling.enabled and self.pipeline.consumers == 0:
            raise ValueError("scaling.enabled scales consumer actors: pipeline.consumers must be at least 1")
        return self

    def reading_committed(self) -> AppSettings:
        """These settings as the validator leaves them; for copies made with ``model_copy``, which
        does not validate again (the composition root calls it before anything starts)."""
        copy = self.model_copy()
        _read_committed_if_exactly_once(copy)
        return copy

    def served_model_names(self) -> list[str]:
        names = [self.pipeline.default_model, *self.models]
        return list(dict.fromkeys(names))


def _read_committed_if_exactly_once(settings: AppSettings) -> None:
    if settings.pipeline.guarantee == "exactly_once" and settings.kafka.isolation_level != "read_committed":
        settings.kafka = settings.kafka.model_copy(update={"isolation_level": "read_committed"})
