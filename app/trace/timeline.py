"""One device's or user's timeline from the warehouse: each postback as received, what processing did with
it, each Segment call and Segment's answer, the warehouse row, the Kochava sends and the dead letters.

`timeline(conn, ident)` takes a synchronous psycopg connection and any id kseg knows (a device id of any
type, a userId, an event id or a Segment messageId) and returns plain JSON-able data; `kseg trace` and
the console both render it. It only reads: the trace tables the loader writes (app.warehouse.trace_tables)
and `kseg_events`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.warehouse.sql import EVENTS
from app.warehouse.trace_tables import DEAD_LETTERS, DEVICE_COLUMNS, POSTBACKS, PROCESSING, RECEIPTS

#: The most events one timeline shows (the newest ones): a device with more is an outlier or a test rig.
MAX_EVENTS = 500


def _plain(value: Any) -> Any:
    """A database value as JSON: times as ISO-8601 UTC with `Z`, exact decimals as numbers."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _rows(conn: Any, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [_plain(dict(row)) for row in cur.fetchall()]


def _variants(ident: str) -> list[str]:
    """The id as given and in both cases (IDFAs arrive upper- or lower-case from different sources)."""
    return list(dict.fromkeys((ident, ident.upper(), ident.lower())))


def _match(conn: Any, ident: str) -> tuple[str | None, set[str], set[str], set[str]]:
    """(matched_as, device keys, Kochava device ids, user ids) the id names."""
    ids = _variants(ident)
    if _rows(conn, f"SELECT 1 FROM {POSTBACKS} WHERE event_id = %s", (ident,)) or _rows(
        conn, f"SELECT 1 FROM {EVENTS} WHERE event_id = %s", (ident,)
    ):
        return ("event_id", *_devices_of_events(conn, [ident]))
    found = _rows(conn, f"SELECT DISTINCT event_id FROM {RECEIPTS} WHERE message_id = %s", (ident,))
    found += _rows(conn, f"SELECT event_id FROM {EVENTS} WHERE message_id = %s", (ident,))
    events = [r["event_id"] for r in found if r["event_id"]]
    if found:
        return ("message_id", *_devices_of_events(conn, events))
    for column in (*DEVICE_COLUMNS, "device_key"):
        rows = _rows(
            conn,
            f"SELECT DISTINCT device_key, kochava_device_id FROM {POSTBACKS} WHERE {column} = ANY(%s)",
            (ids,),
        )
        if column != "device_key":
            rows += _rows(
                conn, f"SELECT DISTINCT kochava_device_id FROM {EVENTS} WHERE {column} = ANY(%s)", (ids,)
            )
        if rows:
            keys = {r["device_key"] for r in rows if r.get("device_key")}
            kdids = {r["kochava_device_id"] for r in rows if r.get("kochava_device_id")}
            return column, keys, kdids, set()
    rows = _rows(
        conn, f"SELECT DISTINCT device_key, kochava_device_id FROM {POSTBACKS} WHERE user_id = %s", (ident,)
    )
    rows += _rows(conn, f"SELECT DISTINCT kochava_device_id FROM {EVENTS} WHERE user_id = %s", (ident,))
    if rows:
        keys = {r["device_key"] for r in rows if r.get("device_key")}
        return "user_id", keys, {r["kochava_device_id"] for r in rows if r.get("kochava_device_id")}, {ident}
    letters = _rows(
        conn,
        f"SELECT event_id, kochava_device_id, user_id FROM {DEAD_LETTERS} "
        "WHERE event_id = %s OR kochava_device_id = %s OR user_id = %s",
        (ident, ident, ident),
    )
    if letters:
        first = letters[0]
        matched = next(k for k in ("event_id", "kochava_device_id", "user_id") if first[k] == ident)
        kdids = {r["kochava_device_id"] for r in letters if r["kochava_device_id"]}
        return matched, set(kdids), kdids, {ident} if matched == "user_id" else set()
    return None, set(), set(), set()


