"""Segment messages for one canonical event: pure, deterministic, ready for `/v1/batch`.

Deterministic messageIds (derived from the event's own) let Segment drop the duplicates that
at-least-once delivery produces; every call gets its own id so an identify never shadows a track.
"""

from __future__ import annotations

from typing import Any

from app.ids import kseg_uuid5
from app.lifecycle.signals import STAGE_CHANGED_EVENT, StageChange
from app.lifecycle.traits import mark_sent, pending_traits
from app.records import Attribution, AttributionProfile, CanonicalEvent, ResolvedIdentity

PROVIDER = "Kochava"
INSTALL_EVENT = "Install Attributed"
REENGAGEMENT_EVENT = "Re-engagement Attributed"


def call_message_id(event: CanonicalEvent, part: str) -> str:
    """The event's messageId for its main track, a uuid5 of it for every other call (< 100 chars)."""
    if part == "track":
        return event.message_id
    return kseg_uuid5(f"{event.message_id}:{part}")


def campaign_object(touch: Attribution | None) -> dict[str, str]:
    """Segment's `properties.campaign` for an attribution (Kochava segment = ad group)."""
    if touch is None:
        return {}
    content = "/".join(v for v in (touch.site, touch.sub_site) if v) or None
    fields = {
        "source": touch.network,
        "name": touch.campaign,
        "content": content,
        "ad_creative": touch.creative,
        "ad_group": touch.ad_group,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _context(event: CanonicalEvent) -> dict[str, Any]:
    """A fresh context per call (the Segment client mutates the dict it is given)."""
    ids = event.devices
    if event.device_type == "ios":
        device_id, ad_id = ids.idfv or ids.kochava_device_id, ids.idfa
    elif event.device_type == "android":
        device_id, ad_id = ids.android_id or ids.kochava_device_id, ids.adid
    else:
        device_id, ad_id = ids.idfv or ids.android_id or ids.kochava_device_id, ids.idfa or ids.adid
    # A usable id is never sent next to adTrackingEnabled=false, and a zeroed one is never sent.
    if event.ad_tracking_enabled is False:
        ad_id = None
    device = _compact(
        {
            "id": device_id,
            "advertisingId": ad_id,
            "adTrackingEnabled": event.ad_tracking_enabled,
            "type": event.device_type,
        }
    )
    context: dict[str, Any] = {}
    if device:
        context["device"] = device
    if event.ip:
        context["ip"] = event.ip
    if event.user_agent:
        context["userAgent"] = event.user_agent
    context["library"] = {"name": "kseg"}
    context["kseg"] = _compact(
        {
            "profile": event.profile,
            "profile_version": event.profile_version,
            "event_id": event.event_id,
            "kochava_device_id": ids.kochava_device_id,
        }
    )
    return context


def _base(event: CanonicalEvent, identity: ResolvedIdentity, call_type: str, part: str) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": call_type,
        "messageId": call_message_id(event, part),
        "timestamp": event.timestamp,
        "anonymousId": identity.anonymous_id,
    }
    if identity.user_id:
        msg["userId"] = identity.user_id
    msg["context"] = _context(event)
    return msg


def _track(
    event: CanonicalEvent, identity: ResolvedIdentity, name: str, props: dict[str, Any], part: str
) -> dict[str, Any]:
    msg = _base(event, identity, "track", part)
    msg["event"] = name
    msg["properties"] = props
    return msg


def _attribution_details(touch: Attribution) -> dict[str, Any]:
    """Kochava fields the campaign object has no slot for, kept flat so nothing is lost."""
    return _compact(
        {
            "site_id": touch.site,
            "sub_site_id": touch.sub_site,
            "tracker": touch.tracker,
            "click_id": touch.click_id,
            "country": touch.country,
            "attribution_type": touch.attribution_type,
        }
    )


def _install_fields(first: Attribution | None) -> dict[str, Any]:
    """First-touch (install) attribution on value events, so ROAS can be computed per campaign."""
    if first is None:
        return {}
    return _compact(
        {
            "install_network": first.network,
            "install_campaign": first.campaign,
            "install_ad_group": first.ad_group,
            "install_creative": first.creative,
            "install_site": first.site,
            "install_time": first.attributed_at,
        }
    )


def _value_fields(event: CanonicalEvent) -> dict[str, Any]:
    return _compact({"revenue": event.revenue, "currency": event.currency})


def _event_campaign(event: CanonicalEvent, profile: AttributionProfile) -> dict[str, str]:
    """The event's own attribution when the postback carries one, else the device's first touch."""
    own = campaign_object(event.attribution)
    return own or campaign_object(profile.first_touch)


def _identity_traits(identity: ResolvedIdentity) -> dict[str, Any]:
    """Hashed email/phone only; a raw email only when the identity stage was allowed to keep it."""
    return _compact(
        {
            "email": identity.email,
            "email_sha256": identity.email_hash,
            "phone_sha256": identity.phone_hash,
        }
    )


def _value_event_properties(
    event: CanonicalEvent, profile: AttributionProfile, touch: Attribution
) -> dict[str, Any]:
    """A purchase's or conversion's properties: its value and items, its campaign, and the install's first
    touch as flat `install_*` fields, so revenue can be tied to the paid campaign (ROAS)."""
    props = {**event.properties, **_compact({"order_id": event.order_id}), **_value_fields(event)}
    if event.products:
        props["products"] = event.products
    campaign = _event_campaign(event, profile)
    if campaign:
        props["campaign"] = campaign
    props.update(_install_fields(profile.first_touch))
    props.update(_compact({"attribution_type": touch.attribution_type}))
    return props


