"""Identifier hygiene shared by mapping and identity: junk filtering, hashing, deterministic ids.

Junk ids (the all-zero IDFA under ATT, `-1`, `null`, ...) must never become identifiers, or every
opted-out device would merge into one profile (docs/reference.md#identity-merge-safety).
"""

from __future__ import annotations

import hashlib
import re
import uuid

_JUNK_RE = re.compile(r"^[0\-]*$")
_JUNK_WORDS = frozenset({"-1", "null", "none", "nil", "undefined", "anonymous", "unknown", "n/a", "na"})
_MACRO_RE = re.compile(r"^\{[A-Za-z0-9_.]+\}$")

#: Namespace of every uuid5 kseg derives (messageIds, anonymous ids).
KSEG_UUID_NAMESPACE = uuid.UUID("6b3f0f4e-2c1a-5d7e-9a40-8f2d6c1b7e55")


def clean_id(value: object) -> str | None:
    """The id as a trimmed string, or None when it is absent or junk.

    Junk: empty, all zeros and dashes, a placeholder word, or an unfilled Kochava macro like `{idfa}`.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text or _JUNK_RE.match(text) or text.lower() in _JUNK_WORDS or _MACRO_RE.match(text):
        return None
    return text


def is_zero_ad_id(value: object) -> bool:
    """An advertising id that is present but zeroed: the device limits ad tracking."""
    return value is not None and bool(str(value).strip()) and bool(_JUNK_RE.match(str(value).strip()))


_NAMESPACE_BYTES = KSEG_UUID_NAMESPACE.bytes


def kseg_uuid5(name: str) -> str:
    """`str(uuid.uuid5(KSEG_UUID_NAMESPACE, name))`, formatted straight from the SHA-1 digest: every
    messageId of every event is one, and building a `UUID` object costs more than the hash."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8")).hexdigest()
    # RFC 4122: version 5 in the 13th hex digit, the variant (10xx) in the 17th.
    variant = "89ab"[int(digest[16], 16) & 3]
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{variant}{digest[17:20]}-{digest[20:32]}"


def anonymous_id_for(namespace: str, device_key: str) -> str:
    """Deterministic Segment anonymousId for one device: repeats never create several profiles."""
    return kseg_uuid5(f"{namespace}:anon:{device_key}")


def message_id_for(namespace: str, event_id: str, part: str) -> str:
    """Deterministic Segment messageId (< 100 chars) for one output of one event, namespaced."""
    return kseg_uuid5(f"{namespace}:{event_id}:{part}")


def normalise_email(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return text if "@" in text and "." in text.rsplit("@", 1)[-1] and " " not in text else None


def normalise_phone(value: object) -> str | None:
    """E.164: a leading + and 8 to 15 digits; separators are dropped."""
    if value is None:
        return None
    text = str(value).strip()
    plus = text.startswith("+") or text.startswith("00")
    digits = re.sub(r"\D", "", text)
    if text.startswith("00"):
        digits = digits[2:]
    if not plus or not 8 <= len(digits) <= 15:
        return None
    return "+" + digits


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
