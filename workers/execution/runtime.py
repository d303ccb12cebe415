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

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _session_options(settings: RuntimeSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Sized to what a batch needs, not to the largest batch ever seen (``RuntimeSettings``).
    options.enable_cpu_mem_arena = settings.cpu_mem_arena
    options.enable_mem_pattern = settings.mem_pattern
    # Errors on a batch reach us as exceptions and end as dead letters with the message; ORT's own
    # log line for them (and for the CUDA probe's expected fallback) would only be noise.
    options.log_severity_level = 4
    return options


def _cuda_device_present() -> bool:
    """A cheap pre-check so CPU-only machines never pay for (or log) a failed CUDA probe."""
    return CUDA in ort.get_available_providers() and Path("/dev/nvidiactl").exists()


def gpu_providers(settings: RuntimeSettings) -> list[str | tuple[str, dict[str, str]]]:
    """CUDA, with TensorRT in front when asked for: engines (FP16 where allowed) cached on disk."""
    if not settings.tensorrt:
        return [CUDA, CPU]
    cache = settings.tensorrt_cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    tensorrt_options = {
        "trt_fp16_enable": str(settings.tensorrt_fp16).lower(),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "true",
        "trt_timing_cache_path": str(cache),
    }
    return [(TENSORRT, tensorrt_options), CUDA, CPU]


def open_session(model_path: Path, settings: RuntimeSettings) -> ort.InferenceSession:
    """Create the session on CUDA when one really works (for ``auto`` and ``cuda``), else on CPU."""
    want_cuda = settings.device == "cuda" or (settings.device == "auto" and _cuda_device_present())
    if want_cuda:
        try:
            session = ort.InferenceSession(str(model_path), _session_options(settings), providers=gpu_providers(settings))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped pybind errors; TensorRT missing its libraries fails the whole session
            log.warning("a GPU session for %s could not be created (%s); running on CPU", model_path, type(exc).__name__)
        else:
            if CUDA in session.get_providers() or TENSORRT in session.get_providers():
                if settings.tensorrt and TENSORRT not in session.get_providers():
                    log.warning("TensorRT was requested for %s but is not usable here; running on CUDA", model_path)
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
        self._io_binding = settings.io_binding

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self._run_bound(inputs) if self._io_binding else self.session.run(self._output_names, inputs)
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            raise InferenceFailed(f"onnxruntime failed on a batch: {exc}") from exc
        return dict(zip(self._output_names, results))

    def _run_bound(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One copy in per input, outputs left where the session ran them, one copy back out."""
        binding = self.session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        device = "cuda" if CUDA in self.providers or TENSORRT in self.providers else "cpu"
        for name in self._output_names:
            binding.bind_output(name, device)
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())