def _devices_of_events(conn: Any, event_ids: list[str]) -> tuple[set[str], set[str], set[str]]:
    rows = _rows(
        conn, f"SELECT device_key, kochava_device_id FROM {POSTBACKS} WHERE event_id = ANY(%s)", (event_ids,)
    )
    rows += _rows(conn, f"SELECT kochava_device_id FROM {EVENTS} WHERE event_id = ANY(%s)", (event_ids,))
    keys = {r["device_key"] for r in rows if r.get("device_key")}
    return keys, {r["kochava_device_id"] for r in rows if r.get("kochava_device_id")}, set()


def timeline(conn: Any, ident: str) -> dict[str, Any]:
    """The timeline of the device(s) or user `ident` names (see the module doc); `matched_as` is None and
    `events` empty when no table knows the id."""
    ident = ident.strip()
    matched_as, keys, kdids, users = _match(conn, ident)
    out: dict[str, Any] = {
        "query": ident,
        "matched_as": matched_as,
        "devices": [],
        "user_ids": [],
        "events": [],
        "kochava_sends": [],
        "identity": {},
    }
    if matched_as is None:
        return out
    keys |= kdids  # a device keyed by its Kochava id has that id as its key
    postbacks = _rows(
        conn,
        f"SELECT * FROM {POSTBACKS} WHERE device_key = ANY(%s) OR kochava_device_id = ANY(%s) "
        "ORDER BY received_at DESC LIMIT %s",
        (list(keys), list(kdids), MAX_EVENTS),
    )
    rows = _rows(
        conn,
        f"SELECT * FROM {EVENTS} WHERE kochava_device_id = ANY(%s) OR event_id = ANY(%s) "
        "ORDER BY received_at DESC LIMIT %s",
        (list(kdids), [p["event_id"] for p in postbacks], MAX_EVENTS),
    )
    event_ids = list(dict.fromkeys([p["event_id"] for p in postbacks] + [r["event_id"] for r in rows]))
    letters = _rows(
        conn,
        f"SELECT * FROM {DEAD_LETTERS} WHERE event_id = ANY(%s) OR kochava_device_id = ANY(%s) ORDER BY at",
        (event_ids, list(kdids)),
    )
    event_ids += [x["event_id"] for x in letters if x["event_id"] and x["event_id"] not in event_ids]
    processing = _rows(conn, f"SELECT * FROM {PROCESSING} WHERE event_id = ANY(%s) ORDER BY at", (event_ids,))
    calls = _rows(
        conn,
        f"SELECT * FROM {RECEIPTS} WHERE destination = 'segment' AND event_id = ANY(%s) "
        "ORDER BY final_at, message_id",
        (event_ids,),
    )
    sends = _rows(
        conn,
        f"SELECT * FROM {RECEIPTS} WHERE destination = 'kochava' AND device_key = ANY(%s) ORDER BY final_at",
        (list(keys),),
    )
    by_event: dict[str, dict[str, Any]] = {p["event_id"]: p for p in postbacks}
    row_of = {r["event_id"]: r for r in rows}
    events = [
        _event(
            event_id,
            by_event.get(event_id),
            row_of.get(event_id),
            [p for p in processing if p["event_id"] == event_id],
            [c for c in calls if c["event_id"] == event_id],
            [x for x in letters if x["event_id"] == event_id],
        )
        for event_id in event_ids
    ]
    events.sort(key=lambda e: (e["received_at"] or "", e["event_id"]))
    _attach_sends(events, [_send(s) for s in sends])
    out["events"] = events
    out["kochava_sends"] = [_send(s) for s in sends]
    out["devices"] = _devices(postbacks, rows)
    found_users = {r["user_id"] for r in rows if r.get("user_id")} | {
        p["user_id"] for p in postbacks if p.get("user_id")
    }
    out["user_ids"] = sorted(users | found_users)
    out["identity"] = _identity(rows)
    return out


