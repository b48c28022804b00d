"""Worker liveness and readiness, shared by the agents that can make the worker unready."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WorkerHealth:
    #: Why delivery is stopped (e.g. Segment answered 401), or None.
    blocked_reasons: dict[str, str] = field(default_factory=dict)

    def block(self, component: str, reason: str) -> None:
        self.blocked_reasons[component] = reason

    def unblock(self, component: str) -> None:
        self.blocked_reasons.pop(component, None)

    @property
    def ready(self) -> bool:
        return not self.blocked_reasons
