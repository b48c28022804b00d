"""The worker's faust web server: loopback unless configured, none of faust's built-in data views.

The running-worker proof (`/table/...` and `/router/...` answer 404 while `/metrics`, `/healthz`,
`/readyz` answer 200) is in tests/integration/test_hostile_input.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings
from app.worker.app import build_faust_app


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap_servers="127.0.0.1:9", kseg_data_dir=tmp_path, **kw
    )


def test_worker_web_stays_on_loopback_when_the_receiver_listens_publicly(tmp_path: Path) -> None:
    conf = build_faust_app(settings(tmp_path, kseg_http_host="0.0.0.0")).conf
    assert (conf.web_bind, conf.web_host) == ("127.0.0.1", "127.0.0.1")
    conf = build_faust_app(
        settings(tmp_path, kseg_worker_web_host="10.0.0.7", kseg_worker_web_port=7000)
    ).conf
    assert (conf.web_bind, conf.web_port) == ("10.0.0.7", 7000)


def test_faust_table_router_and_debug_views_are_off(tmp_path: Path) -> None:
    conf = build_faust_app(settings(tmp_path)).conf
    assert conf.web_enabled
    assert not conf.web_tables_enabled
    assert not conf.web_router_enabled
    assert not conf.web_stats_enabled
    assert not conf.web_graph_enabled
    assert not conf.web_metrics_enabled
