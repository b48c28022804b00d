"""`kseg run`: the embedded broker and warehouse (when needed), receiver, worker and warehouse loader,
stopped together and restarted when they exit (children come from `app.spawner`)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from app.spawner import spawn_role, stop_all
from app.warehouse.embedded import EmbeddedWarehouse, pgdata_dir

#: A child may be restarted this many times within RESTART_WINDOW seconds before kseg gives up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0

BANNER = """
kseg is running
  receiver   http://{host}:{port}/v1/kochava/postbacks   (metrics: /metrics, readiness: /readyz)
  worker     http://{host}:{wport}/metrics
  kafka      {bootstrap}{embedded}{dlq_hint}
  warehouse  {warehouse}   (loader metrics: http://{host}:{lport}/metrics)
             revenue by install campaign: kseg report roas --by campaign
  segment    {segment}

Try it:
  curl '{curl}'

Logs of the receiver, worker, loader and broker: {logs}
Ctrl-C stops everything. Starting ...
"""


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def taken_ports(settings: Settings) -> list[str]:
    """The ports `kseg run` needs that something else already listens on, each said with the setting
    that moves it. Checked before anything starts: a second `kseg run` must not half-start (its worker
    crash-looping while the first one's receiver keeps answering 200)."""
    web = settings.kseg_worker_web_host
    wanted = [
        ("receiver", "KSEG_HTTP_PORT", settings.kseg_http_host, settings.kseg_http_port),
        ("worker", "KSEG_WORKER_WEB_PORT", web, settings.kseg_worker_web_port),
        ("warehouse loader", "KSEG_WAREHOUSE_WEB_PORT", web, settings.kseg_warehouse_web_port),
    ]
    if not settings.kafka_bootstrap_servers and settings.kseg_embedded_broker_port:
        port = settings.kseg_embedded_broker_port
        wanted.append(("embedded broker", "KSEG_EMBEDDED_BROKER_PORT", "127.0.0.1", port))
    problems = []
    for role, setting, host, port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is fine
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                problems.append(
                    f"port {port} on {host} ({role}, {setting}) is already in use — is another `kseg run` "
                    f"running? Stop it, or set {setting} to a free port."
                )
    return problems


def _ready(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
        return bool(response.status == 200)
    return False


def child_env(settings: Settings, bootstrap: str, embedded: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    if embedded:
        env["KSEG_EMBEDDED_BROKER"] = "true"
        # Tansu makes a group join wait half the session timeout: keep it short for a dev broker.
        env.setdefault("KSEG_SESSION_TIMEOUT", "10")
    if not settings.postback_tokens:
        env["KSEG_POSTBACK_TOKENS"] = "dev"
    if not settings.link_tokens:
        env["KSEG_LINK_TOKENS"] = "dev-links"  # the links API needs its own credential (docs/security.md)
    return env


def run(settings: Settings) -> int:
    problems = taken_ports(settings)
    if problems:
        for problem in problems:
            _say(f"kseg run: {problem}")
        return 2
    broker: EmbeddedBroker | None = None
    embedded = not settings.kafka_bootstrap_servers
    logs = Path(settings.kseg_data_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if embedded:
        log_path = logs / "embedded-broker.log"
        broker = EmbeddedBroker(port=settings.kseg_embedded_broker_port, log_path=log_path).start()
        bootstrap = broker.bootstrap_servers
    else:
        bootstrap = settings.bootstrap
    if not settings.postback_tokens:
        _say("!" * 78)
        _say("!! KSEG_POSTBACK_TOKENS is not set: accepting the development token `dev`.            !!")
        _say("!! Anyone who can reach this port can post data. Set KSEG_POSTBACK_TOKENS for real use. !!")
        if not settings.link_tokens:
            _say("!! The links API (POST /v1/identity/links) takes KSEG_LINK_TOKENS, here `dev-links`.    !!")
        _say("!" * 78)
    env = child_env(settings, bootstrap, embedded)
    # Print the development token, never a configured one: stdout ends up in journals and CI logs.
    token = "dev" if not settings.postback_tokens else "<one of KSEG_POSTBACK_TOKENS>"
    host, port = settings.kseg_http_host, settings.kseg_http_port
    curl = (
        f"http://{host}:{port}/v1/kochava/postbacks?token={token}&event_name=_install"
        "&kochava_device_id=KI1234&idfa=6D92078A-8246-4BA4-AE5B-76104861E7DC&network_name=ExampleNetwork"
        "&campaign_name=Spring&site_id=site_42&creative_id=cr_99&country=US&timestamp=1735689600"
    )
    segment = (
        f"dry run: batches go to {Path(settings.kseg_data_dir).resolve() / 'segment-outbox.jsonl'}"
        if settings.dry_run
        else settings.segment_endpoint
    )
    children: list[subprocess.Popen[bytes]] = []
    stopping = False
    # Warehouse: embedded PostgreSQL unless KSEG_WAREHOUSE_URL names one; the loader is a child.
    warehouse = None
    if not settings.kseg_warehouse_url:
        try:
            warehouse = EmbeddedWarehouse(pgdata_dir(settings.kseg_data_dir)).start()
        except Exception as exc:
            _say(
                f"kseg run: cannot start the embedded PostgreSQL in {pgdata_dir(settings.kseg_data_dir)} "
                f"({exc}); see its log there, or set KSEG_WAREHOUSE_URL to a PostgreSQL of yours"
            )
            if broker is not None:
                broker.stop()
            return 1
    warehouse_text = (
        f"embedded PostgreSQL, data in {pgdata_dir(settings.kseg_data_dir)}"
        if warehouse
        else "KSEG_WAREHOUSE_URL"
    )
    roles = ("receiver", "worker", "warehouse load")

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        log_paths = {role: logs / f"{role.replace(' ', '-')}.log" for role in roles}
        started = time.monotonic()
        children = [spawn_role(role.split(), env, log_path=log_paths[role]) for role in roles]
        _say(
            BANNER.format(
                host=host,
                port=port,
                wport=settings.kseg_worker_web_port,
                lport=settings.kseg_warehouse_web_port,
                warehouse=warehouse_text,
                bootstrap=bootstrap,
                embedded=" (embedded Tansu, memory only: data is lost when kseg stops)" if embedded else "",
                segment=segment,
                dlq_hint=(
                    "\n             for `kseg dlq`: export "
                    f"KAFKA_BOOTSTRAP_SERVERS={bootstrap} KSEG_EMBEDDED_BROKER=true"
                    if embedded
                    else ""
                ),
                curl=curl,
                logs=logs.resolve(),
            )
        )
        web = settings.kseg_worker_web_host
        probes = [
            f"http://{host}:{port}/readyz",
            f"http://{web}:{settings.kseg_worker_web_port}/readyz",
            f"http://{web}:{settings.kseg_warehouse_web_port}/readyz",
        ]
        announced = False
        restarts: list[float] = []
        while not stopping:
            if not announced and all(_ready(url) for url in probes):
                announced = True
                _say(
                    f"kseg run: ready after {time.monotonic() - started:.0f} s "
                    "(receiver, worker and warehouse loader answer /readyz): send the curl above"
                )
            for i, role in enumerate(roles):
                code = children[i].poll()
                if code is None or stopping:
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
                if len(restarts) > MAX_RESTARTS:
                    _say(
                        f"kseg run: the {role} exited with code {code} and keeps failing; stopping everything"
                    )
                    exit_code, stopping = code or 1, True
                    break
                tail = log_paths[role].read_text(errors="replace").splitlines()[-15:]
                _say("\n".join(f"  {role} | {line}" for line in tail))
                _say(f"kseg run: the {role} exited with code {code} ({log_paths[role]}); restarting it")
                children[i] = spawn_role(role.split(), env, log_path=log_paths[role])
            time.sleep(0.2)
    finally:
        _say("kseg run: stopping receiver, worker and warehouse loader ...")
        stop_all(children)
        if warehouse is not None and warehouse.started_here:
            warehouse.stop()
        if broker is not None:
            broker.stop()
        _say("kseg run: stopped")
    return exit_code
