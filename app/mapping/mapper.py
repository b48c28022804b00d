"""`map_postback`: one raw postback + one profile -> a `CanonicalEvent`, or a typed `DeadLetter`.

It never raises: a postback that cannot be mapped becomes a dead letter with a reason code, the raw
payload and the profile version, so it can be inspected and replayed after the profile is fixed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import orjson

from app.ids import clean_id, is_zero_ad_id, message_id_for, normalise_email, normalise_phone
from app.lifecycle.rules import is_reengagement_type
from app.mapping.profile import MappingProfile, ProfileLookups
from app.records import (
    Attribution,
    CanonicalEvent,
    DeadLetter,
    DeviceIds,
    EventKind,
    RawPostback,
    utc_now_iso,
)

#: Every reason code `map_postback` can put on a dead letter (stage "mapping").
DEAD_LETTER_REASONS = frozenset(
    {
        "unparseable_timestamp",
        "invalid_revenue",
        "invalid_currency",
        "no_identifier",
        "missing_event_name",
        "unknown_profile",
        "invalid_products",
        "oversize",
        "mapping_error",
        "unknown_event",
    }
)

#: Longer device ids are not real ids (IDFA/GAID are 36 chars, Kochava ids ~35).
MAX_ID_CHARS = 128
MAX_USER_ID_CHARS = 256
#: Longest mapped text value (campaign names, user agents ...). Longer: dead letter `oversize`.
MAX_TEXT_CHARS = 1024
#: Largest serialised canonical event; with the first-touch enrichment and context, every Segment
#: message built from it stays well below Segment's 32 KB per-message limit.
MAX_EVENT_BYTES = 16_000
#: Plausible event times; anything outside is a broken clock or a wrong unit.
_MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Epoch values at or above this are milliseconds (1e11 s would be the year 5138).
_MS_THRESHOLD = Decimal(100_000_000_000)
#: An absurd single revenue value; above it the number is a unit or parsing mistake.
MAX_REVENUE = 1e12

_MACRO_RE = re.compile(r"^\{[A-Za-z0-9_.]+\}$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_EPOCH_RE = re.compile(r"^\d+(\.\d+)?$")
#: What `parse_timestamp` returns: ISO-8601 UTC with milliseconds and `Z`, in 2000-2099.
_CANONICAL_RE = re.compile(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")
_MS_THRESHOLD_INT = 100_000_000_000
_ZONE_WORD_RE = re.compile(r"\s*(UTC|GMT)$", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# A `+02:00` offset whose `+` became a space when an unencoded query string was decoded.
_LOST_PLUS_RE = re.compile(r"^(\S+[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")
_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}\Z")
_PLACEHOLDERS = frozenset({"null", "none", "nil", "undefined", "n/a"})
_PLACEHOLDER_MAX = max(len(word) for word in _PLACEHOLDERS)
_FALSE_WORDS = frozenset({"false", "0", "no", "n", "f"})
_TRUE_WORDS = frozenset({"true", "1", "yes", "y", "t"})
_REENGAGEMENT_WORDS = frozenset({"reengagement", "re-engagement", "re_engagement"})
_IOS_WORDS = ("ios", "iphone", "ipad", "ipod", "tvos", "apple")


class Reject(Exception):
    """Raised inside the mapper for a postback that must be dead-lettered with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---------------------------------------------------------------------------------------------
# Small normalisers (public: the output builders and tests use them)
# ---------------------------------------------------------------------------------------------


