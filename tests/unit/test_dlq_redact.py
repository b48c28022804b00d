"""Dead letters keep no raw email or phone: hashed in payload values, keys and the error text."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry, Counter

from app.dlq.redact import redact, scrub_text
from app.dlq.writer import dead_letter_record
from app.ids import sha256_hex
from app.records import DeadLetter


def test_emails_and_phones_are_hashed_everywhere_in_a_letter() -> None:
    letter = DeadLetter(
        stage="mapping",
        reason="invalid_currency",
        error="currency 'Ann.Lee@Example.com' is not a 3-letter ISO 4217 code",
        event_id="e1",
        payload={
            "params": {
                "email": "Ann.Lee@Example.com",
                "note": "contact ann.lee@example.com or bob@x.io",
                "user_phone": "+1 415 555 0100",
                "list": ["c@d.org", 3],
                "weird@key.com": "v",
            }
        },
    )
    clean = redact(letter)
    text = orjson.dumps(clean.model_dump()).decode()
    for raw in (
        "Ann.Lee@Example.com",
        "ann.lee@example.com",
        "bob@x.io",
        "c@d.org",
        "415 555",
        "weird@key.com",
    ):
        assert raw not in text
    assert clean.payload["params"]["email"] == "sha256:" + sha256_hex("ann.lee@example.com")
    assert clean.payload["params"]["user_phone"] == "sha256:" + sha256_hex("+14155550100")
    assert clean.payload["params"]["list"][1] == 3
    assert (clean.stage, clean.reason, clean.event_id) == ("mapping", "invalid_currency", "e1")


def test_the_writer_redacts_before_the_record_is_built() -> None:
    letter = DeadLetter(stage="segment", reason="x", error="e", payload={"traits": {"email": "z@y.com"}})
    registry = CollectorRegistry()
    counter = Counter("letters", "Dead letters.", ["stage", "reason"], registry=registry)
    _, value = dead_letter_record(letter, counter)
    assert b"z@y.com" not in value and b"sha256:" in value
    assert registry.get_sample_value("letters_total", {"stage": "segment", "reason": "x"}) == 1


def test_text_without_email_is_unchanged() -> None:
    assert scrub_text("no address here: a@b") == "no address here: a@b"
    assert scrub_text("plain") == "plain"