def _event(
    event_id: str,
    postback: dict[str, Any] | None,
    row: dict[str, Any] | None,
    processing: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    letters: list[dict[str, Any]],
) -> dict[str, Any]:
    last = processing[-1] if processing else {}
    params = (postback or {}).get("params") or {}
    outcome = last.get("outcome") or ("dead_lettered" if letters else ("mapped" if row else None))
    return {
        "event_id": event_id,
        "received_at": (postback or {}).get("received_at")
        or (row or {}).get("received_at")
        or (letters[0]["at"] if letters else None),
        "kind": (row or {}).get("event_type"),
        "event_name": (row or {}).get("event_name") or params.get("event_name"),
        "profile": last.get("profile") or (postback or {}).get("profile"),
        "profile_version": last.get("profile_version"),
        "outcome": outcome,
        "reason": last.get("reason")
        or (letters[-1]["reason"] if letters and outcome == "dead_lettered" else None),
        "params": params,
        "source": (postback or {}).get("source"),
        "token_name": (postback or {}).get("token_name"),
        "device_key": (postback or {}).get("device_key") or last.get("device_key"),
        "kafka": (
            {"partition": postback["kafka_partition"], "offset": postback["kafka_offset"]}
            if postback
            else None
        ),
        "processing": [
            {k: p[k] for k in ("outcome", "profile", "profile_version", "reason", "at")} for p in processing
        ],
        "segment_calls": [
            {
                "type": c["call_type"],
                "event": c["event_name"],
                "message_id": c["message_id"],
                "outcome": c["outcome"],
                "http_status": c["http_status"],
                "attempts": c["attempts"],
                "first_attempt_at": c["first_attempt_at"],
                "final_at": c["final_at"],
                "request_id": c["request_id"],
                "reason": c["reason"],
            }
            for c in calls
        ],
        "warehouse_row": row,
        "kochava_sends": [],
        "dead_letters": [
            {k: x[k] for k in ("id", "stage", "reason", "error", "at", "payload", "replayed")}
            for x in letters
        ],
    }


def _send(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "endpoint": s["call_type"],
        "event": s["event_name"],
        "request_id": s["message_id"],
        "device_key": s["device_key"],
        "outcome": s["outcome"],
        "http_status": s["http_status"],
        "attempts": s["attempts"],
        "first_attempt_at": s["first_attempt_at"],
        "final_at": s["final_at"],
        "reason": s["reason"],
    }


def _attach_sends(events: list[dict[str, Any]], sends: list[dict[str, Any]]) -> None:
    """Each Kochava send goes with the device's latest event received before it (they follow from it)."""
    for send in sends:
        before = [
            e
            for e in events
            if e["device_key"] == send["device_key"] and (e["received_at"] or "") <= (send["final_at"] or "")
        ]
        if before:
            before[-1]["kochava_sends"].append(send)


def _devices(postbacks: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each device key with every id seen on it."""
    found: dict[str, dict[str, Any]] = {}
    for p in postbacks:
        key = p.get("device_key") or p.get("kochava_device_id")
        if not key:
            continue
        entry = found.setdefault(key, {"device_key": key, **{c: None for c in DEVICE_COLUMNS}})
        for column in DEVICE_COLUMNS:
            entry[column] = entry[column] or p.get(column)
    for r in rows:
        key = r.get("kochava_device_id")
        if key and key not in found:
            found[key] = {"device_key": key, **{c: r.get(c) for c in DEVICE_COLUMNS}}
    return list(found.values())


def _identity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Who the device resolved to, from its newest warehouse row (and every anonymousId it used)."""
    if not rows:
        return {}
    newest = max(rows, key=lambda r: r.get("received_at") or "")
    return {
        "user_id": newest.get("user_id"),
        "anonymous_id": newest.get("anonymous_id"),
        "resolved_via": newest.get("resolved_via"),
        "email_sha256": newest.get("email_sha256"),
        "anonymous_ids": sorted({r["anonymous_id"] for r in rows if r.get("anonymous_id")}),
        "user_ids": sorted({r["user_id"] for r in rows if r.get("user_id")}),
    }
