"""The lifecycle traits of a profile, and which of them Segment has not been told yet (send on change only).

Lifetime revenue and purchase count ride along with any identify but do not trigger one by themselves: an
identify goes out when a signal a marketer builds on changes (channel, stage, suppression, LTV tier), so a
stream of purchases inside one tier sends no identify storm.
"""

from __future__ import annotations

from typing import Any

from app.records import AttributionProfile

#: Traits that change without triggering an identify (they are sent with the next one).
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
    """The lifecycle traits to send now: empty unless a triggering trait changed since the last send."""
    current = lifecycle_traits(profile)
    sent = profile.lifecycle.sent
    changed = {k: v for k, v in current.items() if sent.get(k) != v}
    if not any(k not in RIDE_ALONG for k in changed):
        return {}
    return changed


def mark_sent(profile: AttributionProfile, traits: dict[str, Any]) -> AttributionProfile:
    """The profile after `traits` went out (stored with it, so a replay of the batch sends them again)."""
    if not traits:
        return profile
    new = profile.model_copy(deep=True)
    new.lifecycle.sent = {**new.lifecycle.sent, **traits}
    return new
