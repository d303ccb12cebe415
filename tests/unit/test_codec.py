"""Codecs against the JSON Schema files in schemas/, and every way a body can be wrong."""

from __future__ import annotations

import json

import jsonschema
import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaminfer.schemas import schema_path
from streaminfer.schemas.codec import (
    Prediction,
    decode_prediction,
    decode_request,
    encode,
    prediction_outputs,
    request_body,
    request_tensors,
)
from streaminfer.schemas.deadletter import (
    HEADER_PREFIX,
    Reason,
    error_headers,
    original_headers,
    read_error_headers,
)
from streaminfer.schemas.errors import InvalidJson, NestingTooDeep, SchemaViolation, WrongShapeOrDtype
from streaminfer.schemas.monitoring_events import decode_drift_event, decode_label, decode_metric_event
from streaminfer.schemas.notifications import decode_delivery_failure, decode_notification, decode_silence
from streaminfer.schemas.signature import Signature, TensorSpec

SIGNATURE = Signature(
    inputs=(TensorSpec("input", "FP32", (-1, 3)),),
    outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 2))),
)


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path(name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5).flatmap(lambda n: st.lists(st.lists(finite, min_size=3, max_size=3), min_size=n, max_size=n)))
def test_encoded_requests_satisfy_the_request_schema_and_decode_to_the_same_rows(rows):
    array = np.asarray(rows, dtype=np.float32)
    body = request_body("r-1", "input", array)
    validator("request").validate(json.loads(body))
    arrays, count = request_tensors(decode_request(body), SIGNATURE)
    assert count == len(rows)
    np.testing.assert_array_equal(arrays["input"], array)


def test_encoded_predictions_satisfy_the_prediction_schema():
    outputs = {"label": np.array([0, 1], dtype=np.int64), "probabilities": np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)}
    body = encode(Prediction(id="r-1", model_name="m", model_version="1.0.0", outputs=prediction_outputs(outputs, 1, 2)))
    validator("prediction").validate(json.loads(body))
    decoded = json.loads(body)
    assert decoded["outputs"][0] == {"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}


@pytest.mark.parametrize("retriable", [True, False])
@pytest.mark.parametrize("reason", list(Reason))
def test_dead_letter_headers_read_back_as_the_deadletter_schema(reason, retriable):
    headers = [("request-id", b"r-1"), *error_headers(
        reason=reason, message="why", topic="t", partition=2, offset=41, retriable=retriable, model="m", request_id="r-1"
    )]
    meta = read_error_headers(headers)
    validator("deadletter").validate(meta)
    assert meta["reason"] == reason.value and meta["offset"] == 41 and meta["retriable"] is retriable
    assert original_headers(headers) == [("request-id", b"r-1")]


@pytest.mark.parametrize(("retriable", "value"), [(True, b"true"), (False, b"false")])
def test_the_retriable_header_is_written_as_true_or_false(retriable, value):
    headers = dict(error_headers(reason=Reason.WORKERS_UNAVAILABLE, message="why", topic="t", partition=0, offset=0,
                                 retriable=retriable))
    assert headers[HEADER_PREFIX + "retriable"] == value


def test_a_writer_that_does_not_say_whether_a_replay_can_succeed_writes_no_retriable_header():
    meta = read_error_headers(error_headers(reason=Reason.FEATURE_WRITE_FAILED, message="why", topic="t",
                                            partition=0, offset=0))
    validator("deadletter").validate(meta)
    assert "retriable" not in meta


def test_schema_reason_codes_match_the_enum():
    schema = json.loads(schema_path("deadletter").read_text())
    assert set(schema["properties"]["reason"]["enum"]) == {r.value for r in Reason}


@pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe", b'{"inputs": [1,'])
def test_malformed_bodies_are_invalid_json(body):
    with pytest.raises(InvalidJson):
        decode_request(body)


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"inputs": "x"}', b'{"id": 3, "inputs": []}', b'{"inputs": [{"name": "input"}]}', b'"text"'],
)
def test_json_that_is_not_an_oip_request_is_a_schema_violation(body):
    with pytest.raises(SchemaViolation):
        decode_request(body)


def _deep(depth: int = 1000) -> str:
    return "[" * depth + "1" + "]" * depth


_TENSOR = '{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}'


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "deep", "parameters": {"x": %s}, "inputs": [%s]}' % (_deep(), _TENSOR),
        '{"id": %s, "inputs": [%s]}' % (_deep(), _TENSOR),
        '{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": %s}]}' % _deep(),
        '{"inputs": [%s], "outputs": [{"name": "label", "parameters": %s}]}' % (_TENSOR, _deep()),
        '{"inputs": [%s' % _deep(),  # deep and truncated: still one typed error, not a crash
        _deep(5000),
    ],
    ids=["parameters", "id", "data", "outputs", "truncated", "bare-5000"],
)
def test_json_nested_past_the_recursion_limit_is_a_schema_violation_not_a_crash(body):
    with pytest.raises(NestingTooDeep) as raised:
        decode_request(body.encode())
    assert raised.value.reason is Reason.SCHEMA_VIOLATION
    assert "deeper than the decoder allows" in str(raised.value)


def test_a_prediction_nested_past_the_recursion_limit_raises_our_error():
    body = '{"id": "p", "model_name": "m", "model_version": "1", "outputs": [], "parameters": {"x": %s}}' % _deep()
    with pytest.raises(NestingTooDeep):
        decode_prediction(body.encode())


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "other", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}, "missing input"),
        ({"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}, "datatype FP64"),
        ({"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}, "shape [1, 4]"),
        ({"name": "input", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}, "shape [3]"),
        ({"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}, "has 2 values"),
        ({"name": "input", "shape": [0, 3], "datatype": "FP32", "data": []}, "shape [0, 3]"),
    ],
)
def test_tensors_that_do_not_fit_the_model_say_what_it_expects(tensor, fragment):
    request = decode_request(msgspec.json.encode({"inputs": [tensor]}))
    with pytest.raises(WrongShapeOrDtype, match=fragment.replace("[", r"\[")):
        request_tensors(request, SIGNATURE)


def test_a_request_may_carry_several_rows():
    body = msgspec.json.encode({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]})
    arrays, rows = request_tensors(decode_request(body), SIGNATURE)
    assert rows == 2 and arrays["input"].shape == (2, 3) and arrays["input"].dtype == np.float32


@pytest.mark.parametrize(
    "decode",
    [decode_drift_event, decode_metric_event, decode_label, decode_notification, decode_silence, decode_delivery_failure],
)
def test_every_wire_decoder_raises_our_error_for_json_nested_past_the_limit_even_in_unknown_fields(decode):
    """msgspec walks fields the type ignores too: an alerting or monitoring reader once got a
    RecursionError it did not expect from a record nested 3,000 levels deep."""
    with pytest.raises(NestingTooDeep):
        decode(('{"unknown": %s}' % _deep(3000)).encode())
