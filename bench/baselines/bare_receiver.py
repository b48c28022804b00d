"""Bare aiohttp receiver: the same route and request handling as kseg's receiver, without Kafka.

Why: it is the ceiling for receiver throughput on this machine. Comparing the real receiver with this
baseline (same loadgen, same rate) isolates what the Kafka produce with acks=all costs.

Handling mirrors the receiver: GET query string (or POST JSON / form body) → dict, token check,
stable event id, orjson dump of the record — then the record is dropped and 200
`{"message":"success"}` returned.

    python bench/baselines/bare_receiver.py --port 8090 [--tokens dev]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

ROUTE = "/v1/kochava/postbacks"
SUCCESS_BODY = b'{"message":"success"}'
MAX_BODY_BYTES = 64 * 1024
_VOLATILE = frozenset({"token"})  # as app.records.VOLATILE_PARAMS
STATS = web.AppKey("stats", Counter)  # "records": how many the receiver would have produced


def event_id(params: dict[str, Any]) -> str:
    """Same recipe as app.records.postback_event_id (copied so this script has no app import)."""
    stable = {k: params[k] for k in sorted(params) if k not in _VOLATILE}
    return hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_error(status: int, message: str) -> web.Response:
    body = orjson.dumps({"message": message})
    return web.Response(status=status, body=body, content_type="application/json")


def make_app(tokens: frozenset[str] = frozenset({"dev"})) -> web.Application:
    """The baseline application; `app[STATS]["records"]` counts records it would have produced."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    stats: Counter[str] = Counter()
    app[STATS] = stats

    async def postback(request: web.Request) -> web.Response:
        params: dict[str, Any] = dict(request.query)
        source = "get"
        if request.method == "POST" and request.can_read_body:
            try:
                if request.content_type == "application/json":
                    body = orjson.loads(await request.read())
                    if not isinstance(body, dict):
                        return _json_error(400, "body must be a JSON object")
                    params.update(body)
                    source = "post_json"
                else:
                    params.update(dict(await request.post()))
                    source = "post_form"
            except (orjson.JSONDecodeError, ValueError):
                return _json_error(400, "unreadable body")
        token = params.get("token") or request.headers.get("X-Kseg-Token")
        if token not in tokens:
            return _json_error(401, "invalid token")
        record = {
            "kind": "postback",
            "event_id": event_id(params),
            "received_at": _now_iso(),
            "source": source,
            "profile": None,
            "params": params,
            "ip": request.remote,
            "user_agent": request.headers.get("User-Agent"),
        }
        orjson.dumps(record)  # what the receiver would hand to the producer; dropped here
        stats["records"] += 1
        return web.Response(body=SUCCESS_BODY, content_type="application/json")

    app.router.add_get(ROUTE, postback)  # also answers HEAD
    app.router.add_post(ROUTE, postback)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    parser.add_argument("--tokens", default="dev", help="comma-separated accepted tokens (default dev)")
    args = parser.parse_args(argv)
    tokens = frozenset(t.strip() for t in args.tokens.split(",") if t.strip())
    print(f"bare receiver on http://{args.host}:{args.port}{ROUTE}", file=sys.stderr, flush=True)
    web.run_app(make_app(tokens), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
