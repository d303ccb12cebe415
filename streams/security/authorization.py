"""A refusal by the broker's authorizer, told as the ACL that is missing.

aiokafka reports ``TopicAuthorizationFailedError('payments.predictions')`` wherever it happens (a
fetch, a produce, a metadata request) without the operation. The component knows which topics it
reads and which it writes, so it can say "may not Write topic 'payments.predictions'", which is
one ``kafka-acls`` line away from fixed (``streaminfer acls`` lists them all).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from aiokafka.errors import (
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from streaminfer.streams.errors import KafkaNotAuthorized
from streaminfer.streams.security.settings import KafkaSecuritySettings
from streaminfer.streams.settings import KafkaSettings, TopicSettings


def principal_of(security: KafkaSecuritySettings) -> str | None:
    """The principal these settings log in as, when the settings say (a certificate's is the
    broker's mapping of its subject, which the client cannot know for sure)."""
    if security.uses_sasl:
        name = security.oauth.client_id if security.sasl_mechanism == "OAUTHBEARER" else security.sasl_username
        return f"User:{name}" if name else None
    return None


def not_authorized(error: BaseException | None, *, reads: Collection[str], writes: Collection[str], group: str | None,
                   transactional_prefix: str | None = None, principal: str | None = None) -> KafkaNotAuthorized | None:
    """The missing ACL behind ``error`` (anywhere in its chain of causes), or None if it is not
    an authorization failure."""
    for cause in _chain(error):
        if isinstance(cause, TopicAuthorizationFailedError):
            topics = _topics_named(cause) or sorted({*reads, *writes})
            topic = topics[0]
            operation = "Read" if topic in reads and topic not in writes else (
                "Write" if topic in writes and topic not in reads else "Read and Write")
            return KafkaNotAuthorized("topic", topic, operation, principal)
        if isinstance(cause, GroupAuthorizationFailedError):
            return KafkaNotAuthorized("group", group or "?", "Read", principal)
        if isinstance(cause, TransactionalIdAuthorizationFailed):
            return KafkaNotAuthorized("transactional-id", f"{transactional_prefix or ''}*", "Write and Describe", principal)
    return None


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _topics_named(error: TopicAuthorizationFailedError) -> list[str]:
    names: list[str] = []
    for arg in error.args:
        if isinstance(arg, str):
            names.append(arg)
        elif isinstance(arg, (set, frozenset, list, tuple)):
            names.extend(sorted(str(item) for item in arg))
    return names


def refused_as(error: Exception, *, reads: Collection[str], writes: Collection[str],
               settings: KafkaSettings, group: str | None = None) -> Exception:
    """``error`` as the missing ACL it stands for, or ``error`` itself: for commands that read
    or write a few topics (``raise refused_as(exc, ...) from None``)."""
    refusal = not_authorized(error, reads=reads, writes=writes, group=group, principal=principal_of(settings))
    return refusal if refusal is not None else error


def pipeline_refusal(error: BaseException | None, kafka: KafkaSettings, topics: TopicSettings) -> KafkaNotAuthorized | None:
    """``not_authorized`` for a pipeline consumer: it reads the requests, writes the outputs (and
    health reports), commits in its group and, exactly-once, owns transactional ids prefixed
    ``<group>-``. ``topics`` as the pipeline got them (health bound to the metrics topic)."""
    writes = [topics.predictions, topics.deadletter, topics.shadow, *([topics.health] if topics.health else [])]
    return not_authorized(error, reads=[topics.requests], writes=writes, group=kafka.group_id,
                          transactional_prefix=f"{kafka.group_id}-", principal=principal_of(kafka))
