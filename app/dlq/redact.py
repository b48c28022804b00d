"""Dead letters without raw emails or phone numbers: they are kept for weeks and read by humans.

Every email-shaped substring anywhere in a dead letter (payload values, keys, the error text) becomes
`sha256:<hex>` of the normalised address, the same hash kseg sends as `email_sha256`, so a letter can
still be matched to a person without holding the address. Values under a key naming a phone are
hashed the same way. A replayed letter therefore carries hashes, not addresses (docs/security.md).
"""

from __future__ import annotations

import re
from typing import Any

from app.ids import normalise_email, normalise_phone, sha256_hex
from app.records import DeadLetter

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")


def _hashed_email(match: re.Match[str]) -> str:
    address = match.group(0)
    return "sha256:" + sha256_hex(normalise_email(address) or address.lower())


def scrub_text(text: str) -> str:
    """`text` with every email-shaped substring replaced by its hash."""
    return EMAIL.sub(_hashed_email, text) if "@" in text else text


def _scrub(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        if "phone" in key.lower() and value and not value.startswith("sha256:"):  # hashing twice alters it
            return "sha256:" + sha256_hex(normalise_phone(value) or value)
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(str(k)): _scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, key) for v in value]
    return value


def scrub_value(value: Any) -> Any:
    """`value` (any JSON) with every email hashed, and every value under a key naming a phone."""
    return _scrub(value)


def redact(letter: DeadLetter) -> DeadLetter:
    """A copy of `letter` with no raw email or phone number left in it."""
    return letter.model_copy(update={"error": scrub_text(letter.error), "payload": _scrub(letter.payload)})
