"""Every process answers /healthz and /readyz with the same JSON shape (the loader here, over real HTTP;
the receiver and the worker in tests/integration/test_foundation.py and test_delivery.py)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from app.config import Settings
from app.runtime.health import ALIVE, Health, readiness
from app.warehouse.loader import Loader, pages


def test_readiness_is_ready_exactly_when_nothing_blocks() -> None:
    health = Health()
    assert readiness(health.blocked_reasons, partitions=3) == (
        {"ready": True, "blocked": {}, "partitions": 3},
        200,
    )
    health.block("segment", "Segment answered 401")
    assert readiness(health.blocked_reasons) == (
        {"ready": False, "blocked": {"segment": "Segment answered 401"}},
        503,
    )
    health.unblock("segment")
    assert health.ready


async def test_the_loader_answers_the_shared_shape() -> None:
    loader = Loader(Settings(_env_file=None), "postgresql://127.0.0.1:1/none")  # type: ignore[call-arg]
    async with TestClient(TestServer(pages(loader))) as client:
        alive = await client.get("/healthz")
        assert alive.status == 200 and await alive.json() == ALIVE == {"status": "alive"}
        starting = await client.get("/readyz")
        body = await starting.json()
        assert starting.status == 503 and body["ready"] is False
        assert set(body["blocked"]) == {"consumer", "database"}
        loader.health.unblock("consumer")
        loader.health.unblock("database")
        ready = await client.get("/readyz")
        assert ready.status == 200 and await ready.json() == {"ready": True, "blocked": {}}
