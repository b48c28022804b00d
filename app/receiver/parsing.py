"""Turning an HTTP request into postback parameters, with a precise client error for every bad input."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from app.receiver.bodies import read_body
from app.receiver.errors import ClientError
from app.records import (
    DEVICE_KEY_PARAMS,
    PostbackSource,
    RawPostback,
    device_key_of,
    postback_event_id,
    utc_now_iso,
)


def supplied_token(request: web.Request) -> str | None:
    """The credential the request carries: `Authorization: Bearer ...`, else `?token=...`."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.query.get("token") or None


def _bytes(value: str) -> bytes:
    # Query strings may decode to lone surrogates; a credential must never make encoding raise.
    return value.encode("utf-8", "backslashreplace")


def match_token(supplied: str, tokens: list[str]) -> str | None:
    """The configured token equal to `supplied`, compared in constant time against every one."""
    matched = None
    for token in tokens:
        if hmac.compare_digest(_bytes(supplied), _bytes(token)):
            matched = token
    return matched


def check_token(request: web.Request, tokens: list[str], setting: str = "KSEG_POSTBACK_TOKENS") -> str:
    """The matching token; 401 when missing or not one of `tokens` (named by its `setting`)."""
    supplied = supplied_token(request)
    if not supplied:
        raise ClientError(
            401, "missing_token", "Pass the token as ?token=... or `Authorization: Bearer ...`."
        )
    matched = match_token(supplied, tokens)
    if matched is None:
        raise ClientError(401, "invalid_token", f"The token is not one of {setting}.")
    return matched


async def read_params(
    request: web.Request, max_body: int, timeout: float
) -> tuple[dict[str, Any], PostbackSource]:
    """Postback parameters and their source: the query string for GET, a JSON or form body for POST."""
    query = {k: v for k, v in parse_qsl(request.query_string, keep_blank_values=True)}
    if request.method == "GET":
        return query, "get"
    body = await read_body(request, max_body, timeout)
    ctype = request.content_type
    if not body.strip():
        return query, "post_form"
    if ctype == "application/json" or (
        ctype not in ("application/x-www-form-urlencoded",) and body[:1] in b"{["
    ):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ClientError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
        if not isinstance(data, dict):
            raise ClientError(400, "invalid_json", "The JSON body must be an object of postback fields.")
        return {**query, **data}, "post_json"
    if ctype in ("application/x-www-form-urlencoded", "text/plain", "application/octet-stream", ""):
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError as exc:
            raise ClientError(400, "invalid_encoding", "The form body is not UTF-8.") from exc
        return {**query, **form}, "post_form"
    raise ClientError(
        415, "unsupported_media_type", "Send a GET query string, a JSON body or a form-encoded body."
    )


def partition_key(params: dict[str, Any]) -> str:
    """The Kafka key (see `device_key_of`); 400 when the postback carries no usable device id."""
    key = device_key_of(params)
    if key is None:
        raise ClientError(
            400,
            "missing_device_id",
            "The postback carries no usable device identifier. Add one of these keys with its Kochava macro "
            "to the postback URL (all-zero or placeholder values do not count).",
            {"expected_any_of": list(DEVICE_KEY_PARAMS)},
        )
    return key


def raw_record(
    request: web.Request, params: dict[str, Any], source: PostbackSource, profile: str | None
) -> RawPostback:
    """The postbacks.raw record for one request: params without the auth and routing keys, stamped with
    the deterministic event id, the time and where it came from."""
    params.pop("token", None)
    params.pop("profile", None)
    return RawPostback(
        event_id=postback_event_id(params),
        received_at=utc_now_iso(),
        source=source,
        profile=profile,
        params=params,
        ip=request.remote,
        user_agent=request.headers.get("User-Agent"),
    )
