"""Turning an HTTP request into postback parameters, with a precise client error for every bad input."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import unquote_to_bytes

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


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def token_name(token: str, tokens: list[str]) -> str:
    """The name a matched token is recorded under: its position in the setting (`token-1` is the first),
    so the trace can say which Kochava postback sent it without storing a credential."""
    return f"token-{tokens.index(token) + 1}"


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


def _field_text(raw: bytes, key: str | None, where: str) -> str:
    """One key or value percent-decoded exactly once (`+` is a space), then strictly UTF-8.

    A value that is not UTF-8 cannot be carried in JSON text without being altered, so it is refused
    with a 400 naming the key instead of being replaced with U+FFFD."""
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError as exc:
        name = key if key is not None else raw.decode("ascii", "backslashreplace")
        what = "a key" if key is None else f"the value of `{key}`"
        raise ClientError(
            400,
            "invalid_encoding",
            f"In the {where}, {what} is not UTF-8 once percent-decoded; percent-encode the UTF-8 bytes "
            "of the text (kseg never replaces bytes it cannot carry).",
            {"field": name},
        ) from exc


def parse_fields(raw: bytes, where: str = "query string") -> dict[str, str]:
    """`key=value&...` (a raw query string or a form body) decoded exactly once; the last of a repeated
    key wins, a key without `=` has the empty value.

    Raw bytes in, because aiohttp's `query_string` is already percent-decoded: decoding it again
    turned a campaign named `100%25off` into `100%off`."""
    params: dict[str, str] = {}
    for field in raw.split(b"&"):
        if not field:
            continue
        raw_key, _, raw_value = field.partition(b"=")
        if b"%" not in field and b"+" not in field:
            # Nothing to percent-decode (most Kochava fields): the bytes are the text, when UTF-8.
            try:
                params[raw_key.decode("utf-8")] = raw_value.decode("utf-8")
                continue
            except UnicodeDecodeError:
                pass  # `_field_text` names the field in its 400
        key = _field_text(raw_key, None, where)
        params[key] = _field_text(raw_value, key, where)
    return params


def raw_query(request: web.Request) -> bytes:
    """The query string exactly as sent (aiohttp keeps non-ASCII request-line bytes surrogate-escaped)."""
    target = request.raw_path.encode("utf-8", "surrogateescape")
    _, sep, query = target.partition(b"?")
    if b"#" in query:
        raise ClientError(
            400,
            "invalid_query",
            "The query string contains a raw `#`; percent-encode it as %23 (a fragment is never sent).",
        )
    return query if sep else b""


async def read_params(
    request: web.Request, max_body: int, timeout: float
) -> tuple[dict[str, Any], PostbackSource]:
    """Postback parameters and their source: the query string for GET, a JSON or form body for POST."""
    query: dict[str, Any] = dict(parse_fields(raw_query(request)))
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
        return {**query, **parse_fields(body, "form body")}, "post_form"
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
    request: web.Request,
    params: dict[str, Any],
    source: PostbackSource,
    profile: str | None,
    token_name: str | None = None,
) -> RawPostback:
    """The postbacks.raw record for one request: params without the auth and routing keys, stamped with
    the deterministic event id, the time, where it came from and which token (by name) let it in."""
    params.pop("token", None)
    params.pop("profile", None)
    user_agent = request.headers.get("User-Agent")
    if user_agent is not None and not _is_utf8(user_agent):
        # Header bytes that are not UTF-8 arrive surrogate-escaped and cannot be stored unaltered.
        raise ClientError(
            400,
            "invalid_encoding",
            "The User-Agent header is not UTF-8; send it as ASCII or UTF-8.",
            {"header": "User-Agent"},
        )
    return RawPostback(
        event_id=postback_event_id(params),
        received_at=utc_now_iso(),
        source=source,
        profile=profile,
        params=params,
        ip=request.remote,
        user_agent=user_agent,
        token_name=token_name,
    )
