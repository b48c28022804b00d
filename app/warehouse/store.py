"""Writing batches to the warehouse: schema creation and evolution, COPY into staging, insert-ignore.

One transaction per batch: rows are COPYed into a temporary staging table, then moved with
`INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING` (events: the first row of an event wins,
so a replay or a redelivery after a crash never doubles it) and `ON CONFLICT (date, network, campaign)
DO UPDATE` (spend: a re-run replaces the figures). A column the table lacks is added first, in the
same transaction (`ALTER TABLE ... ADD COLUMN`), so a new row field never needs manual DDL.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson

from app.mapping.warehouse import WAREHOUSE_COLUMNS
from app.warehouse import sql
from app.warehouse.schemas import row_properties
from app.warehouse.trace_tables import ensure_trace_schema

#: Row keys that can become columns as they are; anything else goes into the `extra` JSON text column.
COLUMN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
log = logging.getLogger(__name__)

#: Serialises schema changes of concurrent loaders.
LOCK_ID = 0x6B736567  # "kseg"


@dataclass
class BatchResult:
    events_inserted: int = 0
    events_duplicate: int = 0
    spend_upserted: int = 0
    columns_added: tuple[str, ...] = ()


def base_columns() -> dict[str, str]:
    """The events table's columns on day one: the published row, the lifecycle contract, the loader's."""
    props = row_properties()
    columns = {name: sql.column_type(name, props.get(name)) for name in WAREHOUSE_COLUMNS}
    for name, spec in props.items():
        columns.setdefault(name, sql.column_type(name, spec))
    columns["event_id"] = "TEXT NOT NULL"
    for name, sqltype in sql.LIFECYCLE_COLUMNS.items():
        columns.setdefault(name, sqltype)
    columns.update(sql.LOADER_COLUMNS)
    return columns


async def ensure_schema(conn: Any, reporting_currency: str) -> dict[str, str]:
    """Create or evolve tables and (re)create the views; returns the events table's columns."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        await conn.execute(sql.create_events(base_columns()))
        await conn.execute(sql.create_spend())
        existing = await table_columns(conn, sql.EVENTS)
        for name, sqltype in base_columns().items():
            if name not in existing:
                await _add_column(conn, name, sqltype)
        for index in sql.INDEXES:
            await conn.execute(index)
        await ensure_trace_schema(conn)
        for name, view in zip((sql.DEVICES, sql.PERFORMANCE), sql.views(reporting_currency), strict=True):
            await _replace_view(conn, name, view)
    return await table_columns(conn, sql.EVENTS)


async def _replace_view(conn: Any, name: str, create: str) -> None:
    """CREATE OR REPLACE (keeps views that BI users built on ours); when the columns changed, drop and
    create; when other objects depend on the old one, keep it and say so rather than fail the loader."""
    import psycopg

    replace = create.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)
    try:
        async with conn.transaction():
            await conn.execute(replace)
        return
    except psycopg.errors.InvalidTableDefinition:
        pass
    try:
        async with conn.transaction():
            await conn.execute(f"DROP VIEW IF EXISTS {name}")
            await conn.execute(create)
    except psycopg.errors.DependentObjectsStillExist as exc:
        log.warning("kept the old %s view: other views depend on it (%s); drop them to upgrade", name, exc)


async def table_columns(conn: Any, table: str) -> dict[str, str]:
    cur = await conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s AND table_schema = current_schema()",
        (table,),
    )
    return {name: dtype for name, dtype in await cur.fetchall()}


async def _add_column(conn: Any, name: str, sqltype: str) -> None:
    from psycopg import sql as psql

    stmt = psql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        psql.Identifier(sql.EVENTS), psql.Identifier(name), psql.SQL(sqltype)
    )
    await conn.execute(stmt)


@lru_cache(maxsize=4096)
def usable_name(key: str) -> bool:
    """A row key that can be a column as it is (others go into the `extra` JSON text column)."""
    return bool(COLUMN_NAME.match(key)) and key not in sql.LOADER_COLUMNS


_PLAIN = (str, bool)


