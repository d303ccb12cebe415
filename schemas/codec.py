"""Encode and decode OIP v2 JSON bodies, straight to and from numpy.

Decoding uses msgspec typed Structs (C-level parsing, no intermediate dicts) and turns each
input's flat ``data`` list into one numpy array in a single call, so no Python object is built
per row. Validation against the model's signature happens here too, so every reason a body can
be wrong surfaces as one typed ``RequestError``.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np

from streaminfer.schemas.datatypes import OIP_TO_NUMPY, oip_datatype
from streaminfer.schemas.errors import InvalidJson, NestingTooDeep, SchemaViolation, WrongShapeOrDtype
from streaminfer.schemas.signature import Signature, TensorSpec


class RequestTensor(msgspec.Struct, omit_defaults=True, gc=False):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct, omit_defaults=True, gc=False):
    inputs: list[RequestTensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] | None = None


class ResponseTensor(msgspec.Struct, gc=False):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class Prediction(msgspec.Struct, omit_defaults=True, gc=False):
    id: str
    model_name: str
    model_version: str
    outputs: list[ResponseTensor]
    parameters: dict[str, Any] | None = None


_request_decoder = msgspec.json.Decoder(InferenceRequest)
_prediction_decoder = msgspec.json.Decoder(Prediction)
_encoder = msgspec.json.Encoder()


def decode_request(body: bytes | None) -> InferenceRequest:
    """Parse a request body; malformed JSON and non-OIP JSON raise different errors."""
    if not body:
        raise InvalidJson("empty value: a request must be an OIP v2 JSON object")
    try:
        return _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        _raise_if_not_json(body)  # typed decoding can stop at a type error before a syntax error
        raise SchemaViolation(f"not an OIP v2 inference request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"value is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise NestingTooDeep("request") from exc


def _raise_if_not_json(body: bytes) -> None:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"value is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise NestingTooDeep("request") from exc


def request_tensors(request: InferenceRequest, signature: Signature) -> tuple[dict[str, np.ndarray], int]:
    """The request's inputs as arrays keyed by model input name, and the row count they share."""
    by_name = {tensor.name: tensor for tensor in request.inputs}
    arrays: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in signature.inputs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            raise WrongShapeOrDtype(
                f"missing input {spec.name!r}: model expects inputs {[s.name for s in signature.inputs]}"
            )
        array = _tensor_array(tensor, spec)
        if rows is not None and array.shape[0] != rows:
            raise WrongShapeOrDtype(f"inputs disagree on row count: {rows} vs {array.shape[0]}")
        rows = array.shape[0]
        arrays[spec.name] = array
    assert rows is not None, "a signature has at least one input"
    return arrays, rows


def _tensor_array(tensor: RequestTensor, spec: TensorSpec) -> np.ndarray:
    if tensor.datatype != spec.datatype:
        raise WrongShapeOrDtype(
            f"input {spec.name!r} has datatype {tensor.datatype}, model expects {spec.datatype}"
        )
    shape = tuple(tensor.shape)
    if not _shape_fits(shape, spec.shape):
        raise WrongShapeOrDtype(
            f"input {spec.name!r} has shape {list(shape)}, model expects {_show(spec.shape)}"
        )
    expected = math.prod(shape)
    if len(tensor.data) != expected:
        raise WrongShapeOrDtype(
            f"input {spec.name!r} has {len(tensor.data)} values, shape {list(shape)} needs {expected}"
        )
    return np.asarray(tensor.data, dtype=OIP_TO_NUMPY[spec.datatype]).reshape(shape)


def _shape_fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    if len(shape) != len(expected) or not shape or shape[0] < 1:
        return False
    if shape[1:] == expected[1:]:  # the usual case, checked in C
        return True
    return all(want in (-1, got) for got, want in zip(shape[1:], expected[1:]))


def _show(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


class BatchOutputs:
    """A batch's outputs turned into Python lists once, then cut per request.

    ``array.tolist()`` on the whole batch is several times cheaper per row than slicing numpy
    arrays per request and converting each slice; this runs once per prediction on the hot path.
    """

    __slots__ = ("_columns",)

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self._columns = [
            (name, oip_datatype(array.dtype), list(array.shape[1:]), array.ndim > 1, array.tolist())
            for name, array in outputs.items()
        ]

    def rows(self, start: int, stop: int) -> list[ResponseTensor]:
        """The rows ``start:stop`` as OIP response tensors (flat, row-major data)."""
        tensors = []
        for name, datatype, row_shape, nested, values in self._columns:
            if stop - start == 1:
                data = values[start] if nested else [values[start]]
            else:
                part = values[start:stop]
                data = [v for row in part for v in _flat(row)] if nested else part
            tensors.append(ResponseTensor(name, [stop - start, *row_shape], datatype, data))
        return tensors


def _flat(row: object) -> list[object]:
    if isinstance(row, list) and row and isinstance(row[0], list):
        return [v for sub in row for v in _flat(sub)]
    return row if isinstance(row, list) else [row]


def prediction_outputs(outputs: dict[str, np.ndarray], start: int, stop: int) -> list[ResponseTensor]:
    """The rows ``start:stop`` of a batch's outputs, as OIP response tensors."""
    return BatchOutputs(outputs).rows(start, stop)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_prediction(body: bytes) -> Prediction:
    """Parse a prediction; raises msgspec's errors for malformed bodies, ``NestingTooDeep`` for
    bodies nested past the decoder's recursion limit (``parameters`` and ``data`` hold any JSON)."""
    try:
        return _prediction_decoder.decode(body)
    except RecursionError as exc:
        raise NestingTooDeep("prediction") from exc


def request_body(
    request_id: str, input_name: str, rows: np.ndarray, datatype: str = "FP32",
    parameters: dict[str, Any] | None = None,
) -> bytes:
    """Build a request body for ``rows`` (2-D); used by the CLI's producer and by tests."""
    rows = np.atleast_2d(rows)
    request = InferenceRequest(
        id=request_id,
        parameters=parameters,
        inputs=[
            RequestTensor(
                name=input_name,
                shape=list(rows.shape),
                datatype=datatype,
                data=rows.ravel().tolist(),
            )
        ],
    )
    return _encoder.encode(request)
