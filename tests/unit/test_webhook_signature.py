"""Segment webhook signatures: HMAC-SHA1 of the raw body (classic) or of element 0's raw text (Actions)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.identity.webhook import sign, signed_bytes, verify_signature

SECRET = "s3cret"


def hmac_hex(raw: bytes) -> str:
    return hmac.new(SECRET.encode(), raw, hashlib.sha1).hexdigest()


CLASSIC = b'{"type":"identify","userId":"u1","traits":{"score":1e-07}}'


def test_classic_signature_covers_the_raw_bytes() -> None:
    assert sign(CLASSIC, SECRET) == hmac_hex(CLASSIC)
    assert verify_signature(CLASSIC, hmac_hex(CLASSIC), SECRET)
    assert verify_signature(CLASSIC, hmac_hex(CLASSIC).upper(), SECRET)


def test_tampered_classic_body_is_rejected() -> None:
    sig = hmac_hex(CLASSIC)
    assert not verify_signature(CLASSIC.replace(b"u1", b"u2"), sig, SECRET)
    # Same JSON value, different bytes: a re-serialised body would not verify either.
    assert not verify_signature(CLASSIC.replace(b"1e-07", b"1e-7"), sig, SECRET)


@pytest.mark.parametrize("sig", [None, "", "deadbeef"])
def test_missing_or_wrong_signature_is_rejected(sig: str | None) -> None:
    assert not verify_signature(CLASSIC, sig, SECRET)


def test_wrong_secret_is_rejected() -> None:
    assert not verify_signature(CLASSIC, hmac.new(b"other", CLASSIC, hashlib.sha1).hexdigest(), SECRET)


def test_empty_secret_never_verifies() -> None:
    assert not verify_signature(CLASSIC, hmac.new(b"", CLASSIC, hashlib.sha1).hexdigest(), "")


FIRST = b'{"type":"identify","userId":"u1","n":1.50}'
BATCH = b" [\n  " + FIRST + b' ,\n {"type":"track","userId":"u2"}\n]'


def test_actions_batch_signs_only_the_raw_text_of_element_zero() -> None:
    assert signed_bytes(BATCH) == FIRST
    assert verify_signature(BATCH, hmac_hex(FIRST), SECRET)
    assert not verify_signature(BATCH, hmac_hex(BATCH), SECRET)


def test_tampered_element_zero_of_a_batch_is_rejected() -> None:
    tampered = BATCH.replace(b'"u1"', b'"evil"')
    assert not verify_signature(tampered, hmac_hex(FIRST), SECRET)


def test_other_batch_elements_are_not_covered() -> None:
    """Segment signs element 0 only (docs/reference.md#segment-webhooks): changing element 1 keeps the
    signature valid."""
    assert verify_signature(BATCH.replace(b'"u2"', b'"u3"'), hmac_hex(FIRST), SECRET)


def test_malformed_batch_falls_back_to_the_whole_body() -> None:
    broken = b'[{"type": '
    assert signed_bytes(broken) == broken
    assert signed_bytes(b"[]") == b"[]"
    assert signed_bytes(b"\xff\xfe") == b"\xff\xfe"
