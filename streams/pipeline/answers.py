"""What a request ends as: its prediction, its dead letter, or its shadow's answer.

A ``StreamInferError`` with a ``reason`` is that request's failure (bad input, a model that
rejects it, a missed deadline, workers or a store that stayed down) and becomes its dead letter,
headed with the reason and whether a replay can succeed (``retriable``); it keeps the original
bytes unless the model's privacy policy masks anything (then it holds the masked request). Any other failure (an
error without a reason, or one that is not ours: a bug) is raised, so the pipeline stops without
committing.
"""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from streaminfer.schemas.codec import Prediction
from streaminfer.schemas.errors import RequestError, RequestFacts, StreamInferError
from streaminfer.streams.pipeline.cache import CACHED_HEADER, CachedPrediction
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.streams.pipeline.outgoing import (
    Outgoing,
    dead_letter_record,
    experiment_headers,
    prediction_record,
    shadow_record,
)
from streaminfer.streams.settings import TopicSettings
from streaminfer.workers.models.privacy import Masking


def answer(topics: TopicSettings, item: Decoded, outcome: Prediction | BaseException) -> Outgoing:
    if isinstance(outcome, BaseException):
        if not isinstance(outcome, StreamInferError):
            raise outcome  # a bug: stop without committing
        return dead_letter(topics, item.record, outcome, item)
    route = item.route
    extra = experiment_headers(route.experiment, route.arm) if route.experiment else None
    if type(outcome) is CachedPrediction:
        extra = [*(extra or ()), CACHED_HEADER]
    return prediction_record(topics.predictions, item.record, outcome, item.headers.trace, extra)


def shadow_answer(topics: TopicSettings, item: Decoded, outcome: Prediction | BaseException) -> Outgoing:
    """A shadow's failure is data for the comparison, never a dead letter of the request."""
    shadow = item.route.shadow
    assert shadow is not None
    if isinstance(outcome, StreamInferError) and outcome.reason is not None:
        outcome_value: Prediction | str = outcome.reason.value
    elif isinstance(outcome, BaseException):
        outcome_value = type(outcome).__name__
    else:
        outcome_value = outcome
    extra = experiment_headers(item.route.experiment, "shadow")
    if type(outcome) is CachedPrediction:
        extra.append(CACHED_HEADER)
    return shadow_record(topics.shadow, item.record, item.request_id, shadow.entry.name,
                         shadow.entry.version, outcome_value, extra)


def dead_letter(topics: TopicSettings, record: ConsumerRecord, exc: StreamInferError, item: Decoded | None = None) -> Outgoing:
    """The request's dead letter; ``exc`` itself is raised if it is not a request's failure.
    Without ``item`` (decoding failed), the model and request id the error knows are used."""
    if exc.reason is None:
        raise exc  # not a request's failure (lifecycle, settings): stop without committing
    if item is not None:
        entry = item.served.entry
        facts = RequestFacts(entry.name, entry.version, item.request_id, entry.masking)
    else:
        facts = (exc.facts if isinstance(exc, RequestError) else None) or RequestFacts()
    masking = facts.masking if isinstance(facts.masking, Masking) else None
    return dead_letter_record(
        topics.deadletter,
        record,
        exc.reason,
        str(exc),
        retriable=exc.retriable,
        model=facts.model,
        version=facts.version,
        request_id=facts.request_id,
        experiment=item.route.experiment if item else "",
        arm=item.route.arm if item else "",
        masking=masking,
    )
