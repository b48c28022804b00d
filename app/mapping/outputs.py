"""Everything one mapped event produces for one device: its new state, Segment calls and warehouse row.

The one sequence the worker, `kseg mapping try` and the golden tests share: attribution state, lifecycle
signals, Segment calls (with the lifecycle traits that changed), warehouse row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.attribution import apply_event
from app.lifecycle.config import LifecycleConfig
from app.lifecycle.signals import StageChange, apply_lifecycle
from app.mapping.segment import build_segment_calls, with_lifecycle
from app.mapping.warehouse import build_warehouse_row
from app.records import AttributionProfile, CanonicalEvent, ResolvedIdentity


@dataclass(frozen=True)
class EventOutputs:
    profile: AttributionProfile
    first_install: bool
    calls: list[dict[str, Any]]
    row: dict[str, Any]
    change: StageChange | None
    revenue_reporting: float | None
    #: Currency of a revenue without a rate (not summed into LTV; the caller counts it in a metric).
    unconverted_currency: str | None


def event_outputs(
    event: CanonicalEvent, identity: ResolvedIdentity, before: AttributionProfile, config: LifecycleConfig
) -> EventOutputs:
    """The device state after `event` and what to send for it (pure)."""
    state, first_install = apply_event(before, event)
    outcome = apply_lifecycle(state, event, config, first_install=first_install)
    calls = build_segment_calls(event, identity, outcome.profile, first_install=first_install)
    calls, state = with_lifecycle(calls, event, identity, outcome.profile, outcome.change)
    row = build_warehouse_row(event, identity, state, outcome.revenue_reporting)
    return EventOutputs(
        profile=state,
        first_install=first_install,
        calls=calls,
        row=row,
        change=outcome.change,
        revenue_reporting=outcome.revenue_reporting,
        unconverted_currency=outcome.unconverted_currency,
    )
