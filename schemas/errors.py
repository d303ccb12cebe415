"""The project's exception tree: one root, an ``errors.py`` per package, and every class below.

Every error this project raises on purpose derives from ``StreamInferError``. Two class
attributes say what a failure means, so callers branch on type and attributes, never on message
text (aiokafka's ``retriable`` is the model):

``reason``
    The dead-letter reason (``schemas.deadletter.Reason``) of a failure that belongs to one
    request: the pipeline turns it into that request's dead letter. ``None`` (the default) for
    everything else (settings, lifecycle, brokers, bugs): those stop a command or the pipeline.
``retriable``
    Whether the same work can succeed later, unchanged, once the cause has passed (workers back,
    a broker reachable again). ``False`` by default. A dead letter carries it as its
    ``__streaminfer.errors.retriable`` header, so a replay tool knows what is worth replaying.

Constructors take the facts and build the message from them; the facts stay attributes
(``UnknownModel(name, version, known).version``), and an error pickles back from them, so it
crosses Ray's process boundary whole.

Each line gives the class, ``[its reason, retriable]`` where set, and when it is raised::

    StreamInferError
    ├── RequestError                                    the request's own fault: a replay fails the same way
    │   ├── InvalidJson              [invalid_json]          value is not JSON
    │   ├── SchemaViolation          [schema_violation]      JSON, but not an OIP v2 request
    │   │   ├── NestingTooDeep       [schema_violation]      nested deeper than the decoder's recursion limit
    │   │   └── UndecodableRequest   [schema_violation]      decoding raised something unforeseen (a bug of ours)
    │   ├── InvalidHeader            [invalid_header]        a routing header that cannot be read (names it)
    │   ├── PayloadTooLarge          [payload_too_large]     a value over ``pipeline.max_request_bytes``, not decoded
    │   ├── WrongShapeOrDtype        [wrong_shape_or_dtype]  tensors that do not fit the model (or an unknown output)
    │   ├── ValueOutOfRange          [value_out_of_range]    values the model's datatype cannot hold (1e308 in FP32)
    │   ├── UnknownModel             [unknown_model]         a model or version the repository lacks
    │   ├── InferenceFailed          [inference_error]       ONNX Runtime rejected the input (the same input fails again)
    │   ├── DeadlineExceeded         [deadline_exceeded]     the request's deadline passed before it could run
    │   └── FeatureMissing           [feature_missing]       its entity or a required feature is not in the store
    ├── WorkersUnavailable           [workers_unavailable, retriable]
    │                                                        no actor answered within the retry budget
    ├── FeatureStoreUnavailable      [feature_store_unavailable, retriable]
    │                                                        the online feature store could not be read
    ├── ModelFileMissing                                     a repository entry without its model.onnx or metadata
    ├── ArtifactInvalid                                      a model file a node cannot fetch, or not the one its manifest names
    ├── RegistryError                                        a registry change that cannot be made
    ├── PolicyInvalid                                        a traffic policy file that cannot be served
    ├── PrivacyPolicyInvalid                                 a privacy policy naming features the model lacks
    ├── CachePolicyInvalid                                   a prediction cache on a model not declared deterministic
    ├── HashKeyMissing                                       a privacy policy hashes, but privacy.hash_key is unset
    ├── AlertConfigError                                     the alert rules file is wrong
    ├── MetricsEndpointInvalid                               ``metrics.*`` TLS files that cannot be loaded
    ├── ExperimentPlanInvalid                                figures an experiment cannot be planned with, or no rate
    ├── BrokerUnreachable            [retriable]             no Kafka answered at the bootstrap address
    ├── TopicsMissing                                        topics still unknown after creating them
    ├── UndeclaredTopic                                      a topic ``streams.topics`` does not declare
    ├── TopicConflict                                        two settings name one topic, laid out differently
    ├── ControlTopicBehind           [retriable]             a mirror could not catch up with the control topic in time
    ├── DeliveryFailed               [retriable]             the broker did not acknowledge a record: stop,
    │                                                        commit nothing, a restart sends it again
    ├── KafkaSecurityInvalid                                 ``kafka.*`` TLS/SASL settings that cannot make a client
    ├── KafkaAuthenticationFailed                            the broker refused our credentials, or we its certificate
    ├── KafkaNotAuthorized                                   a missing ACL (names the resource and operation)
    ├── TransactionsUnsupported                              exactly-once asked of a broker without transactions
    ├── ProducerFencedOut                                    exactly-once: another member took our transactional id
    ├── BatcherClosed                                        submitted to a batcher that is stopping
    ├── FeatureRepoMissing                                   no feature repository where the settings point
    ├── NoAnswer                     [retriable]             a webhook call got no HTTP answer at all
    │   ├── TimedOut                 [retriable]             no answer within the receiver's timeout
    │   └── UntrustedCertificate                             an HTTPS receiver's certificate did not verify
    ├── DuplicateReceiver                                    two webhook receivers with one name
    ├── SettingsFileMissing                                  ``--settings`` names no file
    ├── PortInUse                                            a port to listen on is taken
    ├── ActorsNotPlaced                                      Ray found no room for the actors (a GPU where none is)
    ├── RayUnreachable                                       --ray-address names a cluster we cannot join (or its token)
    ├── BrokerBinaryMissing                                  no Tansu binary for this platform
    ├── BrokerStartFailed                                    the embedded broker exited or did not listen
    ├── NothingToReport                                      a report without enough data
    ├── PrometheusUnreachable                                a report's Prometheus did not answer its query
    ├── ReportRangeInvalid                                   a report's --since, --until or --step that cannot be used
    ├── NoSnapshots                                          no experiment looks recorded to report on
    └── PeerUnavailable                                      the MLServer benchmark peer cannot run (bench/ only)

Where they live: ``schemas.errors`` (the root and the decoding errors), ``workers.errors``
(repository, registry, routing, execution), ``monitoring.errors``, ``streams.errors`` (Kafka,
pipeline, features), ``streams.alerting.errors`` and ``streams.alerting.webhooks`` (webhook
delivery), ``streaminfer.errors`` (command line, wiring, reports) and ``bench.mlserver_peer``.
The root lives here because every package imports ``schemas``. ``tests/unit/test_errors.py``
checks that this tree lists every class with its reason and ``retriable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from streaminfer.schemas.deadletter import Reason

_E = TypeVar("_E", bound="StreamInferError")


def _rebuild(cls: type[_E], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _E:
    return cls(*args, **kwargs)


class StreamInferError(Exception):
    """Root of every error this project raises on purpose (the tree is in the module docstring)."""

    reason: Reason | None = None
    """The dead-letter reason of a per-request failure; ``None``: not a request's failure."""
    retriable: bool = False
    """Whether the same work can succeed later, unchanged."""

    _init_arguments: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls: type[_E], *args: Any, **kwargs: Any) -> _E:
        # Keep the constructor's arguments: subclasses build their message from structured
        # arguments, so ``self.args`` (the message) could not build them again when unpickled.
        self = super().__new__(cls, *args, **kwargs)
        self._init_arguments = (args, kwargs)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self.__dict__.get("_init_arguments", (self.args, {}))
        return (_rebuild, (type(self), args, kwargs), self.__dict__)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What was known of a request when it failed: its dead letter's ``model``, ``version`` and
    ``request_id`` headers (``None``: not known)."""

    model: str | None = None
    version: str | None = None
    request_id: str | None = None
    masking: object | None = None
    """The model's privacy masking (``workers.models.privacy.Masking``) once the model is known:
    what of the request its dead letter may keep."""


class RequestError(StreamInferError):
    """The request's own fault: it belongs in dead letters under ``reason``, and no replay of the
    same record can succeed. Every subclass sets ``reason``."""

    reason: Reason
    facts: RequestFacts | None = None
    """Set by the decoder once the request id and model are known (``about``)."""

    def about(self, facts: RequestFacts) -> RequestError:
        """Attach what was known of the request when it failed; returns this error."""
        self.facts = facts
        return self


class InvalidJson(RequestError):
    reason = Reason.INVALID_JSON


class SchemaViolation(RequestError):
    reason = Reason.SCHEMA_VIOLATION


class WrongShapeOrDtype(RequestError):
    reason = Reason.WRONG_SHAPE_OR_DTYPE


class InvalidHeader(RequestError):
    """A routing header (``model-name``, ``model-version``, ``request-id``, ``deadline-ms``) whose
    bytes cannot be read: not UTF-8, or a deadline that is not epoch milliseconds."""

    reason = Reason.INVALID_HEADER

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"header {header} {problem}")
        self.header, self.problem = header, problem


class PayloadTooLarge(RequestError):
    """A request value larger than the configured limit; refused before any decoding."""

    reason = Reason.PAYLOAD_TOO_LARGE

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"value is {size} bytes, over the limit of {limit} (pipeline.max_request_bytes)")
        self.size, self.limit = size, limit


class ValueOutOfRange(RequestError):
    """Values the input's datatype cannot hold: 1e308 in FP32 (the cast makes it infinite, which a
    model would score as if it meant something), 10**19 in INT64, 1e309 anywhere. A reason of its
    own, not ``wrong_shape_or_dtype``: the tensor's shape and datatype are right and the values
    are not, so it is the client's data to fix, and a dashboard tells a bad client build from a
    bad data feed."""

    reason = Reason.VALUE_OUT_OF_RANGE

    def __init__(self, where: str, datatype: str) -> None:
        super().__init__(f"{where} holds values out of {datatype} range")
        self.where, self.datatype = where, datatype


class NestingTooDeep(SchemaViolation):
    """JSON nested deeper than msgspec can follow (about 1,000 levels, less on a deep stack).

    msgspec raises ``RecursionError`` for it, which is not a decode error: left alone it escaped
    every reader as a crash, so a 2 KB record stopped a consumer for good. No OIP v2 request
    nests deeper than four levels, so this is a schema violation whatever the rest holds.
    """

    def __init__(self, what: str = "value") -> None:
        super().__init__(f"{what} nests JSON deeper than the decoder allows (about 1,000 levels)")
        self.what = what


class UndecodableRequest(SchemaViolation):
    """Decoding a record raised an error no rule foresaw.

    That is a bug of ours, but the record must still end somewhere: left to propagate, it stops
    the consumer, its offset is never committed, and a restart reads it again, so the partition
    is blocked for good. As a dead letter it keeps its bytes for a replay once the bug is fixed.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"the request could not be decoded: {type(cause).__name__}: {cause}")
        self.cause = cause
