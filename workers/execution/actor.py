"""The Ray actor: a thin shell around ``ModelRuntime`` so the runtime stays testable without Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from streaminfer.workers.execution.runtime import ModelRuntime
from streaminfer.workers.settings import RuntimeSettings


class InferenceActor:
    """Holds one ONNX Runtime session for one model version.

    Ray restarts a dead actor by calling ``__init__`` again, so everything it needs is in the
    constructor arguments: a restarted actor is indistinguishable from the first one.
    """

    def __init__(self, model_path: str, runtime_settings: dict, label: str) -> None:
        self.label = label
        self.runtime = ModelRuntime(Path(model_path), RuntimeSettings(**runtime_settings))

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runtime.run(inputs)

    def describe(self) -> dict[str, object]:
        return {"label": self.label, "pid": os.getpid(), "providers": self.runtime.providers}
