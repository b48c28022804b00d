"""`apply_lifecycle`: one event's effect on a profile's lifecycle signals (pure).

Stage: installed → active (first post-install event) → converted (first conversion); reengaged on a
re-engagement or re-attribution; reinstalled on a recognised reinstall (also when Kochava attributes it to
a re-engagement campaign: the win-back window and re-engagement channel are set all the same). First touch
(acquisition channel) is set once and never moved by a re-engagement, which records its own channel.
Win-back suppression runs from the re-engagement's event time; ad suppression is set once, on the first
conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.lifecycle.config import LifecycleConfig
from app.lifecycle.currency import to_reporting
from app.lifecycle.rules import channel_of
from app.records import AttributionProfile, CanonicalEvent, LifecycleStage

#: The Segment track a Journey triggers on.
STAGE_CHANGED_EVENT = "Lifecycle Stage Changed"


@dataclass(frozen=True)
class StageChange:
    """One stage transition, as `Lifecycle Stage Changed` {from, to, reason}."""

    from_stage: str | None
    to_stage: str
    reason: str
    at: str


@dataclass(frozen=True)
class LifecycleOutcome:
    profile: AttributionProfile
    change: StageChange | None
    #: The event's revenue in the reporting currency (None: no revenue, or no rate for its currency).
    revenue_reporting: float | None
    #: The currency of a revenue that could not be converted (counted in a metric by the caller).
    unconverted_currency: str | None = None


def _iso_plus_days(iso: str, days: float) -> str:
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00")) + timedelta(days=days)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _later(a: str | None, b: str) -> str:
    if a is None:
        return b
    try:
        ta = datetime.fromisoformat(a.replace("Z", "+00:00"))
        tb = datetime.fromisoformat(b.replace("Z", "+00:00"))
    except ValueError:
        return b
    return a if ta >= tb else b


def tier_of(ltv: float, tiers: tuple[tuple[str, float], ...]) -> str | None:
    """The highest tier whose threshold the lifetime revenue reaches."""
    found = None
    for name, threshold in tiers:
        if ltv + 1e-9 >= threshold:
            found = name
    return found


def is_conversion(event: CanonicalEvent, config: LifecycleConfig) -> bool:
    """A profile conversion event, or the device's first purchase when the profile counts it."""
    if event.kind == "conversion":
        return True
    return event.kind == "purchase" and config.rules.first_purchase_converts


def apply_lifecycle(
    profile: AttributionProfile, event: CanonicalEvent, config: LifecycleConfig, *, first_install: bool
) -> LifecycleOutcome:
    """The profile after `event` (which `apply_event` already applied), its stage change, its revenue."""
    # Only the lifecycle part changes here, and only by assigning its fields: two shallow copies suffice.
    life = profile.lifecycle.model_copy()
    new = profile.model_copy(update={"lifecycle": life})
    start: LifecycleStage | None = life.stage
    stage, reason = start, ""

    if life.acquisition_channel is None and new.first_touch is not None:
        # From the first install, or from a first touch inherited by a reinstall: set once, never moved.
        life.acquisition_channel, life.acquisition_paid = channel_of(new.first_touch.network, config.rules)

    if event.kind == "install":
        if stage is None and first_install:
            stage, reason = "installed", "install"
    elif event.kind == "reinstall":
        stage, reason = "reinstalled", "reinstall"
    elif stage in (None, "installed", "reinstalled"):
        stage, reason = "active", "first_event"

    if is_conversion(event, config) and not life.ad_suppressed:
        life.ad_suppressed = True
        life.ad_suppressed_at = event.timestamp
        life.ad_suppression_reason = f"conversion:{event.conversion_name or event.segment_event_name}"
        stage, reason = "converted", "conversion"

    if event.reengagement:
        life.reengagement_channel, _ = channel_of(event.attribution.network, config.rules)
        life.winback_suppress_until = _later(
            life.winback_suppress_until, _iso_plus_days(event.timestamp, config.winback_days)
        )
        if event.kind != "reinstall":  # a reinstall stays `reinstalled`, with the win-back window set
            kind = (event.attribution.attribution_type or "").replace("-", "").replace("_", "")
            reason = "reattribution" if kind.startswith("reattribution") else "reengagement"
            stage = "reengaged"

    revenue_reporting: float | None = None
    unconverted: str | None = None
    life.reporting_currency = config.rates.reporting_currency
    if event.revenue is not None:
        revenue_reporting = to_reporting(event.revenue, event.currency, config.rates)
        if revenue_reporting is None:
            unconverted = (event.currency or "").upper() or None
    if event.kind == "purchase" and event.revenue is not None:
        if revenue_reporting is not None:
            life.ltv_revenue = round(life.ltv_revenue + revenue_reporting, 6)
        elif unconverted:
            life.revenue_without_rate = {
                **life.revenue_without_rate,
                unconverted: round(life.revenue_without_rate.get(unconverted, 0.0) + event.revenue, 6),
            }
    if new.purchase_count > 0:
        life.ltv_tier = tier_of(life.ltv_revenue, config.tiers)

    change = None
    if stage is not None and stage != start:
        life.stage = stage
        life.stage_changed_at = event.timestamp
        change = StageChange(from_stage=start, to_stage=stage, reason=reason, at=event.timestamp)
    return LifecycleOutcome(new, change, revenue_reporting, unconverted)
