"""Webhook receivers: where notifications go, how they are signed, how long to wait on them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ReceiverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr
    """Key of the HMAC-SHA256 signature; in the rules file as ``secret_env: VARIABLE``."""

    timeout_s: float = Field(5.0, gt=0)
    """One attempt's time limit; a receiver slower than this is retried later."""

    max_backoff_s: float = Field(60.0, gt=0)
    """Retries wait 0.5 s, 1 s, 2 s... (with full jitter) up to this, for as long as it takes:
    an accepted notification is never given up on unless the receiver refuses it (4xx)."""

    headers: dict[str, str] = {}

    ca_file: Path | None = None
    """PEM bundle of the CAs that signed an ``https://`` receiver's certificate (a private CA);
    unset, ``DeliverySettings.ca_file``, else the system's CAs. Certificates and host names are
    always verified: one that does not verify dead-letters the notification as
    ``untrusted_certificate``."""


class DeliverySettings(BaseModel):
    """How the webhook delivery worker (``streams.alerting.webhooks``) reads the outbox and retries."""

    model_config = ConfigDict(extra="forbid")

    commit_interval_ms: int = Field(200, ge=0)
    """Outbox offsets are committed at most this often (and always on rebalance and shutdown)."""

    initial_backoff_s: float = Field(0.5, gt=0)
    """Upper bound of the first retry's wait; it doubles per attempt up to the receiver's
    ``max_backoff_s``, and each wait is drawn uniformly below it (full jitter), so receivers
    coming back are not hit by every worker at the same instant."""

    max_inflight_per_receiver: int = Field(256, ge=1)
    """Notifications read for one receiver and not yet ended. Above this the outbox partitions
    feeding that receiver are paused, so a dead receiver's backlog waits in Kafka, not in memory
    (one fetch may overshoot it by ``fetch_max_records``). Receivers sharing a partition with a
    stalled one then wait too: give the outbox at least as many partitions as receivers."""

    fetch_max_records: int = Field(256, ge=1)
    """Most outbox records taken in one fetch."""

    poll_timeout_ms: int = Field(100, ge=1)

    stop_grace_s: float = Field(2.0, ge=0)
    """On stop, an HTTP call in progress gets this long to finish (so an answer on its way is not
    thrown away and sent again later); then it is abandoned and its offset left uncommitted."""

    response_excerpt_chars: int = Field(2000, ge=0)
    """Characters of a refusing receiver's answer kept in the dead letter."""

    ca_file: Path | None = None
    """PEM bundle of CAs trusted for every ``https://`` receiver without a ``ca_file`` of its own
    (``STREAMINFER_ALERTING__DELIVERY__CA_FILE``); unset, the system's CAs."""
