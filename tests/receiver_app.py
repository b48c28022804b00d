"""An in-process receiver on a real broker, for tests that drive its routes through aiohttp's test client."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app import topics
from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from app.receiver.server import PUBLISHER, build_app
from app.receiver.wire import QuietAppRunner


class ReceiverTestServer(TestServer):
    """aiohttp's test server with the receiver's own connection handling, as `serve_until_signal` runs
    it: `QuietAppRunner`, and handlers not cancelled when their client disconnects (aiohttp's default,
    which the test server changes)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = False
        return QuietAppRunner(self.app, **kwargs)


def receiver_settings(broker: EmbeddedBroker, **kw: Any) -> Settings:
    """Settings for one test: its own app id (so its own topics) on `broker`; `kw` overrides."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": broker.bootstrap_servers,
        "kseg_embedded_broker": True,
        "kseg_app_id": f"t-recv-{uuid.uuid4().hex[:8]}",
        "kseg_topic_partitions": 1,
        **kw,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def started_client(settings: Settings) -> TestClient:
    """A started test client whose receiver can produce (topics created, producer connected)."""
    await topics.ensure_topics(settings)
    app = build_app(settings)
    client = TestClient(ReceiverTestServer(app))
    await client.start_server()
    for _ in range(200):
        if app[PUBLISHER].ready:
            break
        await asyncio.sleep(0.05)
    assert app[PUBLISHER].ready, "the receiver's producer did not connect"
    return client
