"""Versioned repository layout, semantic-version order, and errors that say what to do."""

from __future__ import annotations

import pytest

from streaminfer.schemas.signature import Signature
from streaminfer.workers.errors import ModelFileMissing, UnknownModel
from streaminfer.workers.models.repository import ModelMetadata, ModelRepository, version_key


def add_version(repository: ModelRepository, name: str, version: str, with_model: bool = True) -> None:
    repository.save_metadata(ModelMetadata(name=name, version=version, signature=Signature((), ())))
    if with_model:
        (repository.root / name / version / "model.onnx").write_bytes(b"onnx")


def test_newest_version_is_chosen_by_semantic_order_not_text(tmp_path):
    repository = ModelRepository(tmp_path)
    for version in ("1.9.0", "1.10.0", "1.2.3"):
        add_version(repository, "m", version)
    assert repository.versions("m") == ["1.2.3", "1.9.0", "1.10.0"]
    assert repository.resolve("m").version == "1.10.0"
    assert repository.resolve("m", "1.9.0").version == "1.9.0"
    assert version_key("1.10.0") > version_key("1.9.0")


def test_unknown_model_error_lists_what_the_repository_has(tmp_path):
    repository = ModelRepository(tmp_path)
    add_version(repository, "known", "1.0.0")
    with pytest.raises(UnknownModel, match=r"'nope'.*known: known"):
        repository.resolve("nope")
    with pytest.raises(UnknownModel, match=r"known/1\.0\.0"):
        repository.resolve("known", "2.0.0")


def test_missing_model_file_names_the_path_and_the_fix(tmp_path):
    repository = ModelRepository(tmp_path)
    add_version(repository, "m", "1.0.0", with_model=False)
    with pytest.raises(ModelFileMissing, match=r"model\.onnx is missing.*build-demo"):
        repository.resolve("m")
