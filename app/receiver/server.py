"""The receiver: authenticates Kochava postbacks and makes them durable in Kafka before answering.

Handler budget: parse, stamp, produce, answer. All mapping and enrichment happen in the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client import Counter, Histogram

from app.config import Settings
from app.metrics import CONTENT_TYPE_LATEST, render
from app.receiver.errors import ClientError
from app.receiver.identity_routes import install_identity_routes
from app.receiver.metrics import RECEIVER_METRICS, ReceiverMetrics, receiver_registry
from app.receiver.parsing import check_token, partition_key, raw_record, read_params, token_name
from app.receiver.privacy_routes import install_privacy_routes
from app.receiver.publisher import Publisher, PublishUnavailable
from app.receiver.ratelimit import LIMITER, CredentialLimiter
from app.receiver.wire import serve_until_signal
from app.runtime.health import healthz, readyz_response
from app.topics import RAW

log = logging.getLogger(__name__)

SUCCESS = orjson.dumps({"message": "success"})
POSTBACK_PATH = "/v1/kochava/postbacks"

PUBLISHER = web.AppKey("publisher", Publisher)
SETTINGS = web.AppKey("settings", Settings)


@dataclass(frozen=True, slots=True)
class PostbackRoute:
    """What the postback handler reads on every request, worked out once per app: the settings' token
    lists and profile map are properties that re-parse their setting on every read, and a labelled
    metric is a dict lookup under a lock each time it is named."""

    tokens: list[str]
    #: token -> the name it is recorded under (`token_name`)
    names: dict[str, str]
    profiles: dict[str, str]
    topic: str
    max_body: int
    body_timeout: float
    received: Counter
    accepted: Counter
    produce_latency: Histogram

    @classmethod
    def of(cls, settings: Settings, metrics: ReceiverMetrics) -> PostbackRoute:
        tokens = settings.postback_tokens
        return cls(
            tokens=tokens,
            names={token: token_name(token, tokens) for token in tokens},
            profiles=settings.token_profiles,
            topic=settings.topic(RAW),
            max_body=settings.kseg_max_body_bytes,
            body_timeout=settings.kseg_http_body_timeout,
            received=metrics.received.labels(route="postback"),
            accepted=metrics.accepted.labels(route="postback"),
            produce_latency=metrics.produce_latency,
        )


POSTBACK_ROUTE = web.AppKey("postback_route", PostbackRoute)


def unavailable(settings: Settings, reason: str) -> web.Response:
    return web.json_response(
        {"error": reason, "message": "Kafka cannot accept the record now; retry later."},
        status=503,
        headers={"Retry-After": str(settings.kseg_retry_after_seconds)},
    )


def _as_json(metrics: ReceiverMetrics, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusal (404 for a path outside any route, 417...) as kseg's JSON error."""
    metrics.rejected.labels(reason=f"http_{exc.status}").inc()
    code = exc.reason.strip().lower().replace(" ", "_").replace("-", "_") or "http_error"
    return web.json_response({"error": code, "message": exc.text or exc.reason}, status=exc.status)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error is JSON with a reason; client mistakes are 4xx, never 500."""
    metrics = request.app[RECEIVER_METRICS]
    try:
        response = await handler(request)
    except ClientError as err:
        metrics.rejected.labels(reason=err.code).inc()
        return err.response()
    except web.HTTPRequestEntityTooLarge:
        metrics.rejected.labels(reason="body_too_large").inc()
        return ClientError(413, "body_too_large", "The body is too large.").response()
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _as_json(metrics, exc)
        raise
    except PublishUnavailable as exc:
        metrics.rejected.labels(reason=exc.reason).inc()
        return unavailable(request.app[SETTINGS], exc.reason)
    if isinstance(response, web.HTTPException) and response.status >= 400:
        return _as_json(metrics, response)  # aiohttp returns (not raises) some refusals
    return response


async def postback(request: web.Request) -> web.Response:
    app = request.app
    route = app[POSTBACK_ROUTE]
    route.received.inc()
    token = check_token(request, route.tokens)
    app[LIMITER].check("postback", token)
    params, source = await read_params(request, route.max_body, route.body_timeout)
    key = partition_key(params)
    named = params.get("profile")  # from the query string, or from a JSON / form body
    profile = str(named) if named else route.profiles.get(token)
    record = raw_record(request, params, source, profile, route.names[token])
    latency = await app[PUBLISHER].publish(route.topic, key, record.encode())
    route.produce_latency.observe(latency)
    route.accepted.inc()
    return web.Response(body=SUCCESS, content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    blocked = {} if publisher.ready else {"kafka": "cannot produce to Kafka (unreachable or backlog full)"}
    return readyz_response(blocked, pending_produces=publisher.pending, max=publisher.max_pending)


async def metrics_endpoint(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    metrics = request.app[RECEIVER_METRICS]
    metrics.pending_produces.set(publisher.pending)
    metrics.ready.set(float(publisher.ready))
    return web.Response(body=render(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def unrouted(request: web.Request) -> web.Response:
    """404 for an unknown path, 405 (with Allow) for a known path and the wrong method."""
    allowed = sorted(
        {
            route.method
            for resource in request.app.router.resources()
            if resource.canonical == request.path
            for route in resource
            if route.method != "*"
        }
    )
    if allowed:
        raise ClientError(
            405,
            "method_not_allowed",
            f"{request.path} takes {', '.join(allowed)}.",
            headers={"Allow": ",".join(allowed)},
        )
    raise ClientError(404, "not_found", "No such endpoint; see docs/security.md for the list.")


def server_limits(settings: Settings) -> dict[str, object]:
    """aiohttp connection limits: slow or oversized requests are cut off before a handler runs.

    The keep-alive timer also runs from the moment a connection opens, so it bounds how long a client
    may take to send its headers (slowloris). Decompression is ours (`app.receiver.bodies`)."""
    return {
        "auto_decompress": False,
        "keepalive_timeout": settings.kseg_http_header_timeout,
        "max_line_size": settings.kseg_http_max_header_bytes,
        "max_field_size": settings.kseg_http_max_header_bytes,
        "max_headers": settings.kseg_http_max_headers,
    }


def build_app(settings: Settings) -> web.Application:
    """The receiver's aiohttp application: postbacks, identity links and the Segment webhook."""
    app = web.Application(
        middlewares=[json_errors],
        client_max_size=settings.kseg_max_body_bytes,
        handler_args=server_limits(settings),
    )
    publisher = Publisher(settings)
    app[SETTINGS] = settings
    app[PUBLISHER] = publisher
    app[RECEIVER_METRICS] = metrics = ReceiverMetrics.on(receiver_registry())
    app[POSTBACK_ROUTE] = PostbackRoute.of(settings, metrics)
    app[LIMITER] = CredentialLimiter(settings.kseg_rate_limit_per_token, settings.kseg_rate_limit_burst)
    app.router.add_route("GET", POSTBACK_PATH, postback)
    app.router.add_route("POST", POSTBACK_PATH, postback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    install_identity_routes(app, publisher)
    install_privacy_routes(app, publisher, settings)
    # Last: every other path or method reaches kseg's code (JSON 404/405) instead of aiohttp's
    # system routes.
    app.router.add_route("*", "/{tail:.*}", unrouted)

    async def on_startup(_: web.Application) -> None:
        await publisher.start()

    async def on_cleanup(_: web.Application) -> None:
        await publisher.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(settings: Settings) -> None:
    """Run the receiver until SIGINT/SIGTERM."""
    if not settings.postback_tokens:
        raise SystemExit(
            "kseg receiver: KSEG_POSTBACK_TOKENS is empty. Set it to one or more comma-separated tokens "
            "and put one of them in the Kochava postback URL (?token=...)."
        )
    if set(settings.postback_tokens) & set(settings.link_tokens):
        raise SystemExit(
            "kseg receiver: a token is in both KSEG_POSTBACK_TOKENS and KSEG_LINK_TOKENS. Postback URLs are "
            "shared with Kochava and ad networks; give the links API its own tokens."
        )
    if set(settings.privacy_tokens) & (set(settings.postback_tokens) | set(settings.link_tokens)):
        raise SystemExit(
            "kseg receiver: a KSEG_PRIVACY_TOKENS token is also a postback or links token. Give the privacy "
            "API tokens of its own."
        )
    import asyncio

    from app.topics import ensure_topics

    try:
        asyncio.run(ensure_topics(settings))
    except RuntimeError as exc:
        log.warning("%s; the receiver starts anyway and answers 503 until Kafka is reachable", exc)
    app = build_app(settings)
    log.info(
        "receiver listening on http://%s:%s%s",
        settings.kseg_http_host,
        settings.kseg_http_port,
        POSTBACK_PATH,
    )
    asyncio.run(serve_until_signal(app, settings.kseg_http_host, settings.kseg_http_port))
