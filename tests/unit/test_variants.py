"""FP16 and INT8 variants: written as pre-release versions, compared honestly with FP32."""

from __future__ import annotations

import pytest

from streaminfer.demo.model import DEMO_MLP_MODEL, DEMO_MODEL, build_demo_mlp, build_demo_model
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.models.variants import write_variants


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    repository = ModelRepository(tmp_path_factory.mktemp("variants"))
    build_demo_model(repository)
    build_demo_mlp(repository)
    return repository


def test_mlp_variants_convert_weights_and_keep_held_out_accuracy(repository):
    reports = {r.precision: r for r in write_variants(repository, repository.resolve(DEMO_MLP_MODEL))}
    fp32, fp16, int8 = reports["fp32"], reports["fp16"], reports["int8"]
    assert fp16.not_written is None and int8.not_written is None
    assert fp16.converted_ops > 0 and int8.converted_ops > 0
    assert fp16.label_agreement >= 0.99 and int8.label_agreement >= 0.97
    assert abs(fp16.holdout_accuracy - fp32.holdout_accuracy) <= 0.01
    assert abs(int8.holdout_accuracy - fp32.holdout_accuracy) <= 0.03
    assert repository.versions(DEMO_MLP_MODEL) == ["1.0.0-fp16", "1.0.0-int8", "1.0.0"]
    assert repository.resolve(DEMO_MLP_MODEL).version == "1.0.0", "a variant never becomes the default"


def test_tree_ensemble_variants_say_what_did_not_apply(repository):
    reports = {r.precision: r for r in write_variants(repository, repository.resolve(DEMO_MODEL))}
    assert reports["int8"].converted_ops == 0 and reports["int8"].label_agreement == 1.0
    fp16 = reports["fp16"]
    assert fp16.not_written is None or "does not load" in fp16.not_written
