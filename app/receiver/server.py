"""The receiver: authenticates Kochava postbacks and makes them durable in Kafka before answering.

Handler budget: parse, stamp, produce, answer. All mapping and enrichment happen in the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from app.config import Settings
from app.metrics import CONTENT_TYPE_LATEST, render
from app.receiver import metrics
from app.receiver.identity_routes import install_identity_routes
from app.receiver.parsing import ClientError, check_token, partition_key, raw_record, read_params
from app.receiver.publisher import Publisher, PublishUnavailable
from app.topics import RAW

log = logging.getLogger(__name__)

SUCCESS = orjson.dumps({"message": "success"})
POSTBACK_PATH = "/v1/kochava/postbacks"

PUBLISHER = web.AppKey("publisher", Publisher)
SETTINGS = web.AppKey("settings", Settings)


def unavailable(settings: Settings, reason: str) -> web.Response:
    return web.json_response(
        {"error": reason, "message": "Kafka cannot accept the record now; retry later."},
        status=503,
        headers={"Retry-After": str(settings.kseg_retry_after_seconds)},
    )


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error is JSON with a reason; client mistakes are 4xx, never 500."""
    try:
        return await handler(request)
    except ClientError as err:
        metrics.rejected.labels(reason=err.code).inc()
        return err.response()
    except web.HTTPRequestEntityTooLarge:
        metrics.rejected.labels(reason="body_too_large").inc()
        return ClientError(413, "body_too_large", "The body is too large.").response()
    except web.HTTPException as exc:
        if exc.status >= 400:
            metrics.rejected.labels(reason=f"http_{exc.status}").inc()
            return web.json_response(
                {"error": exc.reason, "message": exc.text or exc.reason}, status=exc.status
            )
        raise
    except PublishUnavailable as exc:
        metrics.rejected.labels(reason=exc.reason).inc()
        return unavailable(request.app[SETTINGS], exc.reason)


async def postback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    metrics.received.labels(route="postback").inc()
    token = check_token(request, settings.postback_tokens)
    params, source = await read_params(request, settings.kseg_max_body_bytes)
    key = partition_key(params)
    named = params.get("profile")  # from the query string, or from a JSON / form body
    profile = str(named) if named else settings.token_profiles.get(token)
    record = raw_record(request, params, source, profile)
    latency = await request.app[PUBLISHER].publish(settings.topic(RAW), key, orjson.dumps(record))
    metrics.produce_latency.observe(latency)
    metrics.accepted.labels(route="postback").inc()
    return web.Response(body=SUCCESS, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    body = {"ready": publisher.ready, "pending_produces": publisher.pending, "max": publisher.max_pending}
    return web.json_response(body, status=200 if publisher.ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    metrics.pending_produces.set(publisher.pending)
    metrics.ready.set(float(publisher.ready))
    return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(settings: Settings) -> web.Application:
    """The receiver's aiohttp application: postbacks, identity links and the Segment webhook."""
    app = web.Application(middlewares=[json_errors], client_max_size=settings.kseg_max_body_bytes)
    publisher = Publisher(settings)
    app[SETTINGS] = settings
    app[PUBLISHER] = publisher
    app.router.add_route("GET", POSTBACK_PATH, postback)
    app.router.add_route("POST", POSTBACK_PATH, postback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    install_identity_routes(app, publisher)

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
    web.run_app(app, host=settings.kseg_http_host, port=settings.kseg_http_port, print=None, access_log=None)
