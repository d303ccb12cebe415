"""What a request ends as: its prediction, its dead letter, or its shadow's answer.

A failure with a reason is the request's own (bad input, a model that rejects it, a missed
deadline) and becomes a dead letter; a failure without one is a bug, and is raised so the
pipeline stops without committing.
"""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from streaminfer.schemas.codec import Prediction
from streaminfer.schemas.errors import StreamInferError
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.streams.pipeline.outgoing import (
    Outgoing,
    dead_letter_record,
    experiment_headers,
    prediction_record,
    shadow_record,
)
from streaminfer.streams.settings import TopicSettings


def answer(topics: TopicSettings, item: Decoded, outcome: Prediction | BaseException) -> Outgoing:
    if isinstance(outcome, BaseException):
        if getattr(outcome, "reason", None) is None:
            raise outcome  # not a request's fault (a bug): stop without committing
        return dead_letter(topics, item.record, outcome, item)  # type: ignore[arg-type]
    route = item.route
    return prediction_record(topics.predictions, item.record, outcome, item.headers.trace,
                             experiment_headers(route.experiment, route.arm) if route.experiment else None)


def shadow_answer(topics: TopicSettings, item: Decoded, outcome: Prediction | BaseException) -> Outgoing:
    """A shadow's failure is data for the comparison, never a dead letter of the request."""
    shadow = item.route.shadow
    assert shadow is not None
    if isinstance(outcome, BaseException):
        reason = getattr(outcome, "reason", None)
        outcome_value: Prediction | str = reason.value if reason is not None else type(outcome).__name__
    else:
        outcome_value = outcome
    return shadow_record(topics.shadow, item.record, item.request_id, shadow.entry.name,
                         shadow.entry.version, outcome_value, experiment_headers(item.route.experiment, "shadow"))


def dead_letter(topics: TopicSettings, record: ConsumerRecord, exc: StreamInferError, item: Decoded | None = None) -> Outgoing:
    return dead_letter_record(
        topics.deadletter,
        record,
        exc.reason,
        str(exc),
        model=item.served.entry.name if item else None,
        version=item.served.entry.version if item else None,
        request_id=item.request_id if item else None,
        experiment=item.route.experiment if item else "",
        arm=item.route.arm if item else "",
    )
