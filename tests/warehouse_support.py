"""Test support for the warehouse: a real embedded PostgreSQL per test, loader processes, queries.

Import the fixtures into a test module (`from tests.warehouse_support import warehouse_pg`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from app.mapping.warehouse import WAREHOUSE_COLUMNS
from app.spawner import spawn_role
from app.warehouse.embedded import EmbeddedWarehouse
from tests.harness import ROOT, Pipeline, wait_for
from tests.parallel import free_port


@pytest.fixture
def warehouse_pg() -> Iterator[EmbeddedWarehouse]:
    """A fresh embedded PostgreSQL server of this test's own (stopped and deleted afterwards).

    Not under pytest's tmp_path: the server runs as its own system user, which must traverse the parent
    directories, and pytest resets /tmp/pytest-of-<user> to mode 0700 whenever a session starts.
    """
    base = Path(tempfile.mkdtemp(prefix="kseg-pg-"))
    base.chmod(0o755)
    server = EmbeddedWarehouse(base / "pg").start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:  # commits on exit
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def row(**values: Any) -> dict[str, Any]:
    """A warehouse row with every published column (null unless given) and sensible required values."""
    base: dict[str, Any] = {c: None for c in WAREHOUSE_COLUMNS}
    base.update(
        message_id="m-" + str(values.get("event_id", "x")),
        event_name="_install",
        segment_event="Install Attributed",
        received_at="2025-01-01T00:00:00.000Z",
        anonymous_id="anon-1",
        resolved_via="anonymous",
        is_reengagement=False,
        lifetime_revenue=0,
        purchase_count=0,
        converted=False,
        properties="{}",
        profile="kochava-default",
        profile_version="1",
    )
    base.update(values)
    return base


def money(value: Any) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"))


class LoaderProcess:
    """A real `kseg warehouse load` process for a pipeline's topics, against `url`."""

    def __init__(self, pipeline: Pipeline, url: str, name: str = "loader") -> None:
        self.pipeline, self.url, self.name = pipeline, url, name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **extra: str) -> LoaderProcess:
        log = self.pipeline.data_dir / f"{self.name}.log"
        self.pipeline.logs[self.name] = log
        env = {
            **self.pipeline.env,
            "KSEG_WAREHOUSE_URL": self.url,
            "KSEG_WAREHOUSE_WEB_PORT": str(self.port),
            "KSEG_WAREHOUSE_BATCH_WAIT": "0.3",
            "KSEG_WAREHOUSE_RETRY_MAX": "2",
            **extra,
        }
        self.proc = spawn_role(["warehouse", "load"], env, log_path=log, cwd=ROOT)
        self.pipeline.procs[self.name] = self.proc
        return self

    async def page(self, path: str) -> tuple[int, str]:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{self.port}{path}", timeout=aiohttp.ClientTimeout(total=3)
                ) as r,
            ):
                return r.status, await r.text()
        except (TimeoutError, aiohttp.ClientError):
            return 0, ""

    async def wait_ready(self, timeout: float = 60) -> None:
        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"loader exited with {self.proc.returncode}:\n{self.pipeline.tail(self.name)}"
                )
            return (await self.page("/readyz"))[0] == 200

        await wait_for(ready, timeout, "loader /readyz")

    async def metric(self, name: str, **labels: str) -> float | None:
        status, text = await self.page("/metrics")
        if status != 200:
            return None
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return None
