"""Prometheus metrics of webhook delivery (``streams.alerting.webhooks``).

Like every metrics class here they live in a registry passed in by the composition root, never
the global default, so two workers in one process (or tests) never share counters by accident.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Outcomes of ``streaminfer_alert_notifications_total``: ``delivered`` (2xx), ``retried`` (one
#: per failed attempt that will be tried again), ``rejected`` (4xx, dead-lettered),
#: ``untrusted_certificate`` (an HTTPS receiver whose certificate does not verify, dead-lettered),
#: ``unknown_receiver`` (not in the config, dead-lettered) and ``invalid_record`` (outbox bytes
#: that are not a notification: counted under ``receiver=""`` and skipped, see the worker).
DELIVERED, RETRIED, REJECTED = "delivered", "retried", "rejected"
UNKNOWN_RECEIVER, INVALID_RECORD = "unknown_receiver", "invalid_record"
UNTRUSTED_CERTIFICATE = "untrusted_certificate"

# Alerts should arrive in seconds; the long buckets show how long outages held them back.
_DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.notifications = Counter(
            "streaminfer_alert_notifications_total",
            "Webhook notifications by receiver and outcome (delivered, retried, rejected, "
            "untrusted_certificate, unknown_receiver, invalid_record).",
            ["receiver", "outcome"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "streaminfer_alert_delivery_seconds",
            "From a notification's creation to the receiver's 2xx answer, retries included.",
            ["receiver"],
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        self.outbox_pending = Gauge(
            "streaminfer_alert_outbox_pending",
            "Notifications read from the outbox for a receiver and not yet delivered or dead-lettered.",
            ["receiver"],
            registry=registry,
        )
