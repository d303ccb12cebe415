"""FP16 and INT8 variants of a model version, written as new versions beside it.

- FP16: ``onnxconverter_common`` converts float tensors and weights to half precision and keeps
  the inputs and outputs FP32, so requests do not change. Operators without FP16 kernels (the
  ``ai.onnx.ml`` tree ensembles among them) stay in FP32 behind casts.
- INT8: ONNX Runtime static quantization (QDQ format), calibrated on the version's training
  reference sample. Only operators ONNX Runtime can quantize change (MatMul, Gemm, Conv...);
  a tree ensemble has none, and the report says so instead of pretending.

Variants are semver pre-releases (``1.0.0-fp16``, ``1.0.0-int8``): they sort before ``1.0.0``,
so serving the newest version never picks a variant by accident.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import onnx
import pandas as pd
from onnxconverter_common import float16
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from streaminfer.workers.execution.runtime import ModelRuntime
from streaminfer.workers.models.repository import (
    HOLDOUT_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    ModelMetadata,
    ModelRepository,
    ModelVersion,
)
from streaminfer.workers.settings import RuntimeSettings


@dataclass(frozen=True)
class VariantReport:
    version: str
    precision: str
    converted_ops: int
    holdout_accuracy: float | None = None
    label_agreement: float | None = None
    max_probability_error: float | None = None
    rows_per_s: float | None = None
    not_written: str | None = None
    """Why no variant was written (the converted model does not load), or None."""


class _Rows(CalibrationDataReader):
    def __init__(self, input_name: str, rows: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{input_name: rows[i : i + batch]} for i in range(0, len(rows), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def write_variants(repository: ModelRepository, base: ModelVersion) -> list[VariantReport]:
    """Write ``-fp16`` and ``-int8`` versions of ``base`` and compare each with it."""
    features = pd.read_parquet(base.reference_path)[base.metadata.feature_names].to_numpy(np.float32)
    input_name = base.metadata.signature.inputs[0].name
    model = onnx.load(str(base.model_path))
    reports = [_compare(base, base, "fp32", 0)]
    fp16_dir = _new_version_dir(base, "fp16")
    fp16 = _retarget_casts(float16.convert_float_to_float16(model, keep_io_types=True))
    onnx.save(fp16, str(fp16_dir / MODEL_FILE))
    reports.append(_finish(repository, base, fp16_dir, "fp16", _fp16_initializers(fp16)))
    int8_dir = _new_version_dir(base, "int8")
    quantize_static(
        str(base.model_path), str(int8_dir / MODEL_FILE), _Rows(input_name, features),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    int8 = onnx.load(str(int8_dir / MODEL_FILE))
    reports.append(_finish(repository, base, int8_dir, "int8", _count_ops(int8, {"QuantizeLinear"})))
    return reports


def _retarget_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """skl2onnx emits ``Cast(to=FLOAT)`` nodes; the converter relabels their outputs FP16 but
    leaves the attribute, which ONNX Runtime rejects. Point those casts at FP16."""
    fp16_values = {
        v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    }
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16_values:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
    return model


def _new_version_dir(base: ModelVersion, suffix: str) -> Path:
    directory = base.directory.parent / f"{base.version}-{suffix}"
    directory.mkdir(parents=True, exist_ok=True)
    for name in (REFERENCE_FILE, HOLDOUT_FILE):
        if (base.directory / name).is_file():
            shutil.copy2(base.directory / name, directory / name)
    return directory


def _finish(repository: ModelRepository, base: ModelVersion, directory: Path, precision: str, converted: int) -> VariantReport:
    try:
        ModelRuntime(directory / MODEL_FILE, RuntimeSettings())
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped; the reason goes into the report
        shutil.rmtree(directory)
        reason = str(exc).splitlines()[-1][:200]
        return VariantReport(directory.name, precision, converted, not_written=f"converted model does not load: {reason}")
    meta = base.metadata
    variant_meta = ModelMetadata(
        name=meta.name, version=directory.name, signature=meta.signature, feature_names=meta.feature_names,
        class_names=meta.class_names, framework=f"{meta.framework} ({precision})",
        description=f"{precision.upper()} variant of {meta.name}/{meta.version}",
    )
    repository.save_metadata(variant_meta)
    variant = repository.load(meta.name, directory.name)
    report = _compare(base, variant, precision, converted)
    repository.save_metadata(
        msgspec.structs.replace(variant_meta, metrics={"holdout_accuracy": report.holdout_accuracy or float("nan")})
    )
    return report


def _count_ops(model: onnx.ModelProto, kinds: set[str]) -> int:
    return sum(1 for node in model.graph.node if node.op_type in kinds)


def _fp16_initializers(model: onnx.ModelProto) -> int:
    """Weights stored in FP16: zero means the converter found nothing it could convert."""
    return sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)


def _compare(base: ModelVersion, variant: ModelVersion, precision: str, converted: int) -> VariantReport:
    holdout = pd.read_parquet(base.holdout_path)
    x = holdout[base.metadata.feature_names].to_numpy(np.float32)
    input_name = base.metadata.signature.inputs[0].name
    reference = ModelRuntime(base.model_path, RuntimeSettings()).run({input_name: x})
    runtime = ModelRuntime(variant.model_path, RuntimeSettings())
    outputs = runtime.run({input_name: x})
    labels, probabilities = _label_and_probability_names(outputs)
    accuracy = float((outputs[labels] == holdout["target"].to_numpy()).mean()) if "target" in holdout else None
    return VariantReport(
        version=variant.version,
        precision=precision,
        converted_ops=converted,
        holdout_accuracy=accuracy,
        label_agreement=float((outputs[labels] == reference[labels]).mean()),
        max_probability_error=float(np.abs(outputs[probabilities] - reference[probabilities]).max()),
        rows_per_s=_rows_per_second(runtime, input_name, x),
    )


def _label_and_probability_names(outputs: dict[str, np.ndarray]) -> tuple[str, str]:
    names = list(outputs)
    return names[0], names[-1]


def _rows_per_second(runtime: ModelRuntime, input_name: str, x: np.ndarray, batch: int = 256, seconds: float = 1.0) -> float:
    data = np.resize(x, (batch, x.shape[1])).astype(np.float32)
    runtime.run({input_name: data})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runtime.run({input_name: data})
        done += batch
    return done / (time.perf_counter() - start)
