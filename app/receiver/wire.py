"""The receiver's HTTP server: aiohttp's, except that malformed requests never echo or log their bytes.

aiohttp answers a request its parser refuses (bad method, header too long, data after
`Connection: close`...) itself, before any middleware, with a text body that quotes the offending
request line — which carries `?token=...` — and logs the same text at ERROR. Both would leak
postback tokens. Here those answers are JSON `{"error": "bad_http_request", ...}` naming only the
problem's class, and the log line says no more. An unsupported `Expect` header is a JSON 417.

The hooks are aiohttp's protocol factory (`web.Server.__call__`) and the request handler's
`handle_error`; aiohttp has no public setting for either.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from app.receiver.metrics import RECEIVER_METRICS, ReceiverMetrics

log = logging.getLogger(__name__)

Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class _QuietHandler(RequestHandler):  # type: ignore[type-arg]
    """aiohttp's per-connection protocol; counts into its server's (so its app's) `ReceiverMetrics`."""

    def __init__(self, manager: _QuietServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.metrics = manager.metrics

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON answer that names the problem's class only; 500s (kseg bugs) keep their traceback."""
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response")
        kind = type(exc).__name__ if exc is not None else "unknown"
        if status >= 500:
            log.error("internal error handling a request from %s (%s)", request.remote, kind, exc_info=exc)
            body = {"error": "internal_error", "message": "kseg failed on this request; it is logged."}
        else:
            log.info("refused a malformed HTTP request from %s: %s (%s)", request.remote, status, kind)
            self.metrics.rejected.labels(reason="bad_http_request").inc()
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Bad Request"
            body = {
                "error": "bad_http_request",
                "message": f"{phrase}: the request is not valid HTTP/1.1 ({kind}); check the request line, "
                "header sizes and framing.",
            }
        response = web.json_response(body, status=status)
        response.force_close()
        return response


def _refuse_unknown_expect(inner: Handler, metrics: ReceiverMetrics) -> Handler:
    """Answer an `Expect` other than `100-continue` with a JSON 417 before aiohttp's router sees it.

    aiohttp's default expect handler quotes the header back as text, and fails with a 500 when the
    header holds bytes that are not UTF-8; for unrouted paths it cannot be replaced per route."""

    async def handle(request: BaseRequest) -> web.StreamResponse:
        expect = request.headers.get("Expect")
        if expect and expect.strip().lower() != "100-continue":
            metrics.rejected.labels(reason="unsupported_expect").inc()
            return web.json_response(
                {"error": "unsupported_expect", "message": "Only `Expect: 100-continue` is supported."},
                status=417,
            )
        return await inner(request)

    return handle


class _QuietServer(web.Server):
    def __init__(self, handler: Handler, *, metrics: ReceiverMetrics, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.metrics = metrics

    def __call__(self) -> RequestHandler:  # type: ignore[type-arg]
        return _QuietHandler(self, loop=self._loop, **self._kwargs)


class QuietAppRunner(web.AppRunner):
    """`web.AppRunner` whose connections use `_QuietHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        metrics = self.app[RECEIVER_METRICS]
        return _QuietServer(
            _refuse_unknown_expect(server.request_handler, metrics),
            metrics=metrics,
            request_factory=server.request_factory,
            loop=server._loop,
            **server._kwargs,
        )


async def serve_until_signal(app: web.Application, host: str, port: int) -> None:
    """Serve `app` on host:port until SIGINT or SIGTERM, then run its cleanup."""
    runner = QuietAppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        await stop.wait()
    finally:
        await runner.cleanup()