def _cell(name: str, value: Any) -> Any:
    """A Python value COPY writes exactly: money as Decimal from its JSON text, nested values as JSON."""
    if value is None or value.__class__ in _PLAIN:
        return value
    if value.__class__ is int:
        return Decimal(value) if name in sql.MONEY_COLUMNS else value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


def new_columns(rows: list[dict[str, Any]], known: dict[str, str]) -> dict[str, str]:
    """Columns the batch's rows carry that the table lacks, with their SQL types."""
    props = row_properties()
    found: dict[str, str] = {}
    for row in rows:
        for key, value in row.items():
            if key not in known and key not in found and usable_name(key):
                if props.get(key) is None and value is None:
                    continue  # type unknown yet: wait for a row with a value
                found[key] = sql.column_type(key, props.get(key), value)
    return found


async def write_batch(
    conn: Any,
    known: dict[str, str],
    events: list[dict[str, Any]],
    spend: list[dict[str, Any]],
) -> BatchResult:
    """Write one batch in one transaction; `known` (the events table's columns) is updated in place."""
    from psycopg import sql as psql

    result = BatchResult()
    async with conn.transaction():
        added = new_columns(events, known)
        if added:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
            for name, sqltype in added.items():
                await _add_column(conn, name, sqltype)
            result.columns_added = tuple(added)
        if events:
            order: dict[str, None] = {}  # the batch's columns, in first-seen order
            for row in events:
                for key in row:
                    if key not in order and (key in known or key in added) and usable_name(key):
                        order[key] = None
            cols = [*order, "extra"]
            await conn.execute(
                psql.SQL(
                    "CREATE TEMP TABLE kseg_events_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP"
                ).format(psql.Identifier(sql.EVENTS))
            )
            ident = psql.SQL(", ").join(psql.Identifier(c) for c in cols)
            async with conn.cursor().copy(
                psql.SQL("COPY kseg_events_stage ({}) FROM STDIN").format(ident)
            ) as copy:
                for row in events:
                    extra = {k: v for k, v in row.items() if k not in order}
                    cells = [_cell(c, row.get(c)) for c in order]
                    cells.append(orjson.dumps(extra, option=orjson.OPT_SORT_KEYS).decode() if extra else None)
                    await copy.write_row(cells)
            cur = await conn.execute(
                psql.SQL(
                    "INSERT INTO {} ({}, loaded_at) SELECT {}, now() FROM kseg_events_stage "
                    "ON CONFLICT (event_id) DO NOTHING"
                ).format(psql.Identifier(sql.EVENTS), ident, ident)
            )
            result.events_inserted = cur.rowcount
            result.events_duplicate = len(events) - cur.rowcount
        if spend:
            result.spend_upserted = await _upsert_spend(conn, spend)
    known.update(added)
    return result


async def _upsert_spend(conn: Any, rows: list[dict[str, Any]]) -> int:
    """Upsert by (date, network, campaign); the latest `fetched_at` wins, later rows of the batch win."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        latest[(row["date"], row["network"], row["campaign"])] = row
    cols = [c for c in sql.SPEND_COLUMNS if c != "loaded_at"]
    names = ", ".join(f'"{c}"' for c in cols)
    marks = ", ".join(["%s"] * len(cols))
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in cols if c not in ("date", "network", "campaign"))
    stmt = (
        f"INSERT INTO {sql.SPEND} ({names}, loaded_at) VALUES ({marks}, now()) "
        f'ON CONFLICT ("date", network, campaign) DO UPDATE SET {updates}, loaded_at = now() '
        f"WHERE {sql.SPEND}.fetched_at IS NULL OR EXCLUDED.fetched_at >= {sql.SPEND}.fetched_at"
    )
    params = [
        [_cell(c, row.get(c)) if c not in ("spend", "spend_reporting") else _money(row.get(c)) for c in cols]
        for row in latest.values()
    ]
    async with conn.cursor() as cur:
        await cur.executemany(stmt, params)
    return len(latest)


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(repr(value) if isinstance(value, float) else str(value))
