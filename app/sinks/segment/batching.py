"""Cut messages into `/v1/batch` bodies that respect Segment's count and size limits.

Segment's hard limits are 2,500 items and 500 KB per request; we budget 500 messages and 450,000
bytes of *uncompressed* JSON (docs/reference.md#segment-limits), since whether 500 KB applies before or
after gzip is undocumented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.sinks.segment.validation import message_size

#: `{"batch":[` + `],"sentAt":"2024-01-01T00:00:00.000Z"}` with room to spare.
ENVELOPE_BYTES = 64


def chunk(
    messages: Sequence[dict[str, Any]],
    max_messages: int = 500,
    max_bytes: int = 450_000,
    *,
    sizes: Sequence[int] | None = None,
) -> list[list[dict[str, Any]]]:
    """Split `messages`, in order, into batches of ≤ `max_messages` and ≤ `max_bytes` of request body.

    The byte budget counts the envelope and the commas between items. A single message larger than
    the budget still gets a batch of its own (never dropped here: validation owns the 32 KB limit).
    `sizes` lets a caller that already serialised the messages skip a second `orjson.dumps`.
    """
    if max_messages < 1 or max_bytes < 1:
        raise ValueError("limits must be positive")
    if sizes is not None and len(sizes) != len(messages):
        raise ValueError("sizes must match messages")
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    used = ENVELOPE_BYTES
    for index, message in enumerate(messages):
        size = sizes[index] if sizes is not None else message_size(message)
        cost = size + (1 if current else 0)
        if current and (len(current) >= max_messages or used + cost > max_bytes):
            batches.append(current)
            current, used, cost = [], ENVELOPE_BYTES, size
        current.append(message)
        used += cost
    if current:
        batches.append(current)
    return batches
