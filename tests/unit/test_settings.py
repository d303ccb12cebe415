"""Settings come from the environment only through the composition root, with nested keys."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streaminfer.settings import AppSettings


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
    with pytest.raises(ValidationError, match="pool.size"):
        AppSettings()


def test_served_models_start_with_the_default_and_have_no_repeats():
    settings = AppSettings(models=["a", "breast-cancer", "a"])
    assert settings.served_model_names() == ["breast-cancer", "a"]
