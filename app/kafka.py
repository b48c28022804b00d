"""Kafka client settings shared by every kseg producer, so all of them treat the broker the same way."""

from __future__ import annotations

from typing import Any

from app.config import Settings


def producer_config(settings: Settings) -> dict[str, Any]:
    """aiokafka producer kwargs: acks=all always; idempotence and batch size per broker kind."""
    return {
        "bootstrap_servers": settings.bootstrap,
        "acks": "all",
        "enable_idempotence": settings.idempotence,
        "max_batch_size": settings.producer_max_batch_bytes,
        "linger_ms": 0,
        "request_timeout_ms": int(settings.kseg_produce_timeout * 1000),
        "client_id": f"{settings.kseg_app_id}-producer",
    }
