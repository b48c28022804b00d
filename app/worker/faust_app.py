"""The faust application, built from kseg's typed Settings (one place for every stream setting).

Agents live next to their domain (`app.pipeline`, `app.identity`, `app.sinks`) and register on the
`app` object defined here; `app.worker.main` imports them all before the worker starts.
"""

from __future__ import annotations

from pathlib import Path

import faust

from app.config import Settings, get_settings
from app.worker.web import web_settings


def broker_urls(bootstrap: str) -> list[str]:
    """faust broker URLs on kseg's transport (faust's aiokafka one, with a short fetch wait)."""
    return [f"ksegkafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def state_dir(settings: Settings) -> Path:
    """One RocksDB directory per worker: workers cannot share one (fs#98)."""
    return (settings.kseg_data_dir / "state" / settings.kseg_app_id / settings.kseg_worker_id).resolve()


def create_app(settings: Settings) -> faust.App:
    session = settings.kseg_session_timeout
    state_dir(settings).parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.kseg_app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers or "127.0.0.1:9092"),
        store="rocksdb://",
        datadir=str(state_dir(settings)),
        autodiscover=False,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger_ms=0,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        topic_partitions=settings.kseg_topic_partitions,
        topic_replication_factor=settings.kseg_topic_replication,
        topic_allow_declare=True,
        table_standby_replicas=0 if settings.kseg_embedded_broker else 1,
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, min(3.0, session / 6)),
        broker_rebalance_timeout=max(session, 10.0),
        broker_request_timeout=max(session * 1.5, 30.0),
        broker_max_poll_records=500,
        consumer_auto_offset_reset="earliest",
        # Static membership: a restarted worker takes its old place without waiting for a rebalance.
        consumer_group_instance_id=f"{settings.kseg_app_id}-{settings.kseg_worker_id}",
        # Shutdown does not wait for in-flight events to be acked: a sink held by a Segment 401 would
        # block it forever. Safe because only acked offsets are committed and every handler is
        # idempotent (dedupe table, deterministic messageIds).
        stream_wait_empty=False,
        **web_settings(settings),
    )


settings = get_settings()
app = create_app(settings)
