"""Privacy requests over HTTP: `POST /v1/privacy/requests` and `GET /v1/privacy/requests/{id}`, routes of
the receiver with their own credential (KSEG_PRIVACY_TOKENS), and the Segment webhook's deletes.

A request is answered 202 only once its record is durable on the compacted `privacy.requests` topic;
the privacy agent in the worker does the rest (docs/privacy.md)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from app import topics
from app.ids import clean_id
from app.privacy.records import PrivacyRequest, Subject
from app.privacy.rules import BodyError, new_request, parse_body
from app.privacy.store import get_request
from app.receiver.bodies import read_body
from app.receiver.errors import ClientError
from app.receiver.metrics import RECEIVER_METRICS
from app.receiver.parsing import match_token, supplied_token
from app.receiver.publisher import Publisher
from app.receiver.ratelimit import LIMITER
from app.sections import PrivacySettings, ReceiverSettings

REQUESTS_PATH = "/v1/privacy/requests"
REQUEST_ID_MAX = 64


def check_privacy_token(request: web.Request, settings: PrivacySettings, other: ReceiverSettings) -> str:
    """The privacy API's credential: one of KSEG_PRIVACY_TOKENS, never a postback or links token."""
    if not settings.privacy_tokens:
        raise ClientError(
            403,
            "privacy_api_disabled",
            "The privacy API is off: set KSEG_PRIVACY_TOKENS on the receiver and send one of them as "
            "`Authorization: Bearer ...`.",
        )
    supplied = supplied_token(request)
    if not supplied:
        raise ClientError(
            401, "missing_token", "Send a KSEG_PRIVACY_TOKENS token as `Authorization: Bearer ...`."
        )
    matched = match_token(supplied, settings.privacy_tokens)
    if matched is not None:
        return matched
    for setting, tokens in (
        ("KSEG_POSTBACK_TOKENS", other.postback_tokens),
        ("KSEG_LINK_TOKENS", other.link_tokens),
    ):
        if match_token(supplied, tokens) is not None:
            raise ClientError(
                403,
                "wrong_token_kind",
                f"This is a {setting} token; the privacy API takes only a KSEG_PRIVACY_TOKENS token.",
            )
    raise ClientError(401, "invalid_token", "The token is not one of KSEG_PRIVACY_TOKENS.")


async def submit(
    publisher: Publisher, settings: PrivacySettings, request: PrivacyRequest
) -> tuple[str, bool]:
    """Make `request` durable unless it is already known; (request id, whether it was a duplicate)."""
    existing = await get_request(settings, request.request_id)
    if existing is not None:
        return existing.request_id, True
    await publisher.publish(settings.topic(topics.PRIVACY_REQUESTS), request.request_id, request.encode())
    return request.request_id, False


def segment_delete(payload: Any, received_at: str) -> PrivacyRequest | None:
    """A classic Webhooks destination's `{"type": "delete", "userId": ...}` as a delete request, else None."""
    if not isinstance(payload, dict) or payload.get("type") != "delete":
        return None
    user_id = clean_id(payload.get("userId")) if isinstance(payload.get("userId"), str) else None
    if user_id is None:
        raise ClientError(
            400, "invalid_delete", "A Segment delete needs a string `userId`.", {"field": "userId"}
        )
    stamp = payload.get("timestamp")
    reference = f"segment:{stamp}" if isinstance(stamp, str) and stamp else "segment"
    return new_request("delete", Subject(user_id=user_id), reference, "segment_webhook", received_at)


def install_privacy_routes(app: web.Application, publisher: Publisher, settings: PrivacySettings) -> None:
    """Add the privacy API to the receiver (`settings` is the receiver's whole `Settings`)."""
    receiver = publisher.settings

    async def create(request: web.Request) -> web.Response:
        metrics = request.app[RECEIVER_METRICS]
        metrics.received.labels(route="privacy_requests").inc()
        token = check_privacy_token(request, settings, receiver)
        request.app[LIMITER].check("privacy_requests", token)
        raw = await read_body(request, receiver.kseg_max_body_bytes, receiver.kseg_http_body_timeout)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ClientError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
        try:
            kind, subject, reference = parse_body(data)
        except BodyError as err:
            raise ClientError(400, err.code, err.message, err.details or None) from err
        record = new_request(kind, subject, reference, "api")
        request_id, duplicate = await submit(publisher, settings, record)
        metrics.accepted.labels(route="privacy_requests").inc()
        body: dict[str, Any] = {"request_id": request_id, "status_url": f"{REQUESTS_PATH}/{request_id}"}
        if duplicate:
            body["duplicate"] = True
        return web.json_response(body, status=202)

    async def status(request: web.Request) -> web.Response:
        metrics = request.app[RECEIVER_METRICS]
        metrics.received.labels(route="privacy_status").inc()
        token = check_privacy_token(request, settings, receiver)
        request.app[LIMITER].check("privacy_requests", token)
        request_id = request.match_info["request_id"]
        if not (0 < len(request_id) <= REQUEST_ID_MAX and request_id.replace("_", "").isalnum()):
            raise ClientError(400, "invalid_request_id", "Not a privacy request id (pr_ and 24 hex digits).")
        found = await get_request(settings, request_id)
        if found is None:
            raise ClientError(404, "unknown_request", f"No privacy request {request_id}.")
        return web.json_response(found.summary())

    app.router.add_post(REQUESTS_PATH, create)
    app.router.add_get(REQUESTS_PATH + "/{request_id}", status)
    app[SEGMENT_DELETES] = _segment_deletes(publisher, settings)


#: The Segment webhook's hook for deletes (set by `install_privacy_routes`): the answer, or None when the
#: payload is not a delete.
SEGMENT_DELETES = web.AppKey("segment_deletes", object)


def _segment_deletes(publisher: Publisher, settings: PrivacySettings) -> Any:
    async def handle(payload: Any, received_at: str) -> web.Response | None:
        record = segment_delete(payload, received_at)
        if record is None:
            return None
        request_id, duplicate = await submit(publisher, settings, record)
        return web.json_response(
            {"message": "success", "privacy_request_id": request_id, "duplicate": duplicate}
        )

    return handle
