"""What a request ends as: a prediction, a dead letter with its reason, or a shadow's answer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import Prediction
from streaminfer.schemas.deadletter import Reason, read_error_headers
from streaminfer.schemas.headers import RequestHeaders
from streaminfer.streams.errors import DeadlineExceeded, DeliveryFailed
from streaminfer.streams.pipeline.answers import answer, shadow_answer
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.streams.settings import TopicSettings
from streaminfer.workers.routing.served import Route

TOPICS = TopicSettings()


def served(version: str) -> SimpleNamespace:
    return SimpleNamespace(entry=SimpleNamespace(name="m", version=version, masking=None))


def item(shadow: bool = False) -> Decoded:
    record = ConsumerRecord(TOPICS.requests, 2, 41, 1_700_000_000_000, 0, b"key", b"{}", None, 3, 2, [])
    route = Route(served("1.0.0"), "exp", "control", served("1.1.0") if shadow else None)  # type: ignore[arg-type]
    return Decoded(record=record, request_id="r1", headers=RequestHeaders(), route=route,
                   arrays={"input": np.zeros((1, 2), np.float32)}, rows=1)


def test_a_prediction_goes_to_the_predictions_topic_with_its_arm():
    out = answer(TOPICS, item(), Prediction("r1", "m", "1.0.0", []))
    assert out.topic == TOPICS.predictions and out.reason is None
    assert (b"control" in dict(out.headers).values()) and out.source_offset == 41


def test_a_failure_with_a_reason_is_the_request_s_dead_letter_naming_version_and_arm():
    out = answer(TOPICS, item(), DeadlineExceeded(1_700_000_000_000, 12))
    assert out.topic == TOPICS.deadletter and out.reason is Reason.DEADLINE_EXCEEDED
    errors = read_error_headers(out.headers)
    assert errors["reason"] == "deadline_exceeded" and errors["version"] == "1.0.0" and errors["arm"] == "control"
    assert errors["retriable"] is False
    assert errors["message"] == "deadline 1700000000000 passed 12 ms before the request could run"
    assert out.value == b"{}"  # the original bytes, for replay


def test_a_failure_that_is_not_ours_is_a_bug_and_is_raised_not_dead_lettered():
    with pytest.raises(KeyError):
        answer(TOPICS, item(), KeyError("bug"))


def test_an_error_of_ours_without_a_reason_is_raised_not_dead_lettered():
    with pytest.raises(DeliveryFailed):
        answer(TOPICS, item(), DeliveryFailed("broker did not acknowledge 3 records"))


def test_a_failing_shadow_becomes_a_shadow_record_never_a_dead_letter():
    out = shadow_answer(TOPICS, item(shadow=True), DeadlineExceeded(1_700_000_000_000, 12))
    assert out.topic == TOPICS.shadow and out.reason is None and out.mirror
    assert dict(out.headers)[h.SHADOW_ERROR] == b"deadline_exceeded"