def json_safe(value: Any, depth: int = 0) -> Any:
    """A copy that any JSON encoder accepts: finite floats, 53-bit ints, valid UTF-8, str keys.

    Postback params are untrusted; one NaN or a lone surrogate must not crash a later stage.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= 16:
        return _utf8(str(value))[:MAX_TEXT_CHARS]
    if isinstance(value, dict):
        # ASCII text keys and values (nearly every postback parameter) are kept as they are, inline.
        return {
            k if type(k) is str and k.isascii() else _utf8(str(k)): v
            if type(v) is str and v.isascii()
            else json_safe(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return _utf8(str(value))


def _utf8(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def iso_utc(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z` (the form Segment and the warehouse expect)."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: Any) -> str:
    """Normalise Kochava's time forms to ISO-8601 UTC; `ValueError` when it is none of them.

    Accepted: epoch seconds or milliseconds (number or digits), ISO-8601 with or without zone
    (naive means UTC), and Kochava's `YYYY-MM-DD HH:MM:SS`.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        text = repr(value) if isinstance(value, float) else str(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"not a time: {value!r}")
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"not a time: {type(value).__name__}")
    if _CANONICAL_RE.match(text):
        # Already the form this returns (the receiver's `received_at`): only its validity to check.
        try:
            datetime.fromisoformat(text)
        except ValueError:
            pass  # not a real date: the general path below says so
        else:
            return text
    if len(text) <= 18 and text.isascii() and text.isdigit():
        # Whole epoch seconds or milliseconds: the Decimal arithmetic below in integers (exact either way).
        number_int = int(text)
        if number_int >= _MS_THRESHOLD_INT:
            if number_int >= _MS_THRESHOLD_INT * 1000:
                raise ValueError(f"time out of range: {text!r}")
            millis = number_int
        else:
            millis = number_int * 1000
        dt = _EPOCH + timedelta(milliseconds=millis)
    elif _EPOCH_RE.match(text) or (isinstance(value, int | float) and _NUMBER_RE.match(text)):
        try:
            number = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(f"not a time: {text!r}") from exc
        if number >= _MS_THRESHOLD:
            number = number / 1000
        if not Decimal(0) <= number < Decimal(10**11):
            raise ValueError(f"time out of range: {text!r}")
        millis = int((number * 1000).to_integral_value(rounding=ROUND_FLOOR))
        dt = _EPOCH + timedelta(milliseconds=millis)
    else:
        cleaned = _ZONE_WORD_RE.sub("", text)
        cleaned = _LOST_PLUS_RE.sub(r"\1+\2", cleaned)
        try:
            dt = datetime.fromisoformat(cleaned)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 or epoch time: {text[:64]!r}") from exc
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    if not _MIN_TIME <= dt < _MAX_TIME:
        raise ValueError(f"time out of range (2000-2099): {text[:64]!r}")
    return iso_utc(dt)


