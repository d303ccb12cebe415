"""The demo model, built in code from scikit-learn's bundled breast_cancer data (no download).

A GradientBoosting classifier converted with skl2onnx (``zipmap=False`` gives plain tensors:
``label`` int64 [N] and ``probabilities`` float32 [N, 2]). Alongside the model we store the
training rows as the drift reference and the held-out rows with labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from streaminfer.workers.execution.runtime import ModelRuntime
from streaminfer.workers.models.repository import ModelMetadata, ModelRepository, ModelVersion
from streaminfer.workers.settings import RuntimeSettings

DEMO_MODEL = "breast-cancer"
#: A small neural network on the same data: the model whose FP16 and INT8 variants change something.
DEMO_MLP_MODEL = "breast-cancer-mlp"
DEMO_VERSION = "1.0.0"
INPUT_NAME = "input"
SEED = 7


@dataclass(frozen=True)
class DemoData:
    feature_names: list[str]
    class_names: list[str]
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def demo_data() -> DemoData:
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.25, random_state=SEED, stratify=data.target
    )
    return DemoData([str(n) for n in data.feature_names], [str(n) for n in data.target_names], x_train, x_test, y_train, y_test)


def build_demo_model(repository: ModelRepository, force: bool = False) -> ModelVersion:
    """Train, convert and write the demo model; an existing build is kept unless ``force``."""
    return _build(repository, DEMO_MODEL, lambda: GradientBoostingClassifier(random_state=SEED), force,
                  "scikit-learn GradientBoostingClassifier via skl2onnx")


def build_demo_mlp(repository: ModelRepository, force: bool = False) -> ModelVersion:
    """The same task with a standardised two-layer perceptron (MatMul/Gemm: FP16 and INT8 apply)."""
    def make():
        return make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=600, random_state=SEED))

    return _build(repository, DEMO_MLP_MODEL, make, force, "scikit-learn StandardScaler + MLPClassifier via skl2onnx")


def _build(repository: ModelRepository, name: str, make, force: bool, framework: str) -> ModelVersion:
    if not force and DEMO_VERSION in repository.versions(name):
        return repository.load(name, DEMO_VERSION)
    data = demo_data()
    classifier = make().fit(data.x_train, data.y_train)
    onnx_model = to_onnx(
        classifier,
        initial_types=[(INPUT_NAME, FloatTensorType([None, data.x_train.shape[1]]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    directory = repository.root / name / DEMO_VERSION
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(onnx_model.SerializeToString())
    signature = ModelRuntime(directory / "model.onnx", RuntimeSettings()).signature
    _frame(data.x_train, data.y_train, data.feature_names).to_parquet(directory / "reference.parquet")
    _frame(data.x_test, data.y_test, data.feature_names).to_parquet(directory / "holdout.parquet")
    repository.save_metadata(
        ModelMetadata(
            name=name,
            version=DEMO_VERSION,
            signature=signature,
            feature_names=data.feature_names,
            class_names=data.class_names,
            framework=framework,
            description="Breast cancer (Wisconsin) diagnosis; trained on scikit-learn's bundled copy.",
            metrics={"holdout_accuracy": float(classifier.score(data.x_test, data.y_test))},
        )
    )
    return repository.load(name, DEMO_VERSION)


def _frame(x: np.ndarray, y: np.ndarray, feature_names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(x, columns=feature_names)
    frame["target"] = y
    return frame
