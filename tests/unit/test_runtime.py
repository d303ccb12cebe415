"""ONNX Runtime sessions: honest device choice, exact agreement with scikit-learn, typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, demo_data
from streaminfer.workers.errors import InferenceFailed
from streaminfer.workers.execution.runtime import CPU, CUDA, ModelRuntime
from streaminfer.workers.settings import RuntimeSettings
from tests.support.models import LOOKUP_MODEL


def test_auto_device_uses_cuda_only_when_a_session_really_gets_it(model_repo):
    runtime = ModelRuntime(model_repo.resolve(DEMO_MODEL).model_path, RuntimeSettings(device="auto"))
    assert runtime.providers[-1] == CPU
    if CUDA in runtime.providers:
        assert runtime.providers[0] == CUDA


def test_demo_model_signature_is_read_from_the_session(model_repo):
    runtime = ModelRuntime(model_repo.resolve(DEMO_MODEL).model_path, RuntimeSettings())
    assert [(s.name, s.datatype, s.shape) for s in runtime.signature.inputs] == [(INPUT_NAME, "FP32", (-1, 30))]
    assert [s.name for s in runtime.signature.outputs] == ["label", "probabilities"]


def test_demo_model_labels_match_the_training_labels_closely(model_repo):
    data = demo_data()
    runtime = ModelRuntime(model_repo.resolve(DEMO_MODEL).model_path, RuntimeSettings())
    outputs = runtime.run({INPUT_NAME: data.x_test})
    assert outputs["probabilities"].shape == (len(data.x_test), 2)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert (outputs["label"] == data.y_test).mean() > 0.9
    assert len(load_breast_cancer().feature_names) == 30


def test_a_batch_onnx_runtime_rejects_raises_inference_failed(model_repo):
    runtime = ModelRuntime(model_repo.resolve(LOOKUP_MODEL).model_path, RuntimeSettings())
    good = runtime.run({"input": np.array([[1, 0], [3, 0]], dtype=np.float32)})
    np.testing.assert_allclose(good["score"], [0.5, 1.5])
    with pytest.raises(InferenceFailed, match="out of data bounds"):
        runtime.run({"input": np.array([[1, 0], [99, 0]], dtype=np.float32)})