def build_segment_calls(
    event: CanonicalEvent, identity: ResolvedIdentity, profile: AttributionProfile, *, first_install: bool
) -> list[dict[str, Any]]:
    """Every Segment call for one event, identify first so traits are set when the track lands.

    `profile` is the device state after `apply_event`; `first_install` comes from it too.
    """
    touch = event.attribution
    traits: dict[str, Any] = {}
    tracks: list[dict[str, Any]] = []

    if event.kind in ("install", "reinstall"):
        props: dict[str, Any] = {**event.properties, "provider": PROVIDER}
        campaign = campaign_object(touch)
        if campaign:
            props["campaign"] = campaign
        props.update(_attribution_details(touch))
        if event.install_id:
            props["install_id"] = event.install_id
        if event.kind == "install" and first_install and profile.lifecycle.acquisition_channel:
            props["channel"] = profile.lifecycle.acquisition_channel
            props["paid"] = bool(profile.lifecycle.acquisition_paid)
        if event.kind == "install" and first_install:
            traits.update(
                _compact(
                    {
                        "kochava_network": touch.network,
                        "kochava_campaign": touch.campaign,
                        "kochava_ad_group": touch.ad_group,
                        "kochava_creative": touch.creative,
                        "kochava_site": touch.site,
                        "kochava_sub_site": touch.sub_site,
                        "kochava_tracker": touch.tracker,
                        "kochava_click_id": touch.click_id,
                        "kochava_country": touch.country,
                        "kochava_install_time": event.timestamp,
                    }
                )
            )
        else:
            props["reinstall"] = True
            original = event.original_install_id or profile.install_id
            if original and original != event.install_id:
                props["original_install_id"] = original
            traits.update(
                _compact(
                    {
                        "last_reinstall_at": event.timestamp,
                        "last_reinstall_network": touch.network,
                        "last_reinstall_campaign": touch.campaign,
                    }
                )
            )
        tracks.append(_track(event, identity, event.segment_event_name, props, "track"))

    elif event.kind in ("purchase", "conversion"):
        props = _value_event_properties(event, profile, touch)
        # converted_at / conversion_name are lifecycle traits (app.lifecycle.traits): sent once, on change.
        tracks.append(_track(event, identity, event.segment_event_name, props, "track"))

    else:
        props = {**event.properties, **_value_fields(event)}
        props.update(_compact({"order_id": event.order_id}))
        if event.products:
            props["products"] = event.products
        campaign = campaign_object(touch)
        if campaign:
            props["campaign"] = campaign
        props.update(_compact({"attribution_type": touch.attribution_type}))
        tracks.append(_track(event, identity, event.segment_event_name, props, "track"))

    if event.reengagement:
        reprops: dict[str, Any] = {"provider": PROVIDER}
        campaign = campaign_object(touch)
        if campaign:
            reprops["campaign"] = campaign
        reprops.update(_attribution_details(touch))
        reprops["trigger_event"] = event.segment_event_name
        if profile.lifecycle.reengagement_channel:
            reprops["channel"] = profile.lifecycle.reengagement_channel
        tracks.append(_track(event, identity, REENGAGEMENT_EVENT, reprops, "reengagement"))
        traits.update(
            _compact(
                {
                    "last_reengagement_at": event.timestamp,
                    "last_reengagement_network": touch.network,
                    "last_reengagement_campaign": touch.campaign,
                }
            )
        )

    calls: list[dict[str, Any]] = []
    if traits:
        identify = _base(event, identity, "identify", "identify")
        identify["traits"] = {**traits, **_identity_traits(identity)}
        calls.append(identify)
    calls.extend(tracks)
    return calls


def with_lifecycle(
    calls: list[dict[str, Any]],
    event: CanonicalEvent,
    identity: ResolvedIdentity,
    profile: AttributionProfile,
    change: StageChange | None,
    pending: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], AttributionProfile]:
    """The event's calls with its lifecycle signals, and the profile marked as told.

    Changed lifecycle traits join the event's identify (or one identify of their own, first, so the traits
    are set when the tracks land); nothing is added when nothing a marketer builds on changed. A stage
    change adds one `Lifecycle Stage Changed` track {from, to, reason}. `pending` is
    `pending_traits(profile)` when the caller has it already.
    """
    if pending is None:
        pending = pending_traits(profile)
    out = list(calls)
    if pending:
        at = next((i for i, c in enumerate(out) if c["type"] == "identify"), None)
        if at is None:
            identify = _base(event, identity, "identify", "lifecycle")
            identify["traits"] = {**pending, **_identity_traits(identity)}
            out.insert(0, identify)
        else:
            out[at] = {**out[at], "traits": {**out[at]["traits"], **pending}}
    if change is not None:
        props = _compact({"from": change.from_stage, "to": change.to_stage, "reason": change.reason})
        props.update(_compact({"acquisition_channel": profile.lifecycle.acquisition_channel}))
        out.append(_track(event, identity, STAGE_CHANGED_EVENT, props, "stage"))
    return out, mark_sent(profile, pending)
