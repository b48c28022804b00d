"""Everything one mapped event produces for one device: its new state, Segment calls and warehouse row.

The outputs half of the processing core (`app.pipeline.core`, which the worker and `kseg mapping try`
run): lifecycle signals, Segment calls (with the lifecycle traits that changed), warehouse row, for a
device already attributed and identified. `event_outputs` is the same with attribution first, for a
given identity (the golden tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.attribution import apply_event
from app.lifecycle.config import LifecycleConfig
from app.lifecycle.signals import StageChange, apply_lifecycle
from app.lifecycle.traits import only_ride_along, pending_traits
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
    #: The first call is an identify of its own carrying only lifetime revenue and purchase count (a
    #: micro-batch may coalesce it with the device's next one: `app.pipeline.steps`).
    ride_along: bool = False


def event_outputs(
    event: CanonicalEvent, identity: ResolvedIdentity, before: AttributionProfile, config: LifecycleConfig
) -> EventOutputs:
    """The device state after `event` and what to send for it, for a given identity (pure)."""
    state, first_install = apply_event(before, event)
    return attributed_outputs(event, identity, state, first_install, config)


def attributed_outputs(
    event: CanonicalEvent,
    identity: ResolvedIdentity,
    attributed: AttributionProfile,
    first_install: bool,
    config: LifecycleConfig,
) -> EventOutputs:
    """What to send for `event` once `apply_event` made `attributed` (pure): lifecycle, calls, row."""
    outcome = apply_lifecycle(attributed, event, config, first_install=first_install)
    calls = build_segment_calls(event, identity, outcome.profile, first_install=first_install)
    lone = not any(call["type"] == "identify" for call in calls)
    pending = pending_traits(outcome.profile)
    ride_along = lone and only_ride_along(pending)
    calls, state = with_lifecycle(calls, event, identity, outcome.profile, outcome.change, pending)
    row = build_warehouse_row(event, identity, state, outcome.revenue_reporting)
    return EventOutputs(
        profile=state,
        first_install=first_install,
        calls=calls,
        row=row,
        change=outcome.change,
        revenue_reporting=outcome.revenue_reporting,
        unconverted_currency=outcome.unconverted_currency,
        ride_along=ride_along,
    )
