"""A local kseg deployment of real processes (receiver and worker) on one broker, for the benchmarks.

`bench/run.py` and `bench/identity_bench.py` measure kseg as an operator runs it: separate `kseg receiver`
and `kseg worker` processes configured through environment variables, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from app.broker.embedded import free_port
from app.spawner import spawn_role, stop_all

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Deployment:
    """A broker, a receiver and a worker as separate processes, like production."""

    bootstrap: str
    segment_url: str
    data_dir: Path
    app_id: str = field(default_factory=lambda: f"bench{int(time.time() * 1000) % 10_000_000}")
    token: str = "bench"
    link_token: str = "bench-links"
    extra_env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    worker_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Web port of each extra worker ("worker2", "worker3", ...); "worker" uses `worker_port`.
    extra_worker_ports: dict[str, int] = field(default_factory=dict)
    #: Web port of a `kseg sinks` process (role "sinks").
    sinks_port: int = field(default_factory=free_port)
    #: Source tree the workers run from: this one, or an older kseg's (the bench's `today` scenario).
    worker_root: Path = ROOT

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KSEG_EMBEDDED_BROKER": "true",
            "KSEG_APP_ID": self.app_id,
            "KSEG_HTTP_PORT": str(self.http_port),
            "KSEG_WORKER_WEB_PORT": str(self.worker_port),
            "KSEG_POSTBACK_TOKENS": self.token,
            "KSEG_LINK_TOKENS": self.link_token,
            "KSEG_DATA_DIR": str(self.data_dir),
            "KSEG_SESSION_TIMEOUT": "10",
            "KSEG_TOPIC_PARTITIONS": "8",
            "SEGMENT_WRITE_KEY": "bench-key",
            "SEGMENT_ENDPOINT": self.segment_url,
            "SEGMENT_MAX_REQUESTS_PER_SECOND": "1000",
            "LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        """The postback URL."""
        return f"{self.base_url}/v1/kochava/postbacks"

    def topic(self, name: str) -> str:
        return f"{self.app_id}.{name}"

    def spawn(self, role: str) -> None:
        """Start `role`: "receiver", "worker", or "worker2", "worker3", ... (more workers in the same group,
        each with its own worker id, RocksDB directory and web port), or "sinks" (`kseg sinks`)."""
        env = self.env
        if role == "sinks":
            env = {**env, "KSEG_WORKER_ID": role, "KSEG_SINKS_WEB_PORT": str(self.sinks_port)}
        if role.startswith("worker") and role != "worker":
            port = self.extra_worker_ports.setdefault(role, free_port())
            env = {**env, "KSEG_WORKER_ID": role, "KSEG_WORKER_WEB_PORT": str(port)}
        command = "worker" if role.startswith("worker") else role
        root = self.worker_root if role.startswith("worker") else ROOT  # `python -m` imports from cwd first
        self.procs[role] = spawn_role(command, env, log_path=self.data_dir / f"{role}.log", cwd=root)

    def port_of(self, role: str) -> int:
        """The HTTP port of a role (the receiver's API, or a worker's /metrics and /readyz)."""
        if role == "receiver":
            return self.http_port
        if role == "sinks":
            return self.sinks_port
        return self.worker_port if role == "worker" else self.extra_worker_ports[role]

    async def wait_ready(self, role: str, timeout: float = 90) -> None:
        port = self.port_of(role)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.procs[role].poll() is not None:
                    raise RuntimeError(f"{role} exited; see {self.data_dir / (role + '.log')}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{role} not ready after {timeout}s")

    async def metrics_text(self, role: str = "worker") -> str:
        """The Prometheus text of a role's /metrics."""
        url = f"http://127.0.0.1:{self.port_of(role)}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            return await r.text()

    async def raw_lag(self) -> float:
        return await self.lag(".postbacks.raw")

    async def lag(self, topic_part: str = "") -> float:
        """The worker's consumer lag summed over its input topics whose name contains `topic_part`
        (all of them by default: raw postbacks, outboxes, index updates, ...)."""
        text = await self.metrics_text("worker")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("kseg_consumer_lag") and topic_part in line
        )

    async def start(self, *roles: str) -> Deployment:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for role in roles:
            self.spawn(role)
        for role in roles:
            await self.wait_ready(role)
        return self

    def exited(self) -> list[str]:
        """Roles whose process has exited."""
        return [role for role, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        stop_all(self.procs.values())
