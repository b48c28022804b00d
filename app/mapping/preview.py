"""What an operator pastes into `kseg mapping try`, as postback parameters (the command itself runs the
processing core: `app.pipeline.preview`)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit


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
