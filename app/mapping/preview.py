"""`kseg mapping try`: show what one postback would become, without Kafka or any state.

The preview runs the real mapper and builders with an anonymous identity and an empty device
profile, so what it prints is exactly what a first-seen device would produce.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from app.ids import anonymous_id_for, sha256_hex
from app.lifecycle.config import LifecycleConfig, lifecycle_config
from app.lifecycle.currency import Rates, load_rates
from app.mapping.mapper import dead_letter_unknown_profile, map_postback
from app.mapping.outputs import event_outputs
from app.mapping.profile import ProfileRegistry, UnknownProfile
from app.records import (
    AttributionProfile,
    CanonicalEvent,
    DeadLetter,
    RawPostback,
    ResolvedIdentity,
    device_key_of,
)
from app.sections import LifecycleSettings

DEFAULT_PROFILE = "kochava-default"


def anonymous_identity(
    event: CanonicalEvent, namespace: str, device_key: str | None = None
) -> ResolvedIdentity:
    """The identity a device gets before any link: anonymousId from its device key (as the worker does)."""
    device_key = device_key or next((v for v in event.devices.model_dump().values() if v), None)
    key = device_key or f"user:{event.user_id}"
    return ResolvedIdentity(
        user_id=event.user_id,
        anonymous_id=anonymous_id_for(namespace, key),
        via="user_id" if event.user_id else "anonymous",
        email_hash=sha256_hex(event.email) if event.email else None,
        phone_hash=sha256_hex(event.phone) if event.phone else None,
    )


def _dead(letter: DeadLetter) -> dict[str, Any]:
    return {"dead_letter": letter.model_dump(mode="json")}


def preview(
    raw: RawPostback,
    registry: ProfileRegistry,
    namespace: str,
    profile_name: str | None = None,
    settings: LifecycleSettings | None = None,
    rates: Rates | None = None,
) -> dict[str, Any]:
    """{"lifecycle": {...}, "segment": [...], "warehouse": {...}} for a mappable postback, else
    {"dead_letter": {...}}. Lifecycle uses `settings`/`rates` (default: USD and the packaged rates)."""
    name = profile_name or raw.profile or DEFAULT_PROFILE
    try:
        profile = registry.get(name)
    except UnknownProfile:
        return _dead(dead_letter_unknown_profile(raw, name))
    result = map_postback(raw, profile, namespace)
    if isinstance(result, DeadLetter):
        return _dead(result)
    identity = anonymous_identity(result, namespace, device_key_of(raw.params))
    if settings is not None:
        rates = rates or load_rates(settings.kseg_currency_rates_file, settings.kseg_reporting_currency)
        config = lifecycle_config(profile.lifecycle, settings, rates)
    else:
        config = LifecycleConfig(rates=rates or load_rates(None, "USD"), rules=profile.lifecycle)
    out = event_outputs(result, identity, AttributionProfile(anonymous_id=identity.anonymous_id), config)
    state = out.profile
    life = state.lifecycle
    summary = {
        "acquisition_channel": life.acquisition_channel,
        "acquisition_paid": life.acquisition_paid,
        "event_channel": life.reengagement_channel if result.reengagement else None,
        "reengagement": result.reengagement,
        "stage": life.stage,
        "revenue_reporting": out.revenue_reporting,
        "reporting_currency": life.reporting_currency,
    }
    return {"lifecycle": summary, "segment": out.calls, "warehouse": out.row}


def parse_try_input(text: str) -> dict[str, Any]:
    """Params from what an operator pastes: a JSON object, a query string (with or without `?`),
    or a whole URL / path with its query. Raw whitespace is dropped from query strings so a URL
    copied across several lines still parses (real spaces are encoded as `+` or `%20`)."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty input: paste a query string, a postback URL or a JSON object")
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("JSON input must be an object of postback parameters")
        return value
    compact = "".join(stripped.split())
    if "?" in compact:
        query = compact.split("?", 1)[1]
    elif "://" in compact or compact.startswith("/"):
        query = urlsplit(compact).query
    else:
        query = compact
    query = query.split("#", 1)[0]
    params = dict(parse_qsl(query, keep_blank_values=True)) if "=" in query else {}
    if not params:
        raise ValueError("no key=value parameters found in the input")
    return params
