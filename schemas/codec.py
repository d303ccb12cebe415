"""Encode and decode OIP v2 JSON bodies, straight to and from numpy.

Decoding uses msgspec typed Structs (C-level parsing, no intermediate dicts) and turns each
input's flat ``data`` list into one numpy array in a single call, so no Python object is built
per row. Validation against the model's signature happens here too, so every reason a body can
be wrong surfaces as one typed ``RequestError``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import msgspec
import numpy as np

from streaminfer.schemas.datatypes import OIP_TO_NUMPY, oip_datatype
from streaminfer.schemas.errors import (
    InvalidJson,
    NestingTooDeep,
    SchemaViolation,
    ValueOutOfRange,
    WrongShapeOrDtype,
)
from streaminfer.schemas.signature import Signature, TensorSpec


class RequestTensor(msgspec.Struct, omit_defaults=True, gc=False):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]
    parameters: dict[str, Any] | None = None


class RequestOutput(msgspec.Struct, omit_defaults=True, gc=False):
    """An output the client asks for; a request that names outputs gets only those back."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct, omit_defaults=True, gc=False):
    inputs: list[RequestTensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestOutput] | None = None


class _LooseTensor(msgspec.Struct, gc=False):
    """What OIP v2 allows beyond the flat float list the fast decoder takes: nested ``data``
    (``[[...], [...]]``, as Triton accepts) and booleans. Read only when the fast decoder fails."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class _LooseRequest(msgspec.Struct, gc=False):
    inputs: list[_LooseTensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestOutput] | None = None


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


# Overflow in the cast to the input's datatype is reported as ValueOutOfRange (``_all_finite``),
# so numpy's warnings about it (and about the squares in that check) would only be noise.
warnings.filterwarnings("ignore", r"overflow encountered in (cast|dot)", RuntimeWarning, __name__)

_request_decoder = msgspec.json.Decoder(InferenceRequest)
_loose_decoder = msgspec.json.Decoder(_LooseRequest)
_prediction_decoder = msgspec.json.Decoder(Prediction)
_encoder = msgspec.json.Encoder()


def decode_request(body: bytes | None) -> InferenceRequest:
    """Parse a request body; malformed JSON and non-OIP JSON raise different errors.

    The fast decoder takes the common shape (flat numeric ``data``) straight into typed structs;
    only a body it refuses is read again, loosely, for what the spec also allows (nested
    ``data``, booleans), so valid requests never pay for the second look."""
    if not body:
        raise InvalidJson("empty value: a request must be an OIP v2 JSON object")
    try:
        return _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        return _decode_loosely(body, exc)
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"value is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise NestingTooDeep("request") from exc


def _decode_loosely(body: bytes, strict_error: msgspec.ValidationError) -> InferenceRequest:
    if "out of range" in str(strict_error):  # msgspec's words for a number past float64 or int64
        raise ValueOutOfRange("a number", "FP64 or INT64") from strict_error
    try:
        loose = _loose_decoder.decode(body)
    except msgspec.ValidationError as exc:
        _raise_if_not_json(body)  # typed decoding can stop at a type error before a syntax error
        raise SchemaViolation(f"not an OIP v2 inference request: {strict_error}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"value is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise NestingTooDeep("request") from exc
    inputs = [
        RequestTensor(t.name, t.shape, t.datatype, _flat_values(t.name, t.datatype, t.data), t.parameters)
        for t in loose.inputs
    ]
    return InferenceRequest(inputs, loose.id, loose.parameters, loose.outputs)


def _flat_values(name: str, datatype: str, data: list[Any]) -> list[Any]:
    """Nested ``data`` flattened row-major; anything but numbers and booleans, or ragged nesting,
    is not OIP v2 tensor data, and booleans belong to BOOL tensors only."""
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError) as exc:  # ragged nesting; ints past 64 bits
        raise SchemaViolation(f"input {name!r}: data is not a rectangular array of numbers: {exc}") from exc
    if array.dtype.kind not in "biuf" and array.size:
        raise SchemaViolation(f"input {name!r}: data holds {array.dtype.name} values, not numbers or booleans")
    if array.dtype.kind == "b" and datatype != "BOOL":
        raise WrongShapeOrDtype(f"input {name!r} has datatype {datatype} but boolean data")
    return array.ravel().tolist()


def _raise_if_not_json(body: bytes) -> None:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        if "out of range" in str(exc):  # valid JSON syntax, a number past float64
            raise ValueOutOfRange("a number", "FP64") from exc
        raise InvalidJson(f"value is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise NestingTooDeep("request") from exc


def requested_outputs(request: InferenceRequest, signature: Signature) -> frozenset[str] | None:
    """The outputs the request names (None: all of them); a name the model lacks is an error."""
    if not request.outputs:
        return None
    names = frozenset(output.name for output in request.outputs)
    known = {spec.name for spec in signature.outputs}
    unknown = sorted(names - known)
    if unknown:
        raise WrongShapeOrDtype(f"requested outputs {unknown} are not the model's: it returns {sorted(known)}")
    return names


def request_tensors(request: InferenceRequest, signature: Signature) -> tuple[dict[str, np.ndarray], int]:
    """The request's inputs as arrays keyed by model input name, and the row count they share."""
    specs = signature.inputs
    inputs = request.inputs
    if len(specs) == 1 and len(inputs) == 1 and inputs[0].name == specs[0].name:  # the usual case
        array = _tensor_array(inputs[0], specs[0])
        return {specs[0].name: array}, array.shape[0]
    by_name = {tensor.name: tensor for tensor in inputs}
    arrays: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in specs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            raise WrongShapeOrDtype(f"missing input {spec.name!r}: model expects inputs {[s.name for s in specs]}")
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
    try:
        array = np.asarray(tensor.data, dtype=OIP_TO_NUMPY[spec.datatype])
    except (OverflowError, RuntimeWarning) as exc:  # past an integer type; a float cast under -W error
        raise ValueOutOfRange(f"input {spec.name!r}", spec.datatype) from exc
    if spec.datatype[0] == "F" and not _all_finite(array):
        raise ValueOutOfRange(f"input {spec.name!r}", spec.datatype)
    return array.reshape(shape)


def _all_finite(flat: np.ndarray) -> bool:
    """Whether no value overflowed to infinity in the cast (1e308 in FP32).

    The cheap test first: the sum of squares (one BLAS call, a fraction of a microsecond for a
    row) is finite whenever every value is, unless values are so large their squares overflow;
    only then is each value looked at. ``isfinite(...).all()`` on every request would cost about
    as much as the cast itself."""
    try:
        if math.isfinite(flat.dot(flat)):
            return True
    except RuntimeWarning:  # numpy's overflow warning, raised when warnings are errors
        pass
    return bool(np.isfinite(flat).all())


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

    def rows(self, start: int, stop: int, only: frozenset[str] | None = None) -> list[ResponseTensor]:
        """The rows ``start:stop`` as OIP response tensors (flat, row-major data); ``only``: the
        outputs the request asked for (None: every output)."""
        tensors = []
        for name, datatype, row_shape, nested, values in self._columns:
            if only is not None and name not in only:
                continue
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


def decode_bounded(decoder: msgspec.json.Decoder[Any], body: bytes, what: str) -> Any:
    """``decoder.decode(body)``, with JSON nested past msgspec's recursion limit (even in fields
    the type ignores, which msgspec still walks) raised as ``NestingTooDeep`` instead of
    ``RecursionError``, which no reader expects."""
    try:
        return decoder.decode(body)
    except RecursionError as exc:
        raise NestingTooDeep(what) from exc

