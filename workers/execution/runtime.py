"""One ONNX Runtime session, with explicit threads and an honest choice of device.

onnxruntime-gpu lists ``CUDAExecutionProvider`` even on machines without a GPU, and a session
asked for CUDA there silently falls back to the CPU after logging a library error. So listing
providers says nothing: we create the session and read back the providers it actually got.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streaminfer.schemas.datatypes import ONNX_TO_OIP
from streaminfer.schemas.signature import Signature, TensorSpec
from streaminfer.workers.errors import InferenceFailed
from streaminfer.workers.settings import RuntimeSettings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _session_options(settings: RuntimeSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors on a batch reach us as exceptions and end as dead letters with the message; ORT's own
    # log line for them (and for the CUDA probe's expected fallback) would only be noise.
    options.log_severity_level = 4
    return options


def _cuda_device_present() -> bool:
    """A cheap pre-check so CPU-only machines never pay for (or log) a failed CUDA probe."""
    return CUDA in ort.get_available_providers() and Path("/dev/nvidiactl").exists()


def open_session(model_path: Path, settings: RuntimeSettings) -> ort.InferenceSession:
    """Create the session on CUDA when one really works (for ``auto`` and ``cuda``), else on CPU."""
    want_cuda = settings.device == "cuda" or (settings.device == "auto" and _cuda_device_present())
    if want_cuda:
        session = ort.InferenceSession(
            str(model_path), _session_options(settings), providers=[CUDA, CPU]
        )
        if CUDA in session.get_providers():
            return session
        log.warning("CUDA was requested for %s but is not usable here; running on CPU", model_path)
    return ort.InferenceSession(str(model_path), _session_options(settings), providers=[CPU])


def session_signature(session: ort.InferenceSession) -> Signature:
    """The model's inputs and outputs in OIP terms, read from the session itself."""

    def spec(node: ort.NodeArg) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in node.shape)
        return TensorSpec(name=node.name, datatype=ONNX_TO_OIP.get(node.type, node.type), shape=shape)

    return Signature(
        inputs=tuple(spec(n) for n in session.get_inputs()),
        outputs=tuple(spec(n) for n in session.get_outputs()),
    )


class ModelRuntime:
    """Runs whole batches through one session; never called with a single row on purpose."""

    def __init__(self, model_path: Path, settings: RuntimeSettings) -> None:
        self.session = open_session(model_path, settings)
        self.signature = session_signature(self.session)
        self._output_names = [o.name for o in self.signature.outputs]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(self._output_names, inputs)
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            raise InferenceFailed(f"onnxruntime failed on a batch: {exc}") from exc
        return dict(zip(self._output_names, results))
