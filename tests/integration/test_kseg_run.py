"""`kseg run` as a newcomer uses it: embedded broker, dev token, the README's curl, Ctrl-C, no orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from app.warehouse.embedded import pgdata_dir, running_url
from tests.harness import ROOT, wait_for
from tests.parallel import free_port


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def readme_curl_url(port: int) -> str:
    readme = (ROOT / "README.md").read_text()
    url = re.search(r"curl '(http://127\.0\.0\.1:8080/v1/kochava/postbacks\?[^']+)'", readme)
    assert url, "the README's install curl is missing"
    return url.group(1).replace(":8080", f":{port}")


async def test_kseg_run_readme_curl_reaches_the_dry_run_outbox_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    port, worker_port, loader_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KSEG_", "SEGMENT_"))}
    env.update(
        {
            "KSEG_HTTP_PORT": str(port),
            "KSEG_WORKER_WEB_PORT": str(worker_port),
            "KSEG_WAREHOUSE_WEB_PORT": str(loader_port),
            "KSEG_DATA_DIR": str(tmp_path),
            "KSEG_APP_ID": "runtest",
        }
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        await wait_for(ready, 90, "kseg run's worker to be ready")
        banner = (tmp_path / "run.log").read_text()
        assert "accepting the development token `dev`" in banner
        with urllib.request.urlopen(readme_curl_url(port), timeout=5) as r:
            assert r.status == 200 and orjson.loads(r.read()) == {"message": "success"}

        outbox = tmp_path / "segment-outbox.jsonl"

        def batch_types() -> set[tuple[str, str | None]]:
            if not outbox.exists():
                return set()
            lines = [orjson.loads(line) for line in outbox.read_bytes().splitlines() if line.strip()]
            return {(m["type"], m.get("event")) for b in lines for m in b["batch"]}

        types = await wait_for(lambda: len(batch_types()) >= 2 and batch_types(), 60, "the dry-run batch")
        assert ("identify", None) in types and ("track", "Install Attributed") in types

        # The README's next command: revenue by install campaign, from the embedded warehouse.
        def report() -> dict | None:
            done = subprocess.run(
                [sys.executable, "-m", "app.cli", "report", "roas", "--by", "campaign", "--json"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            rows = orjson.loads(done.stdout)["rows"]
            return rows[0] if rows else None

        row = await wait_for(report, 60, "the install in `kseg report roas`")
        assert (row["network"], row["campaign"], row["installs"]) == ("ExampleNetwork", "Spring", 1)

        family = descendants(proc.pid)
        assert len(family) >= 4  # broker, receiver, worker, warehouse loader
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 10
        while any(alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in family if alive(p)], "kseg run left processes behind"
        assert running_url(pgdata_dir(tmp_path)) is None, "kseg run left the embedded PostgreSQL running"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
