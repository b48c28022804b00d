"""Bare aiohttp receiver: the same route and request handling as kseg's receiver, without Kafka.

Why: it is the ceiling for receiver throughput on this machine. Comparing the real receiver with this
baseline (same loadgen, same rate) isolates what the Kafka produce with acks=all costs.

Handling reuses the receiver's own functions (app.receiver.parsing, app.records): token check,
GET query string (or POST JSON / form body) → dict, partition key, stable event id, orjson dump of
the record — then the record is dropped and 200 `{"message":"success"}` returned.

    python bench/baselines/bare_receiver.py --port 8090 [--tokens dev]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from aiohttp import web

try:
    from app.receiver.parsing import ClientError, check_token, partition_key, raw_record, read_params
except ImportError:  # run as a script from a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from app.receiver.parsing import ClientError, check_token, partition_key, raw_record, read_params

ROUTE = "/v1/kochava/postbacks"  # app.receiver.server.POSTBACK_PATH
SUCCESS_BODY = b'{"message":"success"}'
MAX_BODY_BYTES = 64 * 1024  # Settings.kseg_max_body_bytes default
BODY_TIMEOUT = 10.0  # Settings.kseg_http_body_timeout default
STATS = web.AppKey("stats", Counter)  # "records": how many the receiver would have produced


def make_app(tokens: frozenset[str] = frozenset({"dev"})) -> web.Application:
    """The baseline application; `app[STATS]["records"]` counts records it would have produced."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    stats: Counter[str] = Counter()
    app[STATS] = stats
    token_list = sorted(tokens)

    async def postback(request: web.Request) -> web.Response:
        # Same steps as app.receiver.server.postback, minus metrics and the Kafka produce.
        try:
            check_token(request, token_list)
            params, source = await read_params(request, MAX_BODY_BYTES, BODY_TIMEOUT)
            key = partition_key(params)
        except ClientError as err:
            return err.response()
        record = raw_record(request, params, source, request.query.get("profile"))
        key.encode()
        record.encode()  # what the receiver hands to the producer; dropped here
        stats["records"] += 1
        return web.Response(body=SUCCESS_BODY, content_type="application/json")

    app.router.add_route("GET", ROUTE, postback)
    app.router.add_route("POST", ROUTE, postback)
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
