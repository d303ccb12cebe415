"""Errors of the Kafka side.

::

    StreamInferError
    ├── RequestError
    │   ├── DeadlineExceeded        the request's deadline passed before it could run
    │   ├── FeatureMissing          its model enriches from the feature store; the entity or a
    │   │                           required feature is not there
    │   └── FeatureStoreUnavailable the online store could not be read; replay the dead letter later
    ├── BrokerUnreachable           no Kafka answered at the bootstrap address
    ├── TopicsMissing               topics still unknown to the broker after creating them
    ├── UndeclaredTopic             a service asked for a topic ``streams.topics`` does not declare
    ├── TopicConflict               two settings name one topic, laid out differently
    └── DeliveryFailed              the broker did not acknowledge a prediction or dead letter;
                                    the pipeline stops without committing, so nothing is lost
"""

from __future__ import annotations

from streaminfer.schemas.deadletter import Reason
from streaminfer.schemas.errors import RequestError, StreamInferError


class DeadlineExceeded(RequestError):
    reason = Reason.DEADLINE_EXCEEDED


class FeatureMissing(RequestError):
    reason = Reason.FEATURE_MISSING


class FeatureStoreUnavailable(RequestError):
    reason = Reason.FEATURE_STORE_UNAVAILABLE


class BrokerUnreachable(StreamInferError):
    def __init__(self, bootstrap: str, detail: str = "") -> None:
        self.bootstrap = bootstrap
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"cannot reach Kafka at {bootstrap}{extra}: start one with `streaminfer broker` "
            "or pass --bootstrap HOST:PORT"
        )


class DeliveryFailed(StreamInferError):
    """The broker did not acknowledge a prediction or dead letter: stop, commit nothing."""


class TopicsMissing(StreamInferError):
    def __init__(self, topics: list[str], bootstrap: str) -> None:
        super().__init__(
            f"topics {', '.join(topics)} do not exist on {bootstrap}: create them, or let streaminfer "
            "create them (it needs the right to create topics)"
        )


class UndeclaredTopic(StreamInferError):
    """A topic not in ``streams.topics.Topology``: a bug of ours, not of the settings."""

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        super().__init__(f"topics {', '.join(topics)} are not declared in streams.topics.Topology")


class TopicConflict(StreamInferError):
    """Two settings give one topic name to topics laid out differently (say, drift and silences)."""

    def __init__(self, topic: str, first: str, second: str) -> None:
        self.topic = topic
        super().__init__(
            f"topic {topic!r} is named by two settings with different layouts ({first} and {second}): "
            "give each its own topic"
        )
