"""Errors of the Kafka side: brokers and topics, the pipeline, the feature store.

Their place in the project's tree, with reasons and ``retriable``, is in ``streaminfer.schemas.errors``.
"""

from __future__ import annotations

from pathlib import Path

from streaminfer.schemas.deadletter import Reason
from streaminfer.schemas.errors import RequestError, StreamInferError


class DeadlineExceeded(RequestError):
    """The request's ``deadline-ms`` passed before it could run: it is dead-lettered unrun."""

    reason = Reason.DEADLINE_EXCEEDED

    def __init__(self, deadline_ms: int, late_ms: int) -> None:
        self.deadline_ms, self.late_ms = deadline_ms, late_ms
        super().__init__(f"deadline {deadline_ms} passed {late_ms} ms before the request could run")


class FeatureMissing(RequestError):
    reason = Reason.FEATURE_MISSING


class FeatureStoreUnavailable(StreamInferError):
    """The online store could not be read for a request: dead-lettered, worth replaying later."""

    reason = Reason.FEATURE_STORE_UNAVAILABLE
    retriable = True

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"online feature store could not be read: {cause!r}; replay later")


class FeatureRepoMissing(StreamInferError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no feature repository at {path}: create it with `streaminfer features init`")


class BatcherClosed(StreamInferError):
    """Submitted to a batcher that is stopping; the caller should not commit those items."""


class BrokerUnreachable(StreamInferError):
    retriable = True

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        self.bootstrap, self.detail = bootstrap, detail
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"cannot reach Kafka at {bootstrap}{extra}: start one with `streaminfer broker` "
            "or pass --bootstrap HOST:PORT"
        )


class DeliveryFailed(StreamInferError):
    """The broker did not acknowledge a prediction or dead letter: stop, commit nothing (a restart
    sends it again)."""

    retriable = True


class TransactionsUnsupported(StreamInferError):
    """``pipeline.guarantee = "exactly_once"`` on a broker without Kafka transactions."""

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        self.bootstrap, self.detail = bootstrap, detail
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"the broker at {bootstrap} does not support transactions{extra}, which exactly-once needs: "
            "use Apache Kafka (--bootstrap HOST:PORT), or pipeline.guarantee=at_least_once"
        )


class ProducerFencedOut(StreamInferError):
    """Exactly-once: another pipeline member took over these partitions' transactional ids (this
    one is a zombie: paused past its session, or an older incarnation). It stops, committing nothing."""

    def __init__(self, transactional_id: str) -> None:
        self.transactional_id = transactional_id
        super().__init__(f"transactional id {transactional_id} was taken over by another pipeline member: "
                         "this member stops without committing")


class TopicsMissing(StreamInferError):
    def __init__(self, topics: list[str], bootstrap: str) -> None:
        self.topics, self.bootstrap = topics, bootstrap
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
        self.topic, self.first, self.second = topic, first, second
        super().__init__(
            f"topic {topic!r} is named by two settings with different layouts ({first} and {second}): "
            "give each its own topic"
        )


class ControlTopicBehind(StreamInferError):
    """A consumer could not read the control topic up to where it ended when it started, within
    its time: it would serve an older registry than the driver's, so it does not start."""

    retriable = True

    def __init__(self, topic: str, position: int, end: int, waited_s: float) -> None:
        self.topic, self.position, self.end, self.waited_s = topic, position, end, waited_s
        super().__init__(f"control topic {topic} read to offset {position} of {end} in {waited_s:.0f} s")


class KafkaSecurityInvalid(StreamInferError):
    """The ``kafka.*`` security settings cannot make a client (a TLS file missing or unreadable,
    a token provider that does not import); the message names the setting, never a secret."""


class KafkaAuthenticationFailed(StreamInferError):
    """The broker refused who we say we are (a wrong SASL password, an untrusted or unknown
    certificate, a refused OAuth token), or we refused the broker's certificate."""


class KafkaNotAuthorized(StreamInferError):
    """The principal lacks an ACL: names the resource (topic, group, transactional id) and the
    operation, so the fix is one ``kafka-acls`` line."""

    def __init__(self, resource_type: str, resource: str, operation: str, principal: str | None = None) -> None:
        self.resource_type, self.resource, self.operation, self.principal = resource_type, resource, operation, principal
        who = f"principal {principal}" if principal else "this principal"
        super().__init__(
            f"{who} may not {operation} {resource_type} {resource!r}: grant it with kafka-acls "
            f"(the ACLs each component needs are in the README, 'Connecting to a secured cluster')"
        )
