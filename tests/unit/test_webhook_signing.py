"""Webhook signatures: HMAC-SHA256 of the exact body bytes, as ``sha256=<hex>``."""

from __future__ import annotations

import hashlib
import hmac

from streaminfer.monitoring.alerting.signing import sign, verify

BODY = b'{"version":"4","status":"firing"}'


def test_signature_is_the_hex_hmac_sha256_of_the_body_with_a_prefix():
    expected = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, "s3cret") == f"sha256={expected}"


def test_known_vector_matches_rfc_4231_style_hmac():
    # HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
    body = b"The quick brown fox jumps over the lazy dog"
    assert sign(body, "key") == "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"


def test_a_signature_verifies_against_its_own_body_and_secret():
    assert verify(BODY, "s3cret", sign(BODY, "s3cret"))


def test_a_changed_body_fails_verification():
    assert not verify(BODY + b" ", "s3cret", sign(BODY, "s3cret"))


def test_another_secret_fails_verification():
    assert not verify(BODY, "other", sign(BODY, "s3cret"))


def test_missing_or_malformed_headers_fail_verification_instead_of_raising():
    digest = sign(BODY, "s3cret").removeprefix("sha256=")
    assert not verify(BODY, "s3cret", None)
    assert not verify(BODY, "s3cret", "")
    assert not verify(BODY, "s3cret", digest)  # no algorithm prefix
    assert not verify(BODY, "s3cret", "sha1=" + digest)
    assert not verify(BODY, "s3cret", "sha256=zz")
    assert not verify(BODY, "s3cret", "sha256=é")  # non-ASCII must not raise in compare_digest


def test_surrounding_whitespace_in_the_header_is_tolerated():
    assert verify(BODY, "s3cret", f"  {sign(BODY, 's3cret')} ")
