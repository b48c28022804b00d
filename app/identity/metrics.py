"""Identity counters: every link refused and every merge not made is counted.

A class on a registry like every domain's; its one instance is on the default registry for now (the
receiver's registry, which the worker's includes), because pure rules (`resolver`, `late_auth`, `webhook`)
increment it where they decide, with no context at hand. Why: docs/reference.md#drop-metrics.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from app.metrics import RegistryMetrics


class IdentityMetrics(RegistryMetrics):
    """The identity counters (the receiver's and the worker's /metrics both show them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.links_accepted = Counter(
            "kseg_identity_links_accepted",
            "Links accepted, by source and stage.",
            ["source", "stage"],
            registry=registry,
        )
        self.links_rejected = Counter(
            "kseg_identity_links_rejected",
            "Links refused or ignored, by reason.",
            ["reason"],
            registry=registry,
        )
        self.merges_refused = Counter(
            "kseg_identity_merges_refused",
            "Merges not made, by reason (shared_device, cap).",
            ["reason"],
            registry=registry,
        )
        self.aliases_emitted = Counter(
            "kseg_identity_aliases_emitted", "Late-authentication alias calls emitted.", registry=registry
        )
        self.junk_ids_blocked = Counter(
            "kseg_identity_junk_ids_blocked",
            "Junk identifiers dropped, by id type.",
            ["id_type"],
            registry=registry,
        )
        self.anonymous_ids_adopted = Counter(
            "kseg_identity_anonymous_ids_adopted",
            "App SDK anonymousIds adopted for a device.",
            registry=registry,
        )


identity_metrics = IdentityMetrics.on(REGISTRY)
