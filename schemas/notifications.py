"""Wire formats of alerting: the Alertmanager webhook body, outbox notifications, silences.

The webhook body is Alertmanager's (``version: "4"``), field for field, so receivers written for
Alertmanager (PagerDuty and Slack bridges, custom handlers) accept ours unchanged. Times in it
are RFC 3339 strings, as Alertmanager sends them; ``endsAt`` of a firing alert is the zero time.
"""

from __future__ import annotations

import msgspec

from streaminfer.schemas.codec import decode_bounded

FIRING, RESOLVED = "firing", "resolved"
ZERO_TIME = "0001-01-01T00:00:00Z"

#: Header carrying ``sha256=<hex HMAC of the body with the receiver's secret>``.
SIGNATURE_HEADER = "X-Streaminfer-Signature"
#: Header carrying the notification's id; a receiver that saw it already can drop the repeat.
IDEMPOTENCY_HEADER = "Idempotency-Key"


class WebhookAlert(msgspec.Struct):
    # camelCase fields: Alertmanager's webhook field names
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: str
    endsAt: str
    generatorURL: str
    fingerprint: str


class WebhookPayload(msgspec.Struct):
    version: str
    groupKey: str
    truncatedAlerts: int
    status: str
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str
    alerts: list[WebhookAlert]
    notification_reason: str = ""
    """Why this notification was sent (Alertmanager 0.32+, snake_case as Alertmanager spells it):
    ``first notification``, ``new alerts added``, ``some alerts resolved``, ``all alerts
    resolved`` or ``repeat interval elapsed``. Empty only in outbox records written before."""
    routeLabels: dict[str, str] = {}
    """The labels of the route the group matched (Alertmanager 0.34+); empty when it has none."""


class Notification(msgspec.Struct):
    """One webhook call to make, as written to the outbox topic (keyed by receiver)."""

    id: str
    """Idempotency key: the same notification written twice (after a crash) has the same id."""

    receiver: str
    created_ms: int
    payload: WebhookPayload


class DeliveryFailure(msgspec.Struct):
    """A notification the receiver refused (4xx) or that could not be delivered: a dead letter."""

    notification: Notification
    reason: str
    """``rejected`` (4xx answer), ``untrusted_certificate`` (HTTPS receiver's certificate did not
    verify; ``response`` says why) or ``unknown_receiver``."""

    status: int | None = None
    response: str = ""
    attempts: int = 0
    failed_ms: int = 0


class Matcher(msgspec.Struct):
    """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex``, as in Alertmanager."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True


class Silence(msgspec.Struct):
    id: str
    matchers: list[Matcher]
    starts_ms: int
    ends_ms: int
    created_by: str = ""
    comment: str = ""


_encoder = msgspec.json.Encoder()
_notification_decoder = msgspec.json.Decoder(Notification)
_failure_decoder = msgspec.json.Decoder(DeliveryFailure)
_silence_decoder = msgspec.json.Decoder(Silence)


def encode_alerting(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_notification(body: bytes) -> Notification:
    return decode_bounded(_notification_decoder, body, "notification")


def decode_delivery_failure(body: bytes) -> DeliveryFailure:
    return decode_bounded(_failure_decoder, body, "delivery failure")


def decode_silence(body: bytes) -> Silence:
    return decode_bounded(_silence_decoder, body, "silence")

