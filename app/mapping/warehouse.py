"""One flat, typed warehouse row per event (schema: topics/schemas/warehouse-row.schema.json).

Flat columns load into any warehouse without JSON functions; the nested parts (products, leftover
properties) are JSON text columns. Every column is always present so loaders never guess.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.records import AttributionProfile, CanonicalEvent, ResolvedIdentity

#: Column order of the row (the schema file lists the same columns).
WAREHOUSE_COLUMNS = (
    "event_id",
    "message_id",
    "event_type",
    "event_name",
    "segment_event",
    "event_time",
    "received_at",
    "kochava_device_id",
    "idfa",
    "idfv",
    "adid",
    "android_id",
    "device_type",
    "ad_tracking_enabled",
    "user_id",
    "anonymous_id",
    "resolved_via",
    "email_sha256",
    "network",
    "campaign",
    "ad_group",
    "creative",
    "site",
    "sub_site",
    "tracker",
    "click_id",
    "country",
    "attribution_type",
    "is_reengagement",
    "install_id",
    "original_install_id",
    "install_network",
    "install_campaign",
    "install_ad_group",
    "install_creative",
    "install_site",
    "install_time",
    "revenue",
    "currency",
    "order_id",
    "product_count",
    "products",
    "conversion_name",
    "lifetime_revenue",
    "purchase_count",
    "converted",
    "converted_at",
    "properties",
    "profile",
    "profile_version",
    # lifecycle signals (app.lifecycle; names fixed by the team contract)
    "acquisition_channel",
    "acquisition_paid",
    "reengagement_channel",
    "lifecycle_stage",
    "winback_suppress_until",
    "ad_suppressed",
    "revenue_reporting",
    "reporting_currency",
    "ltv_revenue",
    "ltv_tier",
)


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def build_warehouse_row(
    event: CanonicalEvent,
    identity: ResolvedIdentity,
    profile: AttributionProfile,
    revenue_reporting: float | None = None,
) -> dict[str, Any]:
    """The row for one event; `profile` is the device state after the event (first touch, totals, lifecycle);
    `revenue_reporting` the event's revenue in the reporting currency (None: no revenue or no rate)."""
    touch = event.attribution
    first = profile.first_touch
    life = profile.lifecycle
    ids = event.devices
    row: dict[str, Any] = {
        "event_id": event.event_id,
        "message_id": event.message_id,
        "event_type": event.kind,
        "event_name": event.kochava_event_name,
        "segment_event": event.segment_event_name,
        "event_time": event.timestamp,
        "received_at": event.received_at,
        "kochava_device_id": ids.kochava_device_id,
        "idfa": ids.idfa,
        "idfv": ids.idfv,
        "adid": ids.adid,
        "android_id": ids.android_id,
        "device_type": event.device_type,
        "ad_tracking_enabled": event.ad_tracking_enabled,
        "user_id": identity.user_id,
        "anonymous_id": identity.anonymous_id,
        "resolved_via": identity.via,
        "email_sha256": identity.email_hash,
        "network": touch.network,
        "campaign": touch.campaign,
        "ad_group": touch.ad_group,
        "creative": touch.creative,
        "site": touch.site,
        "sub_site": touch.sub_site,
        "tracker": touch.tracker,
        "click_id": touch.click_id,
        "country": touch.country,
        "attribution_type": touch.attribution_type,
        "is_reengagement": event.reengagement,
        "install_id": event.install_id,
        "original_install_id": event.original_install_id,
        "install_network": first.network if first else None,
        "install_campaign": first.campaign if first else None,
        "install_ad_group": first.ad_group if first else None,
        "install_creative": first.creative if first else None,
        "install_site": first.site if first else None,
        "install_time": first.attributed_at if first else None,
        "revenue": event.revenue,
        "currency": event.currency,
        "order_id": event.order_id,
        "product_count": len(event.products) if event.products else None,
        "products": _json_text(event.products) if event.products else None,
        "conversion_name": event.conversion_name,
        "lifetime_revenue": profile.lifetime_revenue,
        "purchase_count": profile.purchase_count,
        "converted": profile.converted,
        "converted_at": profile.converted_at,
        "properties": _json_text(event.properties),
        "profile": event.profile,
        "profile_version": event.profile_version,
        "acquisition_channel": life.acquisition_channel,
        "acquisition_paid": life.acquisition_paid,
        "reengagement_channel": life.reengagement_channel if event.reengagement else None,
        "lifecycle_stage": life.stage,
        "winback_suppress_until": life.winback_suppress_until,
        "ad_suppressed": life.ad_suppressed,
        "revenue_reporting": revenue_reporting,
        "reporting_currency": life.reporting_currency,
        "ltv_revenue": life.ltv_revenue if profile.purchase_count else None,
        "ltv_tier": life.ltv_tier,
    }
    return row  # built in `WAREHOUSE_COLUMNS` order, every column (test_mapping_segment checks)
