"""Real-process test harness: a broker, receiver and worker processes, and HTTP helpers.

Nothing of kseg is mocked: each test gets its own app id (so its own topics and consumer group) on the
session's broker, and real `kseg receiver` / `kseg worker` processes configured through environment
variables, exactly as an operator would run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from app.kafka import read_records
from app.runtime.watchdog import EX_TEMPFAIL
from app.spawner import spawn_role
from app.worker.app import EMBEDDED_MIN_SESSION_TIMEOUT
from tests.parallel import free_port

ROOT = Path(__file__).resolve().parent.parent
#: Settings whose values are secrets: no process may log them (checked after every pipeline test).
SECRET_SETTINGS = (
    "SEGMENT_WRITE_KEY",
    "KSEG_POSTBACK_TOKENS",
    "KSEG_LINK_TOKENS",
    "SEGMENT_WEBHOOK_SECRET",
    "SEGMENT_WEBHOOK_HEADER_SECRET",
    "KAFKA_SASL_PASSWORD",
    "KOCHAVA_API_KEY",
    "KSEG_PRIVACY_TOKENS",
    "SEGMENT_PUBLIC_API_TOKEN",
    "KOCHAVA_PRIVACY_API_KEY",
    "KSEG_CONSOLE_TOKENS",
    "KSEG_CONSOLE_SECRET",
)
TOKEN = "test-token"
LINK_TOKEN = "test-link-token"


async def wait_for(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


class Pipeline:
    """One kseg deployment under test: its env, its processes and its ports."""

    def __init__(self, bootstrap: str, data_dir: Path, segment_url: str | None, **env: str) -> None:
        self.app_id = f"t{uuid.uuid4().hex[:10]}"
        self.http_port = free_port()
        self.worker_ports: dict[str, int] = {}
        self.data_dir = data_dir
        self.bootstrap = bootstrap
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KSEG_EMBEDDED_BROKER": os.environ.get("KSEG_TEST_EMBEDDED", "true"),
            "KSEG_APP_ID": self.app_id,
            "KSEG_HTTP_PORT": str(self.http_port),
            "KSEG_POSTBACK_TOKENS": TOKEN,
            "KSEG_LINK_TOKENS": LINK_TOKEN,
            "KSEG_DATA_DIR": str(data_dir),
            "KSEG_SESSION_TIMEOUT": str(EMBEDDED_MIN_SESSION_TIMEOUT),
            "KSEG_TOPIC_PARTITIONS": "4",
            "KSEG_NAMESPACE": "test",
            "KSEG_STALL_SECONDS": "8",
            "SEGMENT_BATCH_LINGER": "0.2",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
        if segment_url:
            self.env["SEGMENT_WRITE_KEY"] = "test-write-key"
            self.env["SEGMENT_ENDPOINT"] = segment_url
        else:
            self.env.pop("SEGMENT_WRITE_KEY", None)
        self.env.update(env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.worker_env: dict[str, dict[str, str]] = {}
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self.logs: dict[str, Path] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def topic(self, name: str) -> str:
        return f"{self.app_id}.{name}"

    def _spawn(self, name: str, role: str, extra: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.data_dir / f"{name}.log"
        self.logs[name] = log
        proc = spawn_role(role, {**self.env, **extra}, log_path=log, cwd=ROOT)
        self.procs[name] = proc
        return proc

    async def start_receiver(self) -> None:
        self._spawn("receiver", "receiver", {})
        await wait_for(lambda: self._ready(f"{self.url}/readyz", "receiver"), 30, "receiver /readyz")

    async def start(self) -> Pipeline:
        """A receiver and one worker, both ready: the deployment most tests need."""
        await self.start_receiver()
        await self.start_worker()
        return self

    async def start_worker(self, name: str = "worker-1", wait_ready: bool = True, **extra: str) -> None:
        port = self.worker_ports.setdefault(name, free_port())
        self.worker_env[name] = {"KSEG_WORKER_ID": name, "KSEG_WORKER_WEB_PORT": str(port), **extra}
        self._spawn(name, "worker", self.worker_env[name])
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise())
        if wait_ready:
            await self.wait_worker_ready(name)

    async def start_sinks(self, name: str = "sinks", wait_ready: bool = True, **extra: str) -> None:
        """A `kseg sinks` process (the Segment and Kochava sinks alone), its pages on a port of its own."""
        port = self.worker_ports.setdefault(name, free_port())
        self._spawn(name, "sinks", {"KSEG_WORKER_ID": name, "KSEG_SINKS_WEB_PORT": str(port), **extra})
        if wait_ready:
            await self.wait_worker_ready(name)

    async def _supervise(self) -> None:
        """Restart a worker that asks for it (exit code 75), as systemd or Kubernetes would."""
        while True:
            await asyncio.sleep(0.5)
            for name, env in self.worker_env.items():
                proc = self.procs.get(name)
                if proc is not None and proc.poll() == EX_TEMPFAIL:
                    self.restarts += 1
                    self._spawn(name, "worker", env)

    async def wait_worker_ready(self, name: str = "worker-1", timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{self.worker_ports[name]}/readyz"
        await wait_for(lambda: self._ready(url, name), timeout, f"{name} /readyz")

    async def _ready(self, url: str, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r,
            ):
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    def tail(self, name: str, lines: int = 60) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def secrets_in_logs(self) -> list[str]:
        """`log: VARIABLE` for each configured secret (write key, tokens, webhook secrets, passwords) that
        appears in a process log: none may, whatever the process did."""
        values = {
            name: value
            for name in SECRET_SETTINGS
            for value in self.env.get(name, "").split(",")
            if len(value.strip()) >= 6
        }
        found = []
        for log, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            found += [f"{log}: {name}" for name, value in values.items() if value.strip() in text]
        return found

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(30)

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- traffic ------------------------------------------------------------------------------
    async def get(
        self,
        params: dict[str, Any] | str,
        token: str | None = TOKEN,
        path: str = "/v1/kochava/postbacks",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        query = params if isinstance(params, str) else urlencode(params)
        if token is not None:
            query = f"{query}&token={token}" if query else f"token={token}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}{path}?{query}", headers=headers) as r,
        ):
            return r.status, await _json(r), dict(r.headers)

    async def post(
        self,
        path: str,
        body: bytes | dict[str, Any] | list[Any],
        token: str | None = TOKEN,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        hdrs = {"Content-Type": content_type, **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}{path}", data=data, headers=hdrs) as r,
        ):
            return r.status, await _json(r), dict(r.headers)

    async def worker_metrics(self, name: str = "worker-1") -> str:
        url = f"http://127.0.0.1:{self.worker_ports[name]}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            return await r.text()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus text page (0 when absent), whatever the label order."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    text = await response.read()
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(text)
        return value if isinstance(value, dict) else {"value": value}
    return {"raw": text.decode("utf-8", "replace")}


async def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run the real `kseg` CLI with `env`; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def items(values: list[Any]) -> list[Any]:
    """The records inside decoded values of an internal topic: a `Batched` record's items (one partition's
    share of a micro-batch, docs/topics.md) one by one, any other value as it is."""
    return [i["value"] for v in values for i in _records(v)]


def _records(value: Any) -> list[Any]:
    return value["records"] if value.get("kind") == "batch" else [{"value": value}]


def segment_calls(values: list[Any]) -> list[Any]:
    """Every Segment call in decoded `segment.outbox` values, whichever shape each record has."""
    return [m for record in items(values) for m in record.get("messages", [record])]


async def read_topic(bootstrap: str, topic: str, timeout: float = 10.0) -> list[tuple[bytes | None, Any]]:
    """Every record now in `topic` (kseg's own reader, `app.kafka.read_records`), decoded."""
    records = await asyncio.wait_for(read_records({"bootstrap_servers": bootstrap}, topic), timeout)
    return [(r.key, orjson.loads(r.value)) for r in records]
