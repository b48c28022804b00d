"""The worker's web server settings: loopback by default, and none of faust's built-in views.

faust serves `/table/...` (every key and value of every table: user ids, hashed emails, device ids)
and `/router/...` (which worker owns a key, the cluster's URLs) without authentication, plus
statistics and a service graph in debug mode. kseg uses no `@table_route`, so all of them are off;
the worker serves only kseg's own pages (/metrics, /healthz, /readyz, /debug/partitions).
"""

from __future__ import annotations

from typing import Any

from app.sections import WorkerSettings


def web_settings(settings: WorkerSettings, port: int | None = None) -> dict[str, Any]:
    """Keyword arguments for `faust.App(...)`; `port` (default KSEG_WORKER_WEB_PORT) for `kseg sinks`."""
    return {
        "web_enabled": True,
        "web_bind": settings.kseg_worker_web_host,
        "web_host": settings.kseg_worker_web_host,
        "web_port": settings.kseg_worker_web_port if port is None else port,
        "web_in_thread": False,
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "web_stats_enabled": False,
        "web_graph_enabled": False,
        "web_metrics_enabled": False,
    }
