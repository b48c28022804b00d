"""Identity counters: every link refused and every merge not made is counted (stream-design-notes §8)."""

from __future__ import annotations

from app.metrics import Counter, Registry


class IdentityMetrics:
    """The identity counters on one registry (the receiver's and the worker's /metrics render it)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        self.links_accepted: Counter = self.registry.counter(
            "kseg_identity_links_accepted_total", "Links accepted, by source and stage."
        )
        self.links_rejected: Counter = self.registry.counter(
            "kseg_identity_links_rejected_total", "Links refused or ignored, by reason."
        )
        self.merges_refused: Counter = self.registry.counter(
            "kseg_identity_merges_refused_total", "Merges not made, by reason (shared_device, cap)."
        )
        self.aliases_emitted: Counter = self.registry.counter(
            "kseg_identity_aliases_emitted_total", "Late-authentication alias calls emitted."
        )
        self.junk_ids_blocked: Counter = self.registry.counter(
            "kseg_identity_junk_ids_blocked_total", "Junk identifiers dropped, by id type."
        )
        self.anonymous_ids_adopted: Counter = self.registry.counter(
            "kseg_identity_anonymous_ids_adopted_total", "App SDK anonymousIds adopted for a device."
        )

    @property
    def counters(self) -> list[Counter]:
        return [
            self.links_accepted,
            self.links_rejected,
            self.merges_refused,
            self.aliases_emitted,
            self.junk_ids_blocked,
            self.anonymous_ids_adopted,
        ]


#: Process-wide identity counters.
identity_metrics = IdentityMetrics()
