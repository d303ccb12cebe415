"""ONNX Runtime sessions: honest device choice, exact agreement with scikit-learn, typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, demo_data
from streaminfer.workers.errors import InferenceFailed
from streaminfer.workers.execution.runtime import CPU, CUDA, TENSORRT, ModelRuntime, gpu_providers
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


def test_a_batch_through_an_io_binding_gives_the_same_answers_as_a_plain_run(model_repo):
    data = demo_data()
    plain = ModelRuntime(model_repo.resolve(DEMO_MODEL).model_path, RuntimeSettings())
    bound = ModelRuntime(model_repo.resolve(DEMO_MODEL).model_path, RuntimeSettings(io_binding=True))
    expected, got = plain.run({INPUT_NAME: data.x_test}), bound.run({INPUT_NAME: data.x_test})
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6)


def test_a_failing_batch_through_an_io_binding_raises_inference_failed(model_repo):
    runtime = ModelRuntime(model_repo.resolve(LOOKUP_MODEL).model_path, RuntimeSettings(io_binding=True))
    with pytest.raises(InferenceFailed, match="out of data bounds"):
        runtime.run({"input": np.array([[1, 0], [99, 0]], dtype=np.float32)})


def test_tensorrt_goes_in_front_of_cuda_with_its_engine_cached_on_disk(tmp_path):
    providers = gpu_providers(RuntimeSettings(tensorrt=True, tensorrt_cache_dir=tmp_path / "engines"))
    (first, options), *rest = providers
    assert first == TENSORRT and rest == [CUDA, CPU]
    assert options["trt_engine_cache_enable"] == "true" and options["trt_fp16_enable"] == "true"
    assert options["trt_engine_cache_path"] == str((tmp_path / "engines").resolve())
    assert gpu_providers(RuntimeSettings()) == [CUDA, CPU]


def test_asking_for_tensorrt_on_a_machine_without_a_gpu_still_serves_on_the_cpu(model_repo, tmp_path):
    settings = RuntimeSettings(device="cuda", tensorrt=True, tensorrt_cache_dir=tmp_path / "engines")
    runtime = ModelRuntime(model_repo.resolve(DEMO_MODEL).model_path, settings)
    assert runtime.providers[-1] == CPU
    assert runtime.run({INPUT_NAME: demo_data().x_test[:4]})["label"].shape == (4,)


def test_sessions_keep_no_cpu_arena_or_shape_plans_unless_asked(model_repo):
    path = model_repo.resolve(DEMO_MODEL).model_path
    lean = ModelRuntime(path, RuntimeSettings()).session.get_session_options()
    assert (lean.enable_cpu_mem_arena, lean.enable_mem_pattern) == (False, False)
    kept = ModelRuntime(path, RuntimeSettings(cpu_mem_arena=True, mem_pattern=True)).session.get_session_options()
    assert (kept.enable_cpu_mem_arena, kept.enable_mem_pattern) == (True, True)
