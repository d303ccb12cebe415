"""What one webhook answer means, how long the next attempt waits, which headers win, and what
one POST through a transport comes back as."""

from __future__ import annotations

import email.utils
import random

from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from streaminfer.monitoring.alerting.signing import verify
from streaminfer.schemas.notifications import IDEMPOTENCY_HEADER, SIGNATURE_HEADER
from streaminfer.streams.alerting.attempts import Attempt, backoff_s, post, request_headers, retry_after_s, verdict
from streaminfer.streams.alerting.errors import NoAnswer, TimedOut
from streaminfer.streams.alerting.transport import MockTransport, Response


def test_2xx_is_delivered_5xx_408_429_and_no_answer_are_retried_other_answers_are_rejected():
    assert [verdict(s) for s in (200, 204)] == ["delivered", "delivered"]
    assert [verdict(s) for s in (None, 500, 503, 408, 429)] == ["retried"] * 5
    assert [verdict(s) for s in (301, 400, 401, 404, 410)] == ["rejected"] * 5


def test_retry_after_is_read_as_seconds_or_as_an_http_date_and_garbage_is_ignored():
    assert retry_after_s("7") == 7.0
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_s(when, now_s=1_000_000) == 30.0
    assert retry_after_s(email.utils.formatdate(999_000, usegmt=True), now_s=1_000_000) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_backoff_has_full_jitter_below_a_doubling_ceiling_and_obeys_retry_after_within_the_cap():
    rng = random.Random(1)
    waits = [backoff_s(n, 0.5, 60.0, rng=rng) for n in range(1, 12) for _ in range(50)]
    ceilings = [min(60.0, 0.5 * 2 ** (n - 1)) for n in range(1, 12) for _ in range(50)]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings))
    assert max(waits) > 30, "late attempts spread up to the cap"
    assert backoff_s(3, 0.5, 60.0, retry_after=5.0) == 5.0
    assert backoff_s(3, 0.5, 60.0, retry_after=600.0) == 60.0


def test_a_configured_header_cannot_replace_the_signature_idempotency_key_or_content_type():
    receiver = ReceiverConfig(name="r", url="http://x", secret="s3cret",
                              headers={"X-Team": "ml", "content-type": "text/plain", SIGNATURE_HEADER.lower(): "forged"})
    body = b'{"a": 1}'
    headers = request_headers(receiver, "n-1", body)
    assert headers["X-Team"] == "ml" and headers["Content-Type"] == "application/json"
    assert "content-type" not in headers and SIGNATURE_HEADER.lower() not in headers
    assert headers[IDEMPOTENCY_HEADER] == "n-1" and verify(body, "s3cret", headers[SIGNATURE_HEADER])


RECEIVER = ReceiverConfig(name="r", url="http://r.invalid/hook", secret="s3cret", timeout_s=3.0)


async def test_an_answer_keeps_its_status_an_excerpt_and_the_retry_after_of_a_503():
    transport = MockTransport(lambda request: Response(503, {"Retry-After": "7"}, "é".encode() * 50))
    attempt = await post(transport, RECEIVER, b"{}", {"X": "1"}, excerpt_chars=10)
    assert attempt == Attempt(503, "é" * 10, 7.0)
    assert transport.requests[0].timeout_s == 3.0 and transport.requests[0].headers == {"X": "1"}


async def test_retry_after_is_ignored_on_answers_other_than_429_and_503():
    attempt = await post(MockTransport(lambda request: Response(500, {"Retry-After": "7"})), RECEIVER, b"{}", {}, 10)
    assert attempt == Attempt(500, "", None)


async def test_no_answer_and_a_timeout_become_attempts_without_a_status():
    def refused(request):
        raise NoAnswer(request.url, "ConnectionRefusedError()")

    def slow(request):
        raise TimedOut(request.url, request.timeout_s)

    assert await post(MockTransport(refused), RECEIVER, b"{}", {}, 10) == Attempt(None, error="ConnectionRefusedError()")
    assert await post(MockTransport(slow), RECEIVER, b"{}", {}, 10) == Attempt(None, error="no answer within 3.0 s")
