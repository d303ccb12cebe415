"""The Ray actor: a thin shell around ``ModelRuntime`` so the runtime stays testable without Ray."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from streaminfer.workers.models.distribution import cached_file
from streaminfer.workers.settings import RuntimeSettings


class InferenceActor:
    """Holds one ONNX Runtime session for one model version.

    Ray restarts a dead actor by calling ``__init__`` again, so everything it needs is in the
    constructor arguments: a restarted actor is indistinguishable from the first one.
    """

    def __init__(self, model_path: str, runtime_settings: dict, label: str, model_file: bytes | None = None) -> None:
        """``model_file``: the model's bytes (Ray hands them over from its object store), used
        where ``model_path`` is not readable: a node without the driver's disk."""
        self.label = label
        path = Path(model_path)
        if model_file is not None and not path.is_file():
            path = cached_file(model_file, Path(tempfile.gettempdir()) / "streaminfer" / "artifacts")
        from streaminfer.workers.execution.runtime import ModelRuntime  # in the actor's process only, not the driver's

        self.runtime = ModelRuntime(path, RuntimeSettings(**runtime_settings))

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runtime.run(inputs)

    def describe(self) -> dict[str, object]:
        return {"label": self.label, "pid": os.getpid(), "providers": self.runtime.providers}
