"""One webhook attempt: the POST, what its answer means, and how long to wait before the next.

- 2xx: delivered.
- 5xx, 408, 429, connection errors and timeouts: tried again after an exponential backoff with
  full jitter, or after the receiver's ``Retry-After`` on 429 or 503, within the receiver's cap.
- Any other answer (4xx, and 3xx: redirects are not followed, a POST must not turn into a GET):
  rejected; the receiver would refuse the same body again.
- An HTTPS receiver whose certificate is not trusted: ``untrusted_certificate``, dead-lettered at
  once like a rejection (the next attempt would meet the same certificate); the dead letter's
  ``response`` says why it did not verify.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path

from streaminfer.monitoring.alerting.delivery_metrics import DELIVERED, REJECTED, RETRIED, UNTRUSTED_CERTIFICATE
from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from streaminfer.monitoring.alerting.signing import sign
from streaminfer.schemas.notifications import IDEMPOTENCY_HEADER, SIGNATURE_HEADER
from streaminfer.streams.alerting.errors import NoAnswer, TimedOut, UntrustedCertificate
from streaminfer.streams.alerting.transport import Transport

#: 4xx answers that mean "not now" rather than "never": retried like 5xx.
RETRIED_CLIENT_STATUSES = frozenset({408, 429})
#: Answers whose ``Retry-After`` header is obeyed.
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Attempt:
    """What one POST came back with; ``status`` is None when no answer came (refused, timeout)."""

    status: int | None
    text: str = ""
    retry_after_s: float | None = None
    error: str = ""
    ending: str | None = None
    """Set when no answer came and none ever will as things stand (``untrusted_certificate``):
    the notification ends as a dead letter with this reason."""

    @property
    def outcome(self) -> str:
        """``delivered``, ``retried``, or the reason the notification is dead-lettered."""
        return self.ending or verdict(self.status)


def verdict(status: int | None) -> str:
    """``delivered``, ``retried`` or ``rejected`` for an answer's status (None: no answer)."""
    if status is None or status >= 500 or status in RETRIED_CLIENT_STATUSES:
        return RETRIED
    if 200 <= status < 300:
        return DELIVERED
    return REJECTED


def retry_after_s(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def backoff_s(
    attempts: int,
    initial_s: float,
    cap_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Wait before attempt ``attempts + 1``: uniform below ``min(cap, initial * 2**(attempts-1))``
    (full jitter, so workers do not return in step), or the receiver's ``Retry-After``, capped."""
    if retry_after is not None:
        return min(retry_after, cap_s)
    ceiling = min(cap_s, initial_s * 2 ** min(max(attempts - 1, 0), 30))
    return (rng or random).uniform(0, ceiling)


def request_headers(receiver: ReceiverConfig, notification_id: str, body: bytes) -> dict[str, str]:
    """The receiver's extra headers, then ours, which win: a configured header must not be able
    to break the signature, the idempotency key or the content type."""
    ours = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, receiver.secret.get_secret_value()),
        IDEMPOTENCY_HEADER: notification_id,
    }
    taken = {name.lower() for name in ours}
    extra = {name: value for name, value in receiver.headers.items() if name.lower() not in taken}
    return extra | ours


async def post(
    transport: Transport,
    receiver: ReceiverConfig,
    body: bytes,
    headers: dict[str, str],
    excerpt_chars: int,
    default_ca_file: Path | None = None,
) -> Attempt:
    """One POST through ``transport``, no answer turned into an ``Attempt`` too; keeps at most
    ``excerpt_chars`` of the answer. HTTPS certificates are verified against the receiver's
    ``ca_file``, else ``default_ca_file``, else the system's CAs."""
    ca_file = receiver.ca_file or default_ca_file
    try:
        response = await transport.post(receiver.url, body, headers, receiver.timeout_s, ca_file)
    except TimedOut:
        return Attempt(None, error=f"no answer within {receiver.timeout_s} s")
    except UntrustedCertificate as exc:
        return Attempt(None, text=exc.detail[:excerpt_chars], error=exc.detail, ending=UNTRUSTED_CERTIFICATE)
    except NoAnswer as exc:
        return Attempt(None, error=exc.detail)
    wait = retry_after_s(response.header("Retry-After")) if response.status in RETRY_AFTER_STATUSES else None
    text = response.body[: 4 * excerpt_chars].decode(errors="replace")[:excerpt_chars] if excerpt_chars else ""
    return Attempt(response.status, text, wait)
