"""`kseg run`: the embedded broker and warehouse (when needed), receiver, worker, sinks and warehouse
loader, restarted when they exit (children come from `app.spawner`) and stopped in dependency order.

The worker runs with KSEG_WORKER_SINKS=false and a `kseg sinks` process delivers its outboxes: on a
2-core machine the worker is bound to one core, and the sinks' HTTP, gzip and consumers take the other.

Ctrl-C or SIGTERM stops the receiver first (no new input), then the worker and the loader (their final
commits need Kafka and the database), then the sinks (the worker's last outputs are in the outboxes by
then), then the database and the broker. Children live in sessions of
their own, so a terminal's Ctrl-C reaches only `kseg run`. If `kseg run` itself is killed, its children
get SIGTERM from the kernel (PDEATHSIG), and a small guard process stops the embedded PostgreSQL (which
pg_ctl detaches from every parent); the next `kseg run` says what the previous one left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
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
from app.warehouse.embedded import EmbeddedWarehouse, pgdata_dir, running_url

#: A child may be restarted this many times within RESTART_WINDOW seconds before kseg gives up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0

BANNER = """
kseg is running
  receiver   http://{host}:{port}/v1/kochava/postbacks   (metrics: /metrics, readiness: /readyz)
  worker     http://{host}:{wport}/metrics
  sinks      http://{host}:{sport}/metrics   (Segment and Kochava delivery; readiness: /readyz)
  kafka      {bootstrap}{embedded}{dlq_hint}
  warehouse  {warehouse}   (loader metrics: http://{host}:{lport}/metrics)
             revenue by install campaign: kseg report roas --by campaign
  segment    {segment}
  console    http://{chost}:{cport}   ({ctoken})

Try it:
  curl '{curl}'

Logs of the receiver, worker, sinks, loader, console and broker: {logs}
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
        ("sinks", "KSEG_SINKS_WEB_PORT", web, settings.kseg_sinks_web_port),
        ("warehouse loader", "KSEG_WAREHOUSE_WEB_PORT", web, settings.kseg_warehouse_web_port),
        ("console", "KSEG_CONSOLE_PORT", settings.kseg_console_host, settings.kseg_console_port),
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


def sinks_note(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """What to tell an operator who set KSEG_WORKER_SINKS=true for `kseg run`: it runs the sinks in their
    own process whatever the setting says (both would share the outboxes, at twice the consumers)."""
    value = environ.get("KSEG_WORKER_SINKS", "").strip().lower()
    if value not in {"1", "true", "yes", "on"}:
        return None
    return (
        "kseg run: KSEG_WORKER_SINKS=true is ignored here: kseg run delivers the outboxes from its own "
        "`kseg sinks` process and runs the worker without sinks. To run the sinks inside a worker, start "
        "`kseg worker` yourself (docs/operations.md)."
    )


def child_env(
    settings: Settings, bootstrap: str, embedded: bool, console_token: str | None = None
) -> dict[str, str]:
    """The children's environment; `console_token` is the development operator token of a console
    that has no KSEG_CONSOLE_TOKENS."""
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["KSEG_WORKER_SINKS"] = "false"  # the `sinks` child delivers the outboxes
    if embedded:
        env["KSEG_EMBEDDED_BROKER"] = "true"
        # Tansu makes a group join wait half the session timeout: keep it short for a dev broker.
        env.setdefault("KSEG_SESSION_TIMEOUT", "10")
    if not settings.postback_tokens:
        env["KSEG_POSTBACK_TOKENS"] = "dev"
    if not settings.link_tokens:
        env["KSEG_LINK_TOKENS"] = "dev-links"  # the links API needs its own credential (docs/security.md)
    if console_token and not settings.console_tokens:
        env["KSEG_CONSOLE_TOKENS"] = f"operator={console_token}"
    return env


def guard_warehouse(pgdata: str) -> None:
    """Body of the guard process: wait until `kseg run` is gone (EOF on stdin, whose only writer it is),
    however it went, then stop the embedded PostgreSQL if it still runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(65536):
        pass
    EmbeddedWarehouse(Path(pgdata)).stop()


def start_guard(pgdata: Path) -> subprocess.Popen[bytes]:
    """The guard of the embedded PostgreSQL this `kseg run` owns (see `guard_warehouse`)."""
    code = "import sys; from app.supervisor import guard_warehouse; guard_warehouse(sys.argv[1])"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(pgdata)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def previous_run(pidfile: Path) -> int | None:
    """The pid of a `kseg run` on this data directory that did not stop cleanly (its pidfile remains,
    its process is gone), else None."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return None if _pid_alive(pid) else pid


def stop_in_order(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """The receiver first (no new input), then the worker, loader and console together, then the sinks
    (what the worker wrote to the outboxes on its way out is there to deliver until they stop)."""
    last = ("receiver", "sinks")
    stop_all([children[role] for role in children if role == "receiver"])
    stop_all([child for role, child in children.items() if role not in last])
    stop_all([children[role] for role in children if role == "sinks"])


def run(settings: Settings) -> int:
    problems = taken_ports(settings)
    if problems:
        for problem in problems:
            _say(f"kseg run: {problem}")
        return 2
    data_dir = Path(settings.kseg_data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile = data_dir / "kseg-run.pid"
    killed = previous_run(pidfile)
    if killed is not None:
        _say(f"kseg run: the previous kseg run (pid {killed}) on {data_dir.resolve()} did not stop cleanly")
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        return _run(settings, killed)
    finally:
        with contextlib.suppress(OSError):
            pidfile.unlink()


def _run(settings: Settings, killed: int | None) -> int:
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
    note = sinks_note(os.environ)
    if note:
        _say(note)
    if not settings.postback_tokens:
        _say("!" * 78)
        _say("!! KSEG_POSTBACK_TOKENS is not set: accepting the development token `dev`.            !!")
        _say("!! Anyone who can reach this port can post data. Set KSEG_POSTBACK_TOKENS for real use. !!")
        if not settings.link_tokens:
            _say("!! The links API (POST /v1/identity/links) takes KSEG_LINK_TOKENS, here `dev-links`.    !!")
        _say("!" * 78)
    # The console's development operator token: made for this run only, printed once in the banner.
    console_token = None if settings.console_tokens else secrets.token_urlsafe(18)
    env = child_env(settings, bootstrap, embedded, console_token)
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
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False
    # Warehouse: embedded PostgreSQL unless KSEG_WAREHOUSE_URL names one; the loader is a child.
    warehouse = None
    guard = None
    if not settings.kseg_warehouse_url:
        pgdata = pgdata_dir(settings.kseg_data_dir)
        left_running = running_url(pgdata) is not None
        try:
            warehouse = EmbeddedWarehouse(pgdata).start()
            if left_running and killed is not None:
                # Ours in all but name: the killed run started it. Reuse it, and stop it on the way out.
                warehouse.started_here = True
                _say(f"kseg run: reusing the embedded PostgreSQL that run left running in {pgdata}")
            elif left_running:
                _say(
                    f"kseg run: using the embedded PostgreSQL already running in {pgdata}; kseg run did not "
                    "start it, so it leaves it running when it stops"
                )
            if warehouse.started_here:
                guard = start_guard(pgdata)
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
    roles = ("receiver", "worker", "sinks", "warehouse load", "console")

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        log_paths = {role: logs / f"{role.replace(' ', '-')}.log" for role in roles}
        started = time.monotonic()
        # The sinks process's client ids, group instance and state directory name it, not the worker.
        envs = {role: env | {"KSEG_WORKER_ID": "sinks"} if role == "sinks" else env for role in roles}
        children = {role: spawn_role(role.split(), envs[role], log_path=log_paths[role]) for role in roles}
        _say(
            BANNER.format(
                host=host,
                port=port,
                wport=settings.kseg_worker_web_port,
                sport=settings.kseg_sinks_web_port,
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
                chost=settings.kseg_console_host,
                cport=settings.kseg_console_port,
                ctoken=(
                    f"development operator token: {console_token}"
                    if console_token
                    else "log in with a token of KSEG_CONSOLE_TOKENS"
                ),
            )
        )
        web = settings.kseg_worker_web_host
        probes = [
            f"http://{host}:{port}/readyz",
            f"http://{web}:{settings.kseg_worker_web_port}/readyz",
            f"http://{web}:{settings.kseg_sinks_web_port}/readyz",
            f"http://{web}:{settings.kseg_warehouse_web_port}/readyz",
            f"http://{settings.kseg_console_host}:{settings.kseg_console_port}/readyz",
        ]
        announced = False
        restarts: list[float] = []
        while not stopping:
            if not announced and all(_ready(url) for url in probes):
                announced = True
                _say(
                    f"kseg run: ready after {time.monotonic() - started:.0f} s (receiver, worker, sinks, "
                    "warehouse loader and console answer /readyz): send the curl above"
                )
            for role in roles:
                code = children[role].poll()
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
                children[role] = spawn_role(role.split(), envs[role], log_path=log_paths[role])
            time.sleep(0.2)
    finally:
        _say("kseg run: stopping the receiver, then the worker and the warehouse loader, then the sinks ...")
        stop_in_order(children)
        if warehouse is not None and warehouse.started_here:
            _say("kseg run: stopping the embedded PostgreSQL ...")
            warehouse.stop()
        if guard is not None:
            guard.communicate()  # EOF: the guard finds the database stopped and exits
        if broker is not None:
            broker.stop()
        _say("kseg run: stopped")
    return exit_code
