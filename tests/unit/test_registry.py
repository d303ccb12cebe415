"""Aliases, promotion, rollback and the audit log of the model registry."""

from __future__ import annotations

import pytest

from streaminfer.workers.errors import RegistryError, UnknownModel
from streaminfer.workers.models.registry import PRODUCTION, ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from tests.support.models import write_table_model


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    repository = ModelRepository(tmp_path)
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.2.0-fp16"):
        write_table_model(repository, version, name="m")
    return ModelRegistry(repository)


def test_without_an_alias_production_is_the_newest_release(registry):
    assert registry.production("m") == "1.2.0"


def test_promote_moves_production_and_records_who_when_why_from_and_to(registry):
    entry = registry.promote("m", "1.1.0", who="ana", why="1.2.0 regressed")
    assert registry.production("m") == "1.1.0"
    assert (entry.who, entry.action, entry.alias, entry.from_version, entry.to_version, entry.why) == (
        "ana", "promote", PRODUCTION, "1.2.0", "1.1.0", "1.2.0 regressed")
    assert entry.at_ms > 0
    assert registry.history("m") == [entry]


def test_rollback_walks_back_through_promotions_instead_of_toggling(registry):
    registry.promote("m", "1.0.0")
    registry.promote("m", "1.1.0")
    registry.promote("m", "1.2.0")
    assert registry.rollback("m", why="bad").to_version == "1.1.0"
    assert registry.rollback("m").to_version == "1.0.0"
    assert registry.production("m") == "1.0.0"
    assert [e.action for e in registry.history("m")] == ["promote"] * 3 + ["rollback"] * 2


def test_rollback_with_nothing_to_return_to_says_how_to_choose_a_version(registry):
    with pytest.raises(RegistryError, match="models promote m VERSION"):
        registry.rollback("m")


def test_the_audit_log_survives_a_new_registry_object_as_after_a_restart(registry):
    registry.promote("m", "1.1.0", who="ana")
    registry.promote("m", "1.2.0-fp16", alias="candidate", who="bo")
    reopened = ModelRegistry(ModelRepository(registry.repository.root))
    assert [(e.who, e.alias, e.to_version) for e in reopened.history("m")] == [
        ("ana", PRODUCTION, "1.1.0"), ("bo", "candidate", "1.2.0-fp16")]
    assert reopened.aliases("m") == {PRODUCTION: "1.1.0", "candidate": "1.2.0-fp16"}
    assert reopened.resolve_version("m", "candidate") == "1.2.0-fp16"


def test_promoting_a_version_that_does_not_exist_lists_the_ones_that_do(registry):
    with pytest.raises(UnknownModel, match=r"1\.0\.0"):
        registry.promote("m", "9.9.9")
    assert registry.history("m") == []


def test_an_unknown_alias_names_the_versions_and_aliases_there_are(registry):
    registry.promote("m", "1.0.0", alias="stable")
    with pytest.raises(RegistryError, match=r"versions: 1\.0\.0.*aliases: stable"):
        registry.resolve_version("m", "canary")
