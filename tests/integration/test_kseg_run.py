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
import pytest

from app.warehouse.embedded import EmbeddedWarehouse, pgdata_dir, running_url
from tests.harness import ROOT, wait_for
from tests.parallel import kseg_run_ports


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


def role_of(pid: int) -> str | None:
    """Which of kseg run's children `pid` is, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    text = b" ".join(argv).decode(errors="replace")
    for role, marker in (
        ("receiver", "app.cli receiver"),
        ("worker", "app.cli worker"),
        ("sinks", "app.cli sinks"),
        ("loader", "app.cli warehouse load"),
        ("console", "app.cli console"),
        ("guard", "guard_warehouse"),
    ):
        if marker in text:
            return role
    return "broker" if "tansu" in text or " broker " in f" {text} " else None


def exit_times(proc: subprocess.Popen[bytes], pids: set[int], timeout: float) -> dict[int, float]:
    """When each of `pids` was last seen alive, polling until `proc` exited and all are gone."""
    seen = dict.fromkeys(pids, 0.0)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        now = time.monotonic() - start
        living = [p for p in pids if alive(p)]
        for pid in living:
            seen[pid] = now
        if proc.poll() is not None and not living:
            break
        time.sleep(0.02)
    proc.wait(5)
    return seen


def _console_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def readme_curl_url(port: int) -> str:
    readme = (ROOT / "README.md").read_text()
    url = re.search(r"curl '(http://127\.0\.0\.1:8080/v1/kochava/postbacks\?[^']+)'", readme)
    assert url, "the README's install curl is missing"
    return url.group(1).replace(":8080", f":{port}")


async def test_kseg_run_readme_curl_reaches_the_dry_run_outbox_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    ports = kseg_run_ports()
    port, worker_port = int(ports["KSEG_HTTP_PORT"]), int(ports["KSEG_WORKER_WEB_PORT"])
    console_port = int(ports["KSEG_CONSOLE_PORT"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KSEG_", "SEGMENT_"))}
    env.update(
        ports
        | {
            "KSEG_DATA_DIR": str(tmp_path),
            "KSEG_APP_ID": "runtest",
        }
    )
    log = (tmp_path / "run.log").open("wb")
    # Its own session, like a shell job: Ctrl-C is then a SIGINT to that whole process group.
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run"], cwd=ROOT, env=env, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
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
        # The console, with the development operator token made for this run: it opens the JSON API.
        console = re.search(
            rf"console    http://127\.0\.0\.1:{console_port}   \(development operator token: (\S+)\)", banner
        )
        assert console, banner
        await wait_for(lambda: _console_ready(console_port), 60, "the console")
        request = urllib.request.Request(
            f"http://127.0.0.1:{console_port}/api/dead-letters",
            headers={"Authorization": f"Bearer {console.group(1)}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200 and orjson.loads(r.read())["dead_letters"] == []
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
        assert len(family) >= 6  # broker, receiver, worker, sinks, warehouse loader, console
        roles = {role_of(pid): pid for pid in family if role_of(pid)}
        assert set(roles) == {"broker", "receiver", "worker", "sinks", "loader", "console", "guard"}, roles
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        gone = exit_times(proc, family, 90)
        assert proc.returncode == 0
        assert not [p for p in family if alive(p)], "kseg run left processes behind"
        # Dependency order: the receiver first, the broker only after the worker and the loader.
        assert gone[roles["receiver"]] <= min(gone[roles["worker"]], gone[roles["loader"]]), gone
        assert gone[roles["broker"]] >= max(gone[roles["worker"]], gone[roles["loader"]]), gone
        # The sinks after the worker (its last outputs are in the outboxes), before the broker.
        assert gone[roles["worker"]] <= gone[roles["sinks"]] <= gone[roles["broker"]], gone
        assert running_url(pgdata_dir(tmp_path)) is None, "kseg run left the embedded PostgreSQL running"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KSEG_", "SEGMENT_"))}
    return (
        env
        | kseg_run_ports()
        | {
            "KSEG_DATA_DIR": str(tmp_path),
            "KSEG_APP_ID": "killtest",
        }
    )


async def start_run(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    screen = tmp_path / f"{name}.log"
    with screen.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run"], cwd=ROOT, env=run_env(tmp_path), stdout=out,
            stderr=out, start_new_session=True,
        )  # fmt: skip
    await wait_for(lambda: "kseg run: ready after" in screen.read_text(), 180, f"{name} ready")
    return proc, screen


def wait_gone(pids: set[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.mark.long
async def test_kseg_run_killed_leaves_nothing_running_and_the_next_start_says_so(tmp_path: Path) -> None:
    pgdata = pgdata_dir(tmp_path)
    first, _ = await start_run(tmp_path, "first")
    second = None
    try:
        family = descendants(first.pid)
        guards = {p for p in family if role_of(p) == "guard"}
        assert len(guards) == 1, family
        # Worst case: kseg run and its PostgreSQL guard are both SIGKILLed. The children still go
        # (PDEATHSIG); the database is left, and the next start must deal with it.
        for pid in (*guards, first.pid):
            os.kill(pid, signal.SIGKILL)
        first.wait(10)
        assert not wait_gone(family, 60), "kseg run's children outlived it"
        assert running_url(pgdata) is not None

        second, screen = await start_run(tmp_path, "second")
        text = screen.read_text()
        assert f"the previous kseg run (pid {first.pid})" in text and "did not stop cleanly" in text, text
        assert "reusing the embedded PostgreSQL" in text, text

        # SIGKILL of kseg run alone: its children and its guard stop everything, the database included.
        family = descendants(second.pid)
        os.kill(second.pid, signal.SIGKILL)
        second.wait(10)
        assert not wait_gone(family, 60), "kseg run's children outlived it"
        await wait_for(lambda: running_url(pgdata) is None, 60, "the guard to stop the embedded PostgreSQL")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
        EmbeddedWarehouse(pgdata).stop()  # never leave a server behind, whatever failed above
