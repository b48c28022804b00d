"""HTTP inputs of identity links: the Segment webhook and the links API, routes of the receiver.

Both answer 200 only once every accepted link is durable in Kafka (`identity.links`); Kafka trouble
becomes 503 + Retry-After through the receiver's middleware.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from aiohttp import web

from app import topics
from app.audiences.webhook import publish_membership_changes
from app.identity.metrics import identity_metrics
from app.identity.person import iso, parse_time
from app.identity.records import LinkRequest, to_bytes
from app.identity.webhook import links_from_payload, verify_signature
from app.ids import clean_id, normalise_email, normalise_phone, sha256_hex
from app.receiver.bodies import read_body
from app.receiver.errors import ClientError
from app.receiver.metrics import RECEIVER_METRICS
from app.receiver.parsing import match_token, supplied_token
from app.receiver.privacy_routes import SEGMENT_DELETES
from app.receiver.publisher import Publisher
from app.receiver.ratelimit import LIMITER
from app.records import DeviceIds, utc_now_iso
from app.sections import ReceiverSettings, reveal

WEBHOOK_PATH = "/v1/segment/webhook"
LINKS_PATH = "/v1/identity/links"

#: Actions webhooks batch up to 4,000 calls; a 413 would make Segment discard them, so allow more
#: than postbacks need.
WEBHOOK_MAX_BYTES = 8 * 1024 * 1024

DEVICE_FIELDS = ("kochava_device_id", "idfa", "idfv", "adid", "android_id")
_FIELD_ALIASES = {"gaid": "adid"}
LINK_FIELDS = frozenset({"user_id", "anonymous_id", "email", "phone", "at", *DEVICE_FIELDS, *_FIELD_ALIASES})
#: How far ahead of the receiver's clock a link's `at` may be (the caller's clock skew).
MAX_AT_AHEAD = timedelta(seconds=60)


def link_time(values: dict[str, str], received_at: str) -> str:
    """When the link happened: the body's optional `at` (ISO-8601 with a time zone), else the receive time.

    Links are ordered by it (docs/identity.md): an older link never overrides a newer one. An `at` that is
    not a time, or more than `MAX_AT_AHEAD` after the receive time, is a 400: a link from the future
    would win over every real one.
    """
    raw = values.get("at")
    if raw is None:
        return received_at
    at, received = parse_time(raw), parse_time(received_at)
    if at is None or "T" not in raw:
        raise ClientError(
            400, "invalid_at", "`at` must be an ISO-8601 time, e.g. 2025-01-01T12:00:00Z.", {"field": "at"}
        )
    if received is not None and at > received + MAX_AT_AHEAD:
        raise ClientError(
            400, "invalid_at", "`at` is in the future: send when the link happened.", {"field": "at"}
        )
    return iso(at)


def check_link_token(request: web.Request, settings: ReceiverSettings) -> str:
    """The links API's credential: one of KSEG_LINK_TOKENS, never a postback token.

    Postback URLs are handed to Kochava and ad networks; anyone holding one must not be able to link
    devices to users. 403 names the mistake when a postback token is used here.
    """
    if not settings.link_tokens:
        raise ClientError(
            403,
            "links_api_disabled",
            "The links API is off: set KSEG_LINK_TOKENS on the receiver and send one of them as "
            "`Authorization: Bearer ...`.",
        )
    supplied = supplied_token(request)
    if not supplied:
        raise ClientError(
            401, "missing_token", "Send a KSEG_LINK_TOKENS token as `Authorization: Bearer ...`."
        )
    matched = match_token(supplied, settings.link_tokens)
    if matched is not None:
        return matched
    if match_token(supplied, settings.postback_tokens) is not None:
        raise ClientError(
            403,
            "postback_token_refused",
            "This is a postback token (KSEG_POSTBACK_TOKENS); the links API takes only a "
            "KSEG_LINK_TOKENS token.",
        )
    raise ClientError(401, "invalid_token", "The token is not one of KSEG_LINK_TOKENS.")


def _unauthenticated(code: str, message: str) -> ClientError:
    """A counted 401 for the webhook (Segment discards 401s, so the counter is how anyone notices)."""
    identity_metrics.links_rejected.labels(reason=code).inc()
    return ClientError(401, code, message)


def check_webhook_auth(request: web.Request, raw: bytes, settings: ReceiverSettings) -> tuple[str, bool]:
    """Authenticate one Segment webhook delivery; (rate-limit key, whether the whole body is covered).

    The header secret (a custom header set on the destination) covers every call of a batch; the
    X-Signature HMAC covers the whole body of a classic webhook but only element 0 of an Actions batch.
    Each configured check must pass.
    """
    header_secret = reveal(settings.segment_webhook_header_secret)
    name = settings.segment_webhook_header_name
    if header_secret:
        supplied = request.headers.get(name)
        if not supplied:
            raise _unauthenticated(
                "missing_webhook_header",
                f"The {name} header is missing: add it to the Segment destination's custom headers.",
            )
        if match_token(supplied, [header_secret]) is None:
            raise _unauthenticated(
                "invalid_webhook_header", f"The {name} header does not match SEGMENT_WEBHOOK_HEADER_SECRET."
            )
    if settings.segment_webhook_secret:
        signature = request.headers.get("X-Signature")
        if not signature:
            raise _unauthenticated("missing_signature", "The X-Signature header is missing.")
        if not verify_signature(raw, signature, settings.segment_webhook_secret.get_secret_value()):
            raise _unauthenticated(
                "invalid_signature", "X-Signature does not match the body and the shared secret."
            )
    return header_secret or reveal(settings.segment_webhook_secret), bool(header_secret)


async def publish_links(publisher: Publisher, settings: ReceiverSettings, links: list[LinkRequest]) -> None:
    """Make every link durable (keyed by its first device id); any failure fails the whole request."""
    topic = settings.topic(topics.LINKS)
    await publisher.publish_all(topic, [(link.typed_devices()[0], to_bytes(link)) for link in links])


def parse_link_body(data: Any, received_at: str) -> tuple[LinkRequest, list[str]]:
    """A valid `LinkRequest` from the links API body, and the names of ignored fields; 400 otherwise."""
    if not isinstance(data, dict):
        raise ClientError(400, "invalid_json", "The JSON body must be an object of link fields.")
    ignored = sorted(k for k in data if k not in LINK_FIELDS)
    values: dict[str, str] = {}
    given: dict[str, str] = {}  # canonical name -> the field name it came from
    for name in sorted(LINK_FIELDS & data.keys()):  # sorted: never set order, which varies per process
        value = data[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ClientError(400, "invalid_field", f"`{name}` must be a string.", {"field": name})
        canonical = _FIELD_ALIASES.get(name, name)
        if canonical in values and values[canonical] != str(value):
            # `gaid` is another name for `adid`: two different values are a contradiction, not a choice.
            raise ClientError(
                400,
                "conflicting_fields",
                f"`{given[canonical]}` and `{name}` name the same id with different values; send one.",
                {"fields": [given[canonical], name]},
            )
        values[canonical], given[canonical] = str(value), name

    email_hash = phone_hash = None
    if "email" in values:
        email = normalise_email(values["email"])
        if email is None:
            raise ClientError(400, "invalid_email", "`email` is not an email address.", {"field": "email"})
        email_hash = sha256_hex(email)
    if "phone" in values:
        phone = normalise_phone(values["phone"])
        if phone is None:
            raise ClientError(
                400, "invalid_phone", "`phone` must be E.164: + and 8 to 15 digits.", {"field": "phone"}
            )
        phone_hash = sha256_hex(phone)
    user_id = clean_id(values.get("user_id"))
    if "user_id" in values and user_id is None:
        identity_metrics.junk_ids_blocked.labels(id_type="user_id").inc()
    devices: dict[str, str | None] = {}
    for name in DEVICE_FIELDS:
        devices[name] = clean_id(values.get(name))
        if name in values and devices[name] is None:
            identity_metrics.junk_ids_blocked.labels(id_type=name).inc()

    anonymous_id = clean_id(values.get("anonymous_id"))
    at = link_time(values, received_at)
    content = {
        "user_id": user_id,
        "email_hash": email_hash,
        "phone_hash": phone_hash,
        "anonymous_id": anonymous_id,
        "devices": devices,
    }
    if "at" in values:
        content["at"] = at  # two links of one person at different times are two links (two refs)
    link = LinkRequest(
        link_id=LinkRequest.make_id("api", content),
        source="api",
        user_id=user_id,
        anonymous_id=anonymous_id,
        email_hash=email_hash,
        phone_hash=phone_hash,
        devices=DeviceIds(**devices),
        requested_at=at,
    )
    problem = link.problem()
    if problem == "no_person_id":
        raise ClientError(
            400,
            problem,
            "A link needs a person (`user_id`, `email` or `phone`) or the app's Segment `anonymous_id` "
            "(placeholder values do not count).",
        )
    if problem == "no_device_id":
        raise ClientError(
            400,
            problem,
            "A link needs at least one usable device id (all-zero or placeholder values do not count).",
            {"expected_any_of": [*DEVICE_FIELDS, "gaid"]},
        )
    return link, ignored


def install_identity_routes(app: web.Application, publisher: Publisher) -> None:
    """Add the Segment webhook and the links API to the receiver.

    Settings come from the publisher (the receiver builds it from the same `Settings`).
    """
    settings = publisher.settings

    async def segment_webhook(request: web.Request) -> web.Response:
        metrics = request.app[RECEIVER_METRICS]
        metrics.received.labels(route="segment_webhook").inc()
        if not (settings.segment_webhook_secret or settings.segment_webhook_header_secret):
            metrics.rejected.labels(reason="webhook_not_configured").inc()
            return web.json_response(
                {
                    "error": "webhook_not_configured",
                    "message": "Set SEGMENT_WEBHOOK_SECRET (the webhook's signing secret) and/or "
                    "SEGMENT_WEBHOOK_HEADER_SECRET to accept Segment calls.",
                },
                status=503,
                headers={"Retry-After": str(settings.kseg_retry_after_seconds)},
            )
        raw = await read_body(
            request, max(settings.kseg_max_body_bytes, WEBHOOK_MAX_BYTES), settings.kseg_http_body_timeout
        )
        credential, whole_body_authenticated = check_webhook_auth(request, raw, settings)
        request.app[LIMITER].check("segment_webhook", credential)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            identity_metrics.links_rejected.labels(reason="invalid_json").inc()
            raise ClientError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
        received_at = utc_now_iso()
        deletes = request.app.get(SEGMENT_DELETES)
        deleted = await deletes(payload, received_at) if deletes is not None else None  # type: ignore[operator]
        if deleted is not None:  # a deletion that started in Segment (docs/privacy.md)
            metrics.accepted.labels(route="segment_webhook").inc()
            return deleted  # type: ignore[no-any-return]
        # Engage audience deliveries: membership changes, durable before the 200 (docs/audiences.md).
        changes, _ = await publish_membership_changes(publisher, settings, payload, received_at)
        links, reasons = links_from_payload(payload, received_at)
        if isinstance(payload, list) and len(payload) > 1 and not whole_body_authenticated:
            # Only element 0 is signed: the rest is accepted as before, but counted (docs/security.md).
            metrics.unauthenticated_calls.labels(route="segment_webhook").inc(len(payload) - 1)
        for reason in reasons:
            identity_metrics.links_rejected.labels(reason=reason).inc()
        if changes and not links:
            metrics.accepted.labels(route="segment_webhook").inc(changes)
            return web.json_response({"message": "success", "audience_changes": changes, "accepted": 0})
        if not links:
            # 200, not 4xx: Segment discards 4xx silently and retries nothing; this call simply links nobody.
            reason = reasons[0] if len(set(reasons)) == 1 else "nothing_linkable"
            return web.json_response({"message": "ignored", "reason": reason, "calls": len(reasons)})
        await publish_links(publisher, settings, links)
        identity_metrics.links_accepted.labels(source="segment_webhook", stage="receiver").inc(len(links))
        metrics.accepted.labels(route="segment_webhook").inc(len(links))
        return web.json_response(
            {
                "message": "success",
                "accepted": len(links),
                "ignored": len(reasons),
                "link_ids": [x.link_id for x in links],
                "audience_changes": changes,
            }
        )

    async def identity_links(request: web.Request) -> web.Response:
        metrics = request.app[RECEIVER_METRICS]
        metrics.received.labels(route="identity_links").inc()
        token = check_link_token(request, settings)
        request.app[LIMITER].check("identity_links", token)
        raw = await read_body(request, settings.kseg_max_body_bytes, settings.kseg_http_body_timeout)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            identity_metrics.links_rejected.labels(reason="invalid_json").inc()
            raise ClientError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
        try:
            link, ignored = parse_link_body(data, utc_now_iso())
        except ClientError as err:
            identity_metrics.links_rejected.labels(reason=err.code).inc()
            raise
        await publish_links(publisher, settings, [link])
        identity_metrics.links_accepted.labels(source="api", stage="receiver").inc()
        metrics.accepted.labels(route="identity_links").inc()
        body: dict[str, Any] = {
            "message": "success",
            "link_id": link.link_id,
            "devices": link.typed_devices(),
        }
        if ignored:
            body["ignored_fields"] = ignored
        return web.json_response(body)

    app.router.add_post(WEBHOOK_PATH, segment_webhook)
    app.router.add_post(LINKS_PATH, identity_links)
