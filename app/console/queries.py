"""The console's reads of the warehouse: overview counts, recent postbacks, reconciliation rows.

Every function takes an open psycopg connection in autocommit mode, so a table that does not exist yet
(the trace tables before the loader first ran) fails its own statement only: the page shows "not
available" for that block instead of an error.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg

WINDOWS = {"hour": "1 hour", "day": "1 day"}


def _rows(conn: Any, statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]] | None:
    """Rows as dicts, or None when a table or column is missing (not loaded yet)."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            names = [d.name for d in cur.description]
            return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return None


def overview(conn: Any, window: str) -> dict[str, Any]:
    """Counts over the last hour or day (`window`): what came in, what became of it, what Segment and
    Kochava were sent and answered, warehouse rows, and the end-to-end latency to Segment's 2xx."""
    span = WINDOWS[window]
    since = f"now() - interval '{span}'"
    out: dict[str, Any] = {"window": window}
    out["postbacks"] = _rows(
        conn,
        f"SELECT kind, count(*) AS n FROM kseg_postbacks WHERE received_at > {since} "
        "GROUP BY kind ORDER BY kind",
    )
    out["processing"] = _rows(
        conn,
        f"SELECT outcome, count(*) AS n FROM kseg_processing WHERE at > {since} "
        "GROUP BY outcome ORDER BY outcome",
    )
    out["dead_letters"] = _rows(
        conn,
        f"SELECT stage, reason, count(*) AS n FROM kseg_dead_letters WHERE at > {since} "
        "GROUP BY stage, reason ORDER BY stage, reason",
    )
    out["segment"] = _rows(
        conn,
        f"SELECT call_type, outcome, count(*) AS n FROM kseg_receipts WHERE destination = 'segment' "
        f"AND final_at > {since} GROUP BY call_type, outcome ORDER BY call_type, outcome",
    )
    out["kochava"] = _rows(
        conn,
        f"SELECT call_type, outcome, count(*) AS n FROM kseg_receipts WHERE destination = 'kochava' "
        f"AND final_at > {since} GROUP BY call_type, outcome ORDER BY call_type, outcome",
    )
    rows = _rows(conn, f"SELECT count(*) AS n FROM kseg_events WHERE loaded_at > {since}")
    out["warehouse_rows"] = None if rows is None else int(rows[0]["n"])
    latency = _rows(
        conn,
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50, "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY s) AS p95, count(*) AS n FROM ("
        "  SELECT EXTRACT(EPOCH FROM (MIN(r.final_at) - MIN(p.received_at))) AS s"
        "  FROM kseg_receipts r JOIN kseg_postbacks p ON p.event_id = r.event_id"
        f"  WHERE r.destination = 'segment' AND r.outcome = 'delivered' AND r.final_at > {since}"
        "  GROUP BY r.event_id) x",
    )
    if latency is None:
        out["latency"] = None
    else:
        row = latency[0]
        out["latency"] = {
            "p50_ms": None if row["p50"] is None else round(float(row["p50"]) * 1000),
            "p95_ms": None if row["p95"] is None else round(float(row["p95"]) * 1000),
            "events": int(row["n"]),
        }
    return out


def recent_postbacks(conn: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest postbacks as received (for the mapping studio's picker); [] before any was loaded."""
    rows = _rows(
        conn,
        "SELECT event_id, received_at, kind, profile, params FROM kseg_postbacks "
        "ORDER BY received_at DESC LIMIT %s",
        (limit,),
    )
    return rows or []


def reconciliation(conn: Any, since: date) -> list[dict[str, Any]] | None:
    """Per day, network and campaign: Kochava's installs (the digest's report rows in the spend table),
    the installs kseg received (install rows of `kseg_events`) and those Segment accepted (a `delivered`
    receipt of the install's event); None when the warehouse has no tables yet."""
    delivered = (
        "(SELECT count(DISTINCT e.event_id) FROM kseg_events e"
        " WHERE e.event_type = 'install'"
        " AND CAST(e.event_time AT TIME ZONE 'UTC' AS DATE) = p.\"date\""
        " AND COALESCE(e.install_network, e.network, '(none)') = p.network"
        " AND COALESCE(e.install_campaign, e.campaign, '(none)') = p.campaign"
        " AND EXISTS (SELECT 1 FROM kseg_receipts r WHERE r.event_id = e.event_id"
        "   AND r.destination = 'segment' AND r.outcome = 'delivered'))"
    )
    base = (
        'SELECT p."date", p.network, p.campaign, p.network_installs AS kochava_installs, '
        "p.installs AS received, {delivered} AS delivered FROM campaign_performance p "
        'WHERE p."date" >= %s AND (p.network_installs IS NOT NULL OR p.installs > 0) '
        'ORDER BY p."date" DESC, p.network, p.campaign'
    )
    rows = _rows(conn, base.format(delivered=delivered), (since,))
    if rows is None:  # no receipts table yet: received only
        rows = _rows(conn, base.format(delivered="NULL"), (since,))
    return rows


def privacy_requests(conn: Any, limit: int = 200) -> list[dict[str, Any]] | None:
    """The newest privacy requests' records (`kseg_privacy_requests`): status per target and how many ids
    each covered, never the ids themselves; None before the first request reached the warehouse."""
    return _rows(
        conn,
        "SELECT request_id, type, channel, reference, received_at, status, completed_at, targets, "
        "jsonb_array_length(covered->'user_ids') AS user_ids, "
        "jsonb_array_length(covered->'device_keys') AS devices "
        "FROM kseg_privacy_requests ORDER BY received_at DESC LIMIT %s",
        (limit,),
    )


def gaps(rows: list[dict[str, Any]], threshold_pct: float) -> list[dict[str, Any]]:
    """Each row with its gap: Kochava's installs minus those delivered (received when no delivery
    receipts exist), as a count and a percentage of Kochava's; `flagged` when over `threshold_pct`."""
    out = []
    for row in rows:
        kochava = row.get("kochava_installs")
        ours = row.get("delivered") if row.get("delivered") is not None else row.get("received")
        gap = pct = None
        if kochava is not None and ours is not None:
            gap = int(kochava) - int(ours)
            pct = round(abs(gap) * 100.0 / int(kochava), 1) if int(kochava) else (100.0 if ours else 0.0)
        out.append({**row, "gap": gap, "gap_pct": pct, "flagged": pct is not None and pct > threshold_pct})
    return out
