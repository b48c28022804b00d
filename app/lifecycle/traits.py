"""The lifecycle traits of a profile, and which of them Segment has not been told yet (send on change only).

Every trait is sent whenever it changes, lifetime revenue and purchase count included: a stale trait is
worse than none. An identify that carries nothing but those two (`RIDE_ALONG`) is the one a purchase
stream repeats, so the processing agent coalesces them to one per device per micro-batch
(`app.pipeline.steps`); signals a marketer builds on (channel, stage, suppression, LTV tier) always go out
with their own event.
"""

from __future__ import annotations

from typing import Any

from app.records import AttributionProfile

#: Traits whose identify (when they are all that changed) may be coalesced within a micro-batch.
RIDE_ALONG = frozenset({"ltv_revenue", "purchase_count"})


def lifecycle_traits(profile: AttributionProfile) -> dict[str, Any]:
    """Every lifecycle trait the profile has (absent ones left out)."""
    life = profile.lifecycle
    traits: dict[str, Any] = {
        "acquisition_channel": life.acquisition_channel,
        "acquisition_paid": life.acquisition_paid,
        "lifecycle_stage": life.stage,
        "last_reengagement_channel": life.reengagement_channel,
        "winback_suppress_until": life.winback_suppress_until,
    }
    if profile.converted:
        traits.update(converted_at=profile.converted_at, conversion_name=profile.conversion_name)
    if life.ad_suppressed:
        traits.update(
            ad_suppressed=True,
            ad_suppressed_at=life.ad_suppressed_at,
            ad_suppression_reason=life.ad_suppression_reason,
        )
    if profile.purchase_count > 0:
        traits.update(
            ltv_revenue=round(life.ltv_revenue, 2),
            ltv_currency=life.reporting_currency,
            purchase_count=profile.purchase_count,
            ltv_tier=life.ltv_tier,
        )
    if life.revenue_without_rate:
        traits["ltv_revenue_without_rate"] = dict(sorted(life.revenue_without_rate.items()))
    return {k: v for k, v in traits.items() if v is not None}


def pending_traits(profile: AttributionProfile) -> dict[str, Any]:
    """The lifecycle traits to send now: every one that changed since the last send."""
    current = lifecycle_traits(profile)
    sent = profile.lifecycle.sent
    return {k: v for k, v in current.items() if sent.get(k) != v}


def only_ride_along(traits: dict[str, Any]) -> bool:
    """Whether `traits` (pending lifecycle traits) hold nothing but lifetime revenue and purchase count."""
    return bool(traits) and traits.keys() <= RIDE_ALONG


def mark_sent(profile: AttributionProfile, traits: dict[str, Any]) -> AttributionProfile:
    """The profile after `traits` went out (stored with it, so a replay of the batch sends them again)."""
    if not traits:
        return profile
    life = profile.lifecycle.model_copy(update={"sent": {**profile.lifecycle.sent, **traits}})
    return profile.model_copy(update={"lifecycle": life})
