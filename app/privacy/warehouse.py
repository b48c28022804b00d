"""The warehouse side of a privacy request: delete the subject's rows from every kseg table that holds
them (with counts), and keep the request's record in `kseg_privacy_requests` for 24 months."""

from __future__ import annotations

from typing import Any

import orjson

from app.privacy.records import Covered, PrivacyRequest

#: Device id columns shared by kseg_events, kseg_postbacks (and kochava_device_id by kseg_dead_letters).
DEVICE_COLUMNS = ("kochava_device_id", "idfa", "idfv", "adid", "android_id")
#: How long a request's record is kept (CCPA: at least 24 months; 11 CCR §7101).
RECORD_MONTHS = 24

PRIVACY_TABLE = """CREATE TABLE IF NOT EXISTS kseg_privacy_requests (
  request_id text PRIMARY KEY,
  type text NOT NULL,
  channel text NOT NULL,
  reference text,
  received_at timestamptz NOT NULL,
  status text NOT NULL,
  completed_at timestamptz,
  revision int NOT NULL,
  covered jsonb NOT NULL,
  targets jsonb NOT NULL,
  history jsonb NOT NULL,
  kafka_gone_by timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
)"""

UPSERT = """INSERT INTO kseg_privacy_requests AS r
  (request_id, type, channel, reference, received_at, status, completed_at, revision, covered, targets,
   history, kafka_gone_by, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, now())
ON CONFLICT (request_id) DO UPDATE SET
  status = EXCLUDED.status, completed_at = EXCLUDED.completed_at, revision = EXCLUDED.revision,
  covered = EXCLUDED.covered, targets = EXCLUDED.targets, history = EXCLUDED.history,
  kafka_gone_by = EXCLUDED.kafka_gone_by, updated_at = now()
WHERE r.revision <= EXCLUDED.revision"""

PRUNE = f"DELETE FROM kseg_privacy_requests WHERE received_at < now() - interval '{RECORD_MONTHS} months'"


def device_values(covered: Covered) -> dict[str, list[str]]:
    """Per device id column, the subject's values (the Kochava device id also as each device key)."""
    out: dict[str, list[str]] = {c: [] for c in DEVICE_COLUMNS}
    for typed in covered.typed_ids:
        kind, _, value = typed.partition(":")
        if kind in out and value not in out[kind]:
            out[kind].append(value)
    return out


async def _exists(conn: Any, table: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    row = await cur.fetchone()
    return bool(row and row[0])


def _match(
    columns: dict[str, list[str]], user_ids: list[str], extra: dict[str, list[str]]
) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for column, values in {**columns, **extra}.items():
        if values:
            parts.append(f"{column} = ANY(%s)")
            params.append(values)
    if user_ids:
        parts.append("user_id = ANY(%s)")
        params.append(user_ids)
    return (" OR ".join(parts) or "false"), params


async def delete_subject(conn: Any, covered: Covered) -> dict[str, int]:
    """Delete the subject's rows in one transaction; rows deleted per table (tables absent are skipped).

    A device-only request matches device columns only, so the user's rows from other devices stay."""
    columns = device_values(covered)
    users = covered.user_ids
    counts: dict[str, int] = {}
    async with conn.transaction():
        event_ids: set[str] = set()
        for table, extra in (
            ("kseg_events", {}),
            ("kseg_postbacks", {"device_key": covered.device_keys}),
        ):
            if not await _exists(conn, table):
                continue
            where, params = _match(columns, users, extra)
            cur = await conn.execute(f"DELETE FROM {table} WHERE {where} RETURNING event_id", params)
            rows = await cur.fetchall()
            counts[table] = len(rows)
            event_ids |= {r[0] for r in rows}
        ids = sorted(event_ids)
        dependants = (
            ("kseg_processing", "device_key = ANY(%s) OR event_id = ANY(%s)", [covered.device_keys, ids]),
            ("kseg_receipts", "event_id = ANY(%s)", [ids]),
        )
        for table, where, params in dependants:
            if await _exists(conn, table):
                cur = await conn.execute(f"DELETE FROM {table} WHERE {where}", params)
                counts[table] = cur.rowcount
        if await _exists(conn, "kseg_dead_letters"):
            where, params = _match(
                {"kochava_device_id": columns["kochava_device_id"] + covered.device_keys}, users, {}
            )
            cur = await conn.execute(
                f"DELETE FROM kseg_dead_letters WHERE {where} OR event_id = ANY(%s)", [*params, ids]
            )
            counts["kseg_dead_letters"] = cur.rowcount
    return counts


async def record_request(conn: Any, request: PrivacyRequest) -> None:
    """Upsert the request's newest revision into `kseg_privacy_requests` and prune records over 24 months."""
    async with conn.transaction():
        await conn.execute(PRIVACY_TABLE)
        await conn.execute(
            UPSERT,
            (
                request.request_id,
                request.type,
                request.channel,
                request.reference,
                request.received_at,
                request.status,
                request.completed_at,
                request.revision,
                orjson.dumps(request.covered.model_dump(mode="json")).decode(),
                orjson.dumps({k: v.model_dump(mode="json") for k, v in request.targets.items()}).decode(),
                orjson.dumps([h.model_dump(mode="json") for h in request.history]).decode(),
                request.kafka_gone_by,
            ),
        )
        await conn.execute(PRUNE)
