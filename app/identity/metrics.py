"""Identity counters: every link refused and every merge not made is counted.

Why: docs/reference.md#drop-metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter


@dataclass(frozen=True)
class IdentityMetrics:
    """The identity counters (process-wide; the receiver's and the worker's /metrics both show them)."""

    links_accepted: Counter
    links_rejected: Counter
    merges_refused: Counter
    aliases_emitted: Counter
    junk_ids_blocked: Counter
    anonymous_ids_adopted: Counter


identity_metrics = IdentityMetrics(
    links_accepted=Counter(
        "kseg_identity_links_accepted", "Links accepted, by source and stage.", ["source", "stage"]
    ),
    links_rejected=Counter(
        "kseg_identity_links_rejected", "Links refused or ignored, by reason.", ["reason"]
    ),
    merges_refused=Counter(
        "kseg_identity_merges_refused", "Merges not made, by reason (shared_device, cap).", ["reason"]
    ),
    aliases_emitted=Counter("kseg_identity_aliases_emitted", "Late-authentication alias calls emitted."),
    junk_ids_blocked=Counter(
        "kseg_identity_junk_ids_blocked", "Junk identifiers dropped, by id type.", ["id_type"]
    ),
    anonymous_ids_adopted=Counter(
        "kseg_identity_anonymous_ids_adopted", "App SDK anonymousIds adopted for a device."
    ),
)
