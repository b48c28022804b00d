"""Package data and the image: kseg as the Docker image runs it, from its wheel.

The wheel is built from this checkout and installed into a fresh virtual environment outside the
repository, as docker/Dockerfile does; every command then runs from a directory outside the repository,
so nothing can be read from the source tree. There is no Docker engine here: the image's entry commands
(`kseg topics apply`, `kseg receiver`, `kseg worker`) and the compose file's health-check commands run
from that environment against the embedded broker instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml

from app.topics import catalogue
from app.worker.app import EMBEDDED_MIN_SESSION_TIMEOUT
from tests.harness import ROOT, wait_for
from tests.ops_files import family, referenced_families
from tests.parallel import free_port

COMPOSE = ROOT / "docker" / "compose.yaml"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("kseg-*.whl")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "-q", str(wheel)],
        check=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    work = base / "elsewhere"
    work.mkdir()
    yield {"bin": env_dir / "bin", "work": work}


def _env(**extra: str) -> dict[str, str]:
    """A clean environment: no PYTHONPATH (it would reach the source tree), no inherited KSEG_/KAFKA_."""
    keep = {
        k: v for k, v in os.environ.items() if not k.startswith(("KSEG_", "KAFKA_", "SEGMENT_", "PYTHON"))
    }
    return {**keep, "PYTHONUNBUFFERED": "1", **extra}


def _run(installed: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(installed["bin"] / args[0]), *args[1:]],
        cwd=installed["work"],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_help_mapping_try_and_catalogue_from_the_wheel(installed: dict[str, Path]) -> None:
    out = _run(installed, "kseg", "--help")
    assert out.returncode == 0 and "kseg run" in out.stdout
    out = _run(installed, "kseg", "topics", "--help")
    assert out.returncode == 0 and "plan" in out.stdout and "migrate" in out.stdout

    query = "event_name=Purchase&kochava_device_id=KI5678&event_value=19.99&currency=EUR&network_name=N1"
    out = _run(installed, "kseg", "mapping", "try", query)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "Order Completed" in [m["event"] for m in result["segment"] if m["type"] == "track"]

    probe = (
        "import json, app, app.topics as t; "
        "print(json.dumps({'where': app.__file__, 'topics': [s.name for s in t.catalogue()], "
        "'schema': json.loads(t.schema_text('warehouse-row.schema.json'))['type']}))"
    )
    out = _run(installed, "python", "-c", probe)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert Path(loaded["where"]).is_relative_to(installed["bin"].parent)  # the wheel's copy, not the checkout
    assert loaded["topics"] == [s.name for s in catalogue()]
    assert loaded["schema"] == "object"

    # Every data file of the package (profiles, rate and audience files, ...) was shipped; the catalogue and
    # schemas, behind the app/catalogue and app/schemas links, were read above.
    source = ROOT / "app"
    data = {
        str(path.relative_to(source))
        for path in source.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    installed_app = Path(loaded["where"]).parent
    missing = sorted(name for name in data if not (installed_app / name).is_file())
    assert not missing, f"not in the wheel (add them to package-data in pyproject.toml): {missing}"


def _healthcheck(service: str) -> list[str]:
    """The compose health-check command of a service, as an argv for the installed environment."""
    test = yaml.safe_load(COMPOSE.read_text())["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    return test[2:]


async def test_image_entry_commands_and_compose_health_checks(
    installed: dict[str, Path], broker: str, tmp_path: Path
) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    assert compose["topics"]["command"] == ["topics", "apply"]
    http_port, worker_port = free_port(), free_port()
    env = _env(
        KAFKA_BOOTSTRAP_SERVERS=broker,
        KSEG_EMBEDDED_BROKER="true",
        KSEG_APP_ID=f"wheel{os.getpid()}",
        KSEG_TOPIC_PARTITIONS="2",
        KSEG_POSTBACK_TOKENS="image-token",
        KSEG_DATA_DIR=str(tmp_path),
        KSEG_HTTP_PORT=str(http_port),
        KSEG_WORKER_WEB_PORT=str(worker_port),
        KSEG_SESSION_TIMEOUT=str(EMBEDDED_MIN_SESSION_TIMEOUT),
    )
    kseg = str(installed["bin"] / "kseg")
    init = subprocess.run(
        [kseg, *compose["topics"]["command"]], cwd=installed["work"], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    assert f"applied {len(catalogue())} change(s)" in init.stdout, init.stdout

    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service in ("receiver", "worker"):
            log = (tmp_path / f"{service}.log").open("wb")
            procs[service] = subprocess.Popen(
                [kseg, *compose[service]["command"]], cwd=installed["work"], env=env, stdout=log, stderr=log
            )

        def healthy(service: str) -> bool:
            if procs[service].poll() is not None:
                raise AssertionError(f"{service} exited: {(tmp_path / f'{service}.log').read_text()[-3000:]}")
            argv = [str(installed["bin"] / "python"), *_healthcheck(service)]
            return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0

        await wait_for(lambda: healthy("receiver"), 60, "the receiver's compose health check")
        await wait_for(lambda: healthy("worker"), 120, "the worker's compose health check")

        params = {
            "event_name": "_install",
            "kochava_device_id": "KIWHEEL",
            "network_name": "N",
            "token": "image-token",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{http_port}/v1/kochava/postbacks?{urlencode(params)}") as r,
        ):
            assert r.status == 200, await r.text()
        outbox = tmp_path / "segment-outbox.jsonl"

        def delivered() -> list[dict[str, Any]]:
            if not outbox.exists():
                return []
            return [m for line in outbox.read_text().splitlines() for m in json.loads(line)["batch"]]

        messages = await wait_for(delivered, 60, "the dry-run Segment batch")
        assert {m["type"] for m in messages} == {"identify", "track"}

        # Every metric the alert rules and the dashboard use exists on these processes' /metrics.
        exposed: set[str] = set()
        async with aiohttp.ClientSession() as session:
            for port in (http_port, worker_port):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                    text = await r.text()
                types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
                exposed |= {family(name) for name in types}
        # The warehouse loader is another process (not started here): its names are checked against its
        # metrics module. The digest's counters are on the worker's registry even with the digest off.
        loader = (ROOT / "app" / "warehouse" / "metrics.py").read_text()
        wanted = referenced_families()
        in_loader = {f for f in wanted if f.startswith("kseg_warehouse_") and f'"{f}"' in loader}
        # Likewise the console (the reconciliation gauges).
        console = (ROOT / "app" / "console" / "metrics.py").read_text()
        in_console = {f for f in wanted if f.startswith("kseg_reconcile_") and f'"{f}"' in console}
        missing = wanted - exposed - in_loader - in_console
        assert not missing, f"rules or dashboard use metrics nobody exposes: {sorted(missing)}"
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await asyncio.sleep(0)
