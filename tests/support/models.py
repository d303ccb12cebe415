"""Small ONNX models built in code for tests.

``lookup``: ``score[i] = table[int(input[i, 0])]`` through ONNX ``Gather``. ONNX Runtime raises on
an index outside the table, so one bad row makes a whole batch fail inside the runtime: the real
way to get an ``inference_error`` and to check that its batch-mates still get predictions.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from streaminfer.workers.execution.runtime import ModelRuntime
from streaminfer.workers.models.repository import METADATA_FILE, MODEL_FILE, Enrichment, ModelMetadata, ModelRepository
from streaminfer.workers.settings import RuntimeSettings

LOOKUP_MODEL = "lookup"
LOOKUP_TABLE = np.arange(10, dtype=np.float32) * 0.5


def lookup_model() -> onnx.ModelProto:
    table = helper.make_tensor("table", TensorProto.FLOAT, [len(LOOKUP_TABLE)], LOOKUP_TABLE.tolist())
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["first"]),
        helper.make_node("Squeeze", ["first", "axes"], ["first_flat"]),
        helper.make_node("Cast", ["first_flat"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["score"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=[table, starts, ends, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_lookup_model(repository: ModelRepository, version: str = "1.0.0") -> None:
    directory = repository.root / LOOKUP_MODEL / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(lookup_model().SerializeToString())
    signature = ModelRuntime(directory / MODEL_FILE, RuntimeSettings()).signature
    repository.save_metadata(ModelMetadata(name=LOOKUP_MODEL, version=version, signature=signature))
    assert (directory / METADATA_FILE).is_file()


ENRICHED_MODEL = "entity-sum"


def row_sum_model(width: int) -> onnx.ModelProto:
    """``score[i] = sum(input[i, :])``: a prediction shows exactly which values the model saw."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["input", "axes"], ["score"], keepdims=0)],
        "row_sum",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_enriched_model(repository: ModelRepository, features: list[str], version: str = "1.0.0") -> None:
    """A row-sum model over one request column plus ``features`` from the online store."""
    directory = repository.root / ENRICHED_MODEL / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(row_sum_model(1 + len(features)).SerializeToString())
    signature = ModelRuntime(directory / MODEL_FILE, RuntimeSettings()).signature
    repository.save_metadata(ModelMetadata(
        name=ENRICHED_MODEL, version=version, signature=signature,
        enrichment=Enrichment(input="input", features=features),
    ))


EXPERIMENT_MODEL = "table"


def table_model(size: int, flipped: frozenset[int] = frozenset()) -> onnx.ModelProto:
    """``score = index / 100`` and ``label = index % 2`` (``1 - that`` for ``flipped`` indices),
    with ``index = int(input[:, 0])``. An index at or past ``size`` makes ONNX Runtime raise, so
    a smaller table is a version that fails on a known share of requests."""
    scores = [i / 100 for i in range(size)]
    labels = [(i % 2) ^ (1 if i in flipped else 0) for i in range(size)]
    initializers = [
        helper.make_tensor("scores", TensorProto.FLOAT, [size], scores),
        helper.make_tensor("labels", TensorProto.INT64, [size], labels),
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["first"]),
        helper.make_node("Squeeze", ["first", "axes"], ["first_flat"]),
        helper.make_node("Cast", ["first_flat"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["labels", "index"], ["label"], axis=0),
        helper.make_node("Gather", ["scores", "index"], ["score"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "table",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_table_model(repository: ModelRepository, version: str, size: int = 100,
                      flipped: frozenset[int] = frozenset(), name: str = EXPERIMENT_MODEL) -> None:
    directory = repository.root / name / version
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_bytes(table_model(size, flipped).SerializeToString())
    signature = ModelRuntime(directory / MODEL_FILE, RuntimeSettings()).signature
    repository.save_metadata(ModelMetadata(name=name, version=version, signature=signature))
