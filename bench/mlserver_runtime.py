"""An MLServer inference runtime serving the demo ONNX model, for the MLServer benchmark peer.

Runs ONLY inside the MLServer virtual environment that ``bench.mlserver_peer`` builds
(mlserver 1.7.1 pins conflict with the main venv). Nothing in the main venv may import this
module: it imports ``mlserver`` at the top. The peer points MLServer's model settings at
``bench.mlserver_runtime.OnnxModel`` and stages a copy of this file (alone) on that
subprocess's PYTHONPATH, so keep it self-contained: no imports from the rest of the project.

The session mirrors ours for a fair comparison: CPUExecutionProvider, one intra-op thread.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

MODEL_FILENAME = "model.onnx"


class OnnxModel(MLModel):
    """Decodes every request input with ``NumpyCodec``, runs ONNX Runtime, and answers with every
    model output (``label`` and ``probabilities`` for the demo model), encoded with ``NumpyCodec``."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings, wellknown_filenames=[MODEL_FILENAME])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = self._feeds(payload)
        results = self._session.run(self._output_names, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, np.asarray(value))
                for name, value in zip(self._output_names, results)
            ],
        )

    def _feeds(self, payload: InferenceRequest) -> dict[str, np.ndarray]:
        if len(self._input_names) == 1 and len(payload.inputs) == 1:
            # A single-input model takes the request's only tensor whatever it is called.
            return {self._input_names[0]: NumpyCodec.decode_input(payload.inputs[0])}
        return {request_input.name: NumpyCodec.decode_input(request_input) for request_input in payload.inputs}
