"""Connections to the warehouse database: `KSEG_WAREHOUSE_URL`, else the embedded server's URL.

This is the warehouse's Python API for other domains (the digest reads cohorts and figures here):
`connect(settings)` gives a psycopg 3 connection, `url(settings)` the URL it uses.
"""

from __future__ import annotations

from typing import Any

from app.sections import WarehouseSettings
from app.warehouse.embedded import pgdata_dir, running_url


class WarehouseUnavailable(RuntimeError):
    """No warehouse URL is set and the embedded server is not running."""


def url(settings: WarehouseSettings) -> str:
    """The warehouse URL: the configured one, else the running embedded server's."""
    if settings.kseg_warehouse_url:
        return settings.kseg_warehouse_url
    pgdata = pgdata_dir(settings.kseg_data_dir)
    found = running_url(pgdata)
    if found is None:
        raise WarehouseUnavailable(
            f"the embedded warehouse is not running (expected under {pgdata}). Start `kseg run` "
            "(or `kseg warehouse load`), or set KSEG_WAREHOUSE_URL to your PostgreSQL."
        )
    return found


def connect(settings: WarehouseSettings, **kwargs: Any) -> Any:
    """A synchronous psycopg connection to the warehouse (autocommit off; close it when done)."""
    import psycopg

    return psycopg.connect(url(settings), connect_timeout=10, **kwargs)


async def connect_async(target: str, **kwargs: Any) -> Any:
    """An asyncio psycopg connection to `target` (the loader's), in autocommit mode: every write runs in
    an explicit `conn.transaction()` block, which then is a real transaction (not a savepoint)."""
    import psycopg

    return await psycopg.AsyncConnection.connect(target, connect_timeout=10, autocommit=True, **kwargs)
