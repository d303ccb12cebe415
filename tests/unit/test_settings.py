"""Settings come from the environment only through the composition root, with nested keys."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel, ValidationError

import streaminfer
from streaminfer.settings import AppSettings
from streaminfer.streams.settings import PipelineSettings


def test_nested_environment_variables_reach_each_subsystem(monkeypatch):
    monkeypatch.setenv("STREAMINFER_KAFKA__BOOTSTRAP", "broker:19092")
    monkeypatch.setenv("STREAMINFER_POOL__SIZE", "4")
    monkeypatch.setenv("STREAMINFER_TOPICS__REQUESTS", "my.requests")
    settings = AppSettings()
    assert settings.kafka.bootstrap == "broker:19092"
    assert settings.pool.size == 4
    assert settings.topics.requests == "my.requests"
    assert settings.topics.predictions == "inference.predictions"


def test_invalid_values_are_rejected_with_the_field_name(monkeypatch):
    monkeypatch.setenv("STREAMINFER_POOL__SIZE", "0")
    with pytest.raises(ValidationError, match=r"pool\.size"):
        AppSettings()


def test_served_models_start_with_the_default_and_have_no_repeats():
    settings = AppSettings(models=["a", "breast-cancer", "a"])
    assert settings.served_model_names() == ["breast-cancer", "a"]


def _reachable(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """``model``, the models of its fields, and the settings models it inherits its fields from."""
    seen.add(model)
    seen.update(base for base in model.__mro__ if issubclass(base, BaseModel) and base.__name__.endswith("Settings"))
    for field in model.model_fields.values():
        for candidate in (field.annotation, *get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in seen:
                _reachable(candidate, seen)
    return seen


def _settings_models() -> set[type[BaseModel]]:
    """Every settings model of the project: classes named ``*Settings`` or ``*Topics``."""
    package_root = Path(streaminfer.__file__).parent
    found = set()
    for info in pkgutil.walk_packages([str(package_root)], prefix="streaminfer."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if (issubclass(value, BaseModel) and value.__module__ == module.__name__
                    and value.__name__.endswith(("Settings", "Topics"))):
                found.add(value)
    return found


def test_every_settings_model_is_reachable_from_app_settings():
    """A settings model the composition root cannot reach is one production only ever runs at
    its defaults (as webhook delivery once did)."""
    unreachable = {m.__qualname__ for m in _settings_models() - _reachable(AppSettings, set())}
    assert unreachable == set()


def test_webhook_delivery_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMINFER_ALERTING__DELIVERY__COMMIT_INTERVAL_MS", "50")
    assert AppSettings().alerting.delivery.commit_interval_ms == 50


def test_the_collector_threshold_follows_what_a_consumer_may_hold_in_flight(monkeypatch):
    """At the size of the in-flight set the collector walked it every few thousand answers and
    freed nothing; the derived threshold is four times that set, and an explicit value wins."""
    assert PipelineSettings().gc_threshold == 48 * 4 * 1024
    assert PipelineSettings(max_inflight_batches=1, fetch_max_records=100).gc_threshold == 50_000
    assert PipelineSettings(max_inflight_batches=8, fetch_max_records=2048).gc_threshold == 48 * 8 * 2048
    monkeypatch.setenv("STREAMINFER_PIPELINE__GC_GEN0_THRESHOLD", "0")
    assert AppSettings().pipeline.gc_threshold == 0  # Python's own defaults
