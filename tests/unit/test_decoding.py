"""Decoding one consumed record: every bad record gets its own reason, and its dead letter says
what was known of the request (its id, the model it was routed to) when it failed.

The served models are real (a repository on disk with the lookup model); their pool is a stub,
because decoding never runs the model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import BatchOutputs
from streaminfer.schemas.deadletter import Reason, read_error_headers
from streaminfer.schemas.errors import RequestError
from streaminfer.streams.pipeline.answers import dead_letter
from streaminfer.streams.pipeline.decoding import decode_record, split_predictions
from streaminfer.streams.settings import TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels
from tests.support.models import LOOKUP_MODEL, write_lookup_model

TOPICS = TopicSettings()


class StubPool:
    def names(self) -> list[str]:
        return []

    async def start(self) -> list[dict[str, object]]:
        return []


@pytest.fixture
async def models(tmp_path) -> ServedModels:
    repository = ModelRepository(tmp_path)
    write_lookup_model(repository)
    served = ServedModels(repository, LOOKUP_MODEL, make_pool=lambda entry: StubPool())  # type: ignore[arg-type,return-value]
    await served.serve(LOOKUP_MODEL)
    return served


def request(data: object = None, *, rid: str = "r-1", shape: list[int] | None = None, datatype: str = "FP32",
            outputs: list[str] | None = None) -> bytes:
    body: dict[str, object] = {"id": rid, "inputs": [{
        "name": "input", "shape": shape or [1, 2], "datatype": datatype, "data": [1, 2] if data is None else data,
    }]}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(body).encode()


def record(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    return ConsumerRecord(TOPICS.requests, 0, 7, 0, 0, b"key", value, None, 1, len(value or b""), headers or [])


def failure(models: ServedModels, value: bytes | None, headers: list[tuple[str, bytes]] | None = None,
            max_bytes: int | None = None) -> tuple[RequestError, dict[str, object]]:
    consumed = record(value, headers)
    with pytest.raises(RequestError) as caught:
        decode_record(consumed, models, max_bytes)
    return caught.value, read_error_headers(dead_letter(TOPICS, consumed, caught.value).headers)


@pytest.mark.parametrize("header", [h.MODEL_NAME, h.MODEL_VERSION, h.REQUEST_ID])
def test_a_header_that_is_not_utf8_is_an_invalid_header_naming_it(models, header):
    _, letter = failure(models, request(), [(header, b"\xff\xfebad")])
    assert letter["reason"] == Reason.INVALID_HEADER.value
    assert f"header {header} is not UTF-8" in str(letter["message"])
    assert "deadline" not in str(letter["message"])


def test_a_deadline_that_is_not_a_number_is_an_invalid_header_naming_it(models):
    _, letter = failure(models, request(), [(h.DEADLINE_MS, b"soon")])
    assert letter["reason"] == Reason.INVALID_HEADER.value
    assert str(letter["message"]).startswith("header deadline-ms must be epoch milliseconds")


def test_tensors_that_do_not_fit_carry_the_model_and_request_id(models):
    _, letter = failure(models, request([1, 2, 3], shape=[1, 3]))
    assert letter["reason"] == Reason.WRONG_SHAPE_OR_DTYPE.value
    assert (letter["model"], letter["version"], letter["request_id"]) == (LOOKUP_MODEL, "1.0.0", "r-1")


def test_an_unknown_model_carries_the_model_asked_for_and_the_request_id(models):
    _, letter = failure(models, request(rid="r-2"), [(h.MODEL_NAME, b"nope")])
    assert letter["reason"] == Reason.UNKNOWN_MODEL.value
    assert (letter["model"], letter["request_id"]) == ("nope", "r-2")


@pytest.mark.parametrize("value", ["1e308", "-1e300", "1e39"])
def test_values_past_fp32_are_value_out_of_range_not_infinity(models, value):
    body = request([1, "VALUE"]).replace(b'"VALUE"', value.encode())
    _, letter = failure(models, body)
    assert letter["reason"] == Reason.VALUE_OUT_OF_RANGE.value
    assert letter["request_id"] == "r-1"


def test_a_number_past_float64_is_value_out_of_range_not_invalid_json(models):
    _, letter = failure(models, request([1, "VALUE"]).replace(b'"VALUE"', b"1e309"))
    assert letter["reason"] == Reason.VALUE_OUT_OF_RANGE.value


def test_large_values_that_fp32_holds_are_accepted(models):
    decoded = decode_record(record(request([1e19, 1e30])), models)
    assert np.isfinite(decoded.arrays["input"]).all()


def test_a_value_over_the_limit_is_payload_too_large_and_never_decoded(models):
    _, letter = failure(models, b"{" * 2000, max_bytes=1000)  # would be nesting_too_deep if decoded
    assert letter["reason"] == Reason.PAYLOAD_TOO_LARGE.value
    assert "2000 bytes" in str(letter["message"])


def test_nested_tensor_data_is_accepted_as_the_spec_allows(models):
    decoded = decode_record(record(request([[1, 2], [3, 4]], shape=[2, 2])), models)
    assert decoded.arrays["input"].tolist() == [[1, 2], [3, 4]] and decoded.rows == 2


def test_ragged_nested_data_is_a_schema_violation(models):
    _, letter = failure(models, request([[1, 2], [3]], shape=[2, 2]))
    assert letter["reason"] == Reason.SCHEMA_VIOLATION.value


def test_a_valid_bool_tensor_is_the_wrong_dtype_for_this_model(models):
    _, letter = failure(models, request([True, False], datatype="BOOL"))
    assert letter["reason"] == Reason.WRONG_SHAPE_OR_DTYPE.value
    assert "model expects FP32" in str(letter["message"])


def test_requested_outputs_are_the_only_outputs_returned(models):
    decoded = decode_record(record(request(outputs=["score"])), models)
    assert decoded.outputs == frozenset({"score"})
    batch = {"score": np.array([0.5], np.float32), "other": np.array([1], np.int64)}
    [prediction] = split_predictions([decoded], batch, decoded.served.entry)
    assert [o.name for o in prediction.outputs] == ["score"]
    assert [o.name for o in BatchOutputs(batch).rows(0, 1)] == ["score", "other"], "no request: every output"


def test_an_unknown_requested_output_is_a_dead_letter(models):
    _, letter = failure(models, request(outputs=["score", "nonsense"]))
    assert letter["reason"] == Reason.WRONG_SHAPE_OR_DTYPE.value
    assert "nonsense" in str(letter["message"]) and letter["request_id"] == "r-1"