def parse_revenue(value: Any) -> float:
    """A finite, non-negative amount; `ValueError` otherwise (never silently 0)."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int | float):
        amount = float(value)
    else:
        text = str(value).strip()
        if not _NUMBER_RE.match(text):
            raise ValueError(f"not a number: {text[:64]!r}")
        amount = float(text)
    if not math.isfinite(amount):
        raise ValueError(f"not a finite number: {value!r}")
    if amount < 0:
        raise ValueError(f"negative amount: {value!r}")
    if amount > MAX_REVENUE:
        raise ValueError(f"implausibly large amount: {value!r}")
    return amount + 0.0  # -0.0 -> 0.0


def is_unfilled(value: Any) -> bool:
    """Empty, a placeholder word, or an unfilled Kochava macro such as `{idfa}`: carries no data.

    `na` is deliberately not a placeholder: `NA` is Namibia's country code.
    """
    if value is None:
        return True
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return True
        # Placeholders are short and macros start with a brace: most values skip both checks.
        if len(text) <= _PLACEHOLDER_MAX and text.lower() in _PLACEHOLDERS:
            return True
        return text[0] == "{" and bool(_MACRO_RE.match(text))
    return False


# ---------------------------------------------------------------------------------------------
# The mapper
# ---------------------------------------------------------------------------------------------


class _Params:
    """Case-insensitive view of the params, with the keys the profile's fields consume (kept out of the
    properties): for each lowercased key, its first spelling in the params."""

    def __init__(self, params: dict[str, Any], lookups: ProfileLookups) -> None:
        self.params = params
        self.by_lower: dict[str, str] = {}
        for key in params:
            self.by_lower.setdefault(key.lower(), key)
        keys = lookups.field_keys
        self.consumed = {key for low, key in self.by_lower.items() if low in keys}

    def pick(self, aliases: tuple[str, ...]) -> tuple[str, Any] | None:
        """First alias (lowercased, one of the profile's field keys) with a real value (not empty, not an
        unfilled macro)."""
        for alias in aliases:
            key = self.by_lower.get(alias)
            if key is not None and not is_unfilled(self.params[key]):
                return key, self.params[key]
        return None


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = str(value).strip()
        return text or None
    return None


def dead_letter(
    raw: RawPostback,
    profile: MappingProfile | None,
    reason: str,
    message: str,
    *,
    profile_name: str | None = None,
) -> DeadLetter:
    """A mapping-stage dead letter carrying the raw postback and the profile it was mapped with."""
    try:
        payload = json_safe(raw.model_dump())
    except Exception:  # pragma: no cover - model_dump of a valid model does not fail
        payload = {"event_id": raw.event_id}
    return DeadLetter(
        stage="mapping",
        reason=reason,
        error=message[:2000],
        event_id=raw.event_id,
        profile=profile.name if profile else profile_name,
        profile_version=profile.version if profile else None,
        payload=payload,
    )


def dead_letter_unknown_profile(raw: RawPostback, name: str) -> DeadLetter:
    """For callers that looked a profile up and did not find it."""
    return dead_letter(raw, None, "unknown_profile", f"no mapping profile named {name!r}", profile_name=name)


def map_postback(raw: RawPostback, profile: MappingProfile, namespace: str) -> CanonicalEvent | DeadLetter:
    """Map one postback with `profile`. Never raises: failures come back as a `DeadLetter`."""
    try:
        return _map(raw, profile, namespace)
    except Reject as rej:
        return dead_letter(raw, profile, rej.reason, rej.message)
    except Exception as exc:  # the contract is "never raises": keep the record, say what broke
        return dead_letter(raw, profile, "mapping_error", f"{type(exc).__name__}: {exc}")


def _text(p: _Params, aliases: tuple[str, ...], field: str) -> str | None:
    hit = p.pick(aliases)
    if hit is None:
        return None
    text = _scalar_text(hit[1])
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise Reject("oversize", f"{field} ({hit[0]}) is {len(text)} characters, more than {MAX_TEXT_CHARS}")
    return text


def _device_id(
    p: _Params, aliases: tuple[str, ...], limit: int = MAX_ID_CHARS
) -> tuple[str | None, bool, bool]:
    """(usable id, present at all, zeroed) for one id field."""
    hit = p.pick(aliases)
    if hit is None:
        return None, False, False
    text = _scalar_text(hit[1])
    if text is None:
        return None, False, False
    usable = clean_id(text)
    if usable is not None and len(usable) > limit:
        usable = None
    return usable, True, is_zero_ad_id(text)


def _map(raw: RawPostback, profile: MappingProfile, namespace: str) -> CanonicalEvent:
    lookups = profile.lookups
    f = lookups.fields
    params = json_safe(raw.params) if isinstance(raw.params, dict) else {}
    p = _Params(params, lookups)  # mapped keys never leak into properties

    event_name = _text(p, f["event_name"], "event_name")
    if not event_name:
        raise Reject("missing_event_name", f"no event name in any of {profile.fields.event_name}")

    kochava_device_id, _, _ = _device_id(p, f["kochava_device_id"])
    idfa, idfa_present, idfa_zero = _device_id(p, f["idfa"])
    idfv, idfv_present, _ = _device_id(p, f["idfv"])
    adid, adid_present, adid_zero = _device_id(p, f["adid"])
    android_id, android_present, _ = _device_id(p, f["android_id"])
    user_id, _, _ = _device_id(p, f["user_id"], MAX_USER_ID_CHARS)
    devices = DeviceIds(
        kochava_device_id=kochava_device_id, idfa=idfa, idfv=idfv, adid=adid, android_id=android_id
    )
    if not devices.typed() and not user_id:
        raise Reject("no_identifier", "no usable device id (after junk filtering) and no user id")

    received_at = _received_at(raw.received_at)
    ts_hit = p.pick(f["timestamp"])
    if ts_hit is None:
        timestamp = received_at
    else:
        try:
            timestamp = parse_timestamp(ts_hit[1])
        except ValueError as exc:
            raise Reject("unparseable_timestamp", f"{ts_hit[0]}: {exc}") from None

    revenue: float | None = None
    rev_hit = p.pick(f["revenue"])
    if rev_hit is not None:
        try:
            revenue = parse_revenue(rev_hit[1])
        except ValueError as exc:
            raise Reject("invalid_revenue", f"{rev_hit[0]}: {exc}") from None

    currency = _text(p, f["currency"], "currency")
    if currency is not None:
        currency = currency.upper()
        if not _CURRENCY_RE.match(currency):
            raise Reject("invalid_currency", f"currency {currency[:32]!r} is not a 3-letter ISO 4217 code")

    products = _products(p, profile)

    attribution_type = _text(p, f["attribution_type"], "attribution_type")
    attribution_type = attribution_type.lower() if attribution_type else None
    reengagement = is_reengagement_type(attribution_type, profile.lifecycle)
    if attribution_type in _REENGAGEMENT_WORDS:
        attribution_type = "reengagement"
    elif reengagement and attribution_type and "attribution" in attribution_type:
        attribution_type = "reattribution"
    country = _text(p, f["country"], "country")
    if country and country.isalpha() and len(country) <= 3:
        country = country.upper()
    attribution = Attribution(
        network=_text(p, f["network"], "network"),
        campaign=_text(p, f["campaign"], "campaign"),
        ad_group=_text(p, f["ad_group"], "ad_group"),
        creative=_text(p, f["creative"], "creative"),
        site=_text(p, f["site"], "site"),
        sub_site=_text(p, f["sub_site"], "sub_site"),
        tracker=_text(p, f["tracker"], "tracker"),
        click_id=_text(p, f["click_id"], "click_id"),
        country=country,
        attribution_type=attribution_type,
        attributed_at=timestamp,
    )

    install_id, _, _ = _device_id(p, f["install_id"])
    reprocess_for, _, _ = _device_id(p, f["reprocess_for"])
    first_flag = (_text(p, f["is_first_install"], "is_first_install") or "").lower()
    kind: EventKind
    conversion_name: str | None = None
    if profile.is_install(event_name):
        kind = "reinstall" if reprocess_for or first_flag in _FALSE_WORDS else "install"
        segment_name = profile.segment_name(event_name) or "Install Attributed"
    else:
        if profile.unknown_events == "quarantine" and not profile.names_event(event_name):
            raise Reject(
                "unknown_event", f"event {event_name[:128]!r} is not named by profile {profile.name!r}"
            )
        segment_name = profile.segment_name(event_name) or event_name
        if profile.is_purchase(event_name):
            kind = "purchase"
        elif profile.is_conversion(event_name):
            kind = "conversion"
            conversion_name = segment_name
        else:
            kind = "event"

    platform = (_text(p, f["platform"], "platform") or "").lower()
    device_type = _device_type(idfa_present or idfv_present, adid_present or android_present, platform)
    ad_tracking = _ad_tracking(device_type, idfa, idfa_zero, adid, adid_zero)

    ip_text = _text(p, f["ip"], "ip")
    user_agent = _text(p, f["user_agent"], "user_agent")
    email = normalise_email(_text(p, f["email"], "email"))
    phone = normalise_phone(_text(p, f["phone"], "phone"))
    order_id = _text(p, f["order_id"], "order_id")

    properties = _properties(p, profile)

    event = CanonicalEvent(
        event_id=raw.event_id,
        message_id=message_id_for(namespace, raw.event_id, "track"),
        kind=kind,
        reengagement=reengagement,
        kochava_event_name=event_name,
        segment_event_name=segment_name,
        timestamp=timestamp,
        received_at=received_at,
        devices=devices,
        device_type=device_type,
        ad_tracking_enabled=ad_tracking,
        attribution=attribution,
        revenue=revenue,
        currency=currency,
        order_id=order_id,
        products=products,
        conversion_name=conversion_name,
        original_install_id=reprocess_for if kind == "reinstall" else None,
        install_id=install_id,
        properties=properties,
        ip=_valid_ip(ip_text),
        user_agent=user_agent,
        user_id=user_id,
        email=email,
        phone=phone,
        profile=profile.name,
        profile_version=profile.version,
    )
    size = len(orjson.dumps(event.model_dump()))
    if size > MAX_EVENT_BYTES:
        raise Reject("oversize", f"mapped event is {size} bytes, more than {MAX_EVENT_BYTES}")
    return event


def _received_at(value: Any) -> str:
    try:
        return parse_timestamp(value)
    except ValueError:
        return utc_now_iso()


def _device_type(ios_ids: bool, android_ids: bool, platform: str) -> Any:
    """idfa/idfv say iOS, adid/android_id say Android; the platform field only breaks ties."""
    if ios_ids and not android_ids:
        return "ios"
    if android_ids and not ios_ids:
        return "android"
    if platform.startswith(_IOS_WORDS):
        return "ios"
    if platform.startswith("android"):
        return "android"
    return None


def _ad_tracking(
    device_type: str | None, idfa: str | None, idfa_zero: bool, adid: str | None, adid_zero: bool
) -> bool | None:
    """True with a usable ad id, False with a zeroed one (LAT/ATT opt-out), None when unknown."""
    if device_type == "ios":
        return True if idfa else (False if idfa_zero else None)
    if device_type == "android":
        return True if adid else (False if adid_zero else None)
    if idfa or adid:
        return True
    if idfa_zero or adid_zero:
        return False
    return None


def _valid_ip(text: str | None) -> str | None:
    if not text:
        return None
    if _IPV4_RE.match(text):
        return text  # dotted-quad without leading zeros: already what `ip_address` would print
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _lookup(item: dict[str, Any], lower: dict[str, str], aliases: tuple[str, ...]) -> tuple[str, Any] | None:
    """First of `aliases` (lowercased) with a real value in `item`; `lower` maps its lowercased keys to
    its own (the last of equal ones)."""
    for alias in aliases:
        key = lower.get(alias)
        if key is not None and not is_unfilled(item[key]):
            return key, item[key]
    return None


def _products(p: _Params, profile: MappingProfile) -> list[dict[str, Any]] | None:
    """Item data (a JSON string in a GET, or a list in a JSON body) as Segment products."""
    hit = p.pick(profile.lookups.fields["products"])
    if hit is None:
        return None
    key, value = hit
    if isinstance(value, str):
        try:
            value = json_safe(json.loads(value))
        except (ValueError, RecursionError) as exc:
            raise Reject("invalid_products", f"{key} is not valid JSON: {exc}") from None
    if isinstance(value, dict):
        inner = next((value[k] for k in ("products", "items") if isinstance(value.get(k), list)), None)
        value = inner if inner is not None else [value]
    if not isinstance(value, list):
        raise Reject("invalid_products", f"{key} must be a list of objects, got {type(value).__name__}")
    products: list[dict[str, Any]] = []
    keys = profile.lookups.product_keys
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise Reject("invalid_products", f"{key}[{n}] must be an object, got {type(item).__name__}")
        out: dict[str, Any] = {}
        used: set[str] = set()
        lower = {k.lower(): k for k in item}
        for seg_field, aliases in keys.items():
            used.update(k for k in item if k.lower() in aliases)
            found = _lookup(item, lower, aliases)
            if found is None:
                continue
            if seg_field in ("price", "quantity"):
                try:
                    number = parse_revenue(found[1])
                except ValueError as exc:
                    raise Reject("invalid_products", f"{key}[{n}].{found[0]}: {exc}") from None
                out[seg_field] = int(number) if seg_field == "quantity" and number.is_integer() else number
            else:
                text = _scalar_text(found[1])
                if text is not None:
                    out[seg_field] = text
        for k, v in item.items():
            if k not in used and k not in out and not is_unfilled(v):
                out[k] = v
        products.append(out)
    return products or None


def _properties(p: _Params, profile: MappingProfile) -> dict[str, Any]:
    """Everything the profile did not map, minus credentials/identifiers and empty macros."""
    props: dict[str, Any] = {}
    lookups = profile.lookups
    data_hit = p.pick(lookups.fields["event_data"])
    if data_hit is not None:
        data = data_hit[1]
        if isinstance(data, str):
            with contextlib.suppress(ValueError, RecursionError):
                data = json_safe(json.loads(data))
        if isinstance(data, dict):
            props.update({k: v for k, v in data.items() if not lookups.dropped(k) and not is_unfilled(v)})
        else:
            props[data_hit[0]] = data
    for key, value in p.params.items():
        if key in p.consumed or lookups.dropped(key) or is_unfilled(value):
            continue
        props[key] = value
    return props
