"""Errors of webhook delivery.

::

    StreamInferError
    └── NoAnswer                  a webhook call got no HTTP answer at all (refused, reset, DNS, ...);
        ├── TimedOut              no answer within the receiver's timeout
        └── UntrustedCertificate  the receiver's TLS certificate is not trusted (not retriable)

``NoAnswer`` and ``TimedOut`` mean "try again later" (``streams.alerting.attempts``);
``UntrustedCertificate`` ends the notification as a dead letter, since trying again cannot help
until ``ca_file`` changes. An answer of any status is a ``Response``, never an error. Transports raise these ``from`` their HTTP library's errors.
"""

from __future__ import annotations

from streaminfer.schemas.errors import StreamInferError


class NoAnswer(StreamInferError):
    retriable = True

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"no answer from {url}: {detail}")


class TimedOut(NoAnswer):
    def __init__(self, url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(url, f"no answer within {timeout_s} s")


class UntrustedCertificate(NoAnswer):
    """The receiver's certificate does not chain to the configured CAs (``ca_file``, or the
    system's) or does not name the host; also a ``ca_file`` that cannot be loaded."""

    retriable = False
