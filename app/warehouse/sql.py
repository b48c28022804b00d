"""The warehouse's DDL: the events fact table, the spend table, the devices dimension and the ROAS view.

Written in the portable subset of SQL (no FILTER, no DISTINCT ON, no JSON operators, TEXT for JSON
columns) so the same statements port to Redshift, Snowflake and BigQuery; docs/warehouse.md lists the
few spellings that differ there. Column types come from the published row schema (`column_type`).
"""

from __future__ import annotations

from typing import Any

#: Columns the warehouse row contract adds (the lifecycle signals): created from day one, nullable.
LIFECYCLE_COLUMNS: dict[str, str] = {
    "acquisition_channel": "TEXT",
    "acquisition_paid": "BOOLEAN",
    "reengagement_channel": "TEXT",
    "lifecycle_stage": "TEXT",
    "winback_suppress_until": "TEXT",
    "ad_suppressed": "BOOLEAN",
    "revenue_reporting": "NUMERIC(18,6)",
    "reporting_currency": "TEXT",
    "ltv_revenue": "NUMERIC(18,6)",
    "ltv_tier": "TEXT",
}

#: Money columns: exact decimals, never floating point.
MONEY_COLUMNS = frozenset({"revenue", "lifetime_revenue", "revenue_reporting", "ltv_revenue"})

#: Columns the loader adds to every event row (not in the topic's row).
LOADER_COLUMNS: dict[str, str] = {
    "loaded_at": "TIMESTAMP WITH TIME ZONE",
    "extra": "TEXT",
}

EVENTS = "kseg_events"
SPEND = "kseg_campaign_spend"
DEVICES = "kseg_devices"
PERFORMANCE = "campaign_performance"

SPEND_COLUMNS: dict[str, str] = {
    "date": "DATE NOT NULL",
    "network": "TEXT NOT NULL",
    "campaign": "TEXT NOT NULL",
    "network_id": "TEXT",
    "campaign_id": "TEXT",
    "clicks": "BIGINT",
    "impressions": "BIGINT",
    "installs": "BIGINT",
    "spend": "NUMERIC(18,6)",
    "currency": "TEXT",
    "spend_reporting": "NUMERIC(18,6)",
    "reporting_currency": "TEXT",
    "digest_run_id": "TEXT",
    "fetched_at": "TIMESTAMP WITH TIME ZONE",
    "loaded_at": "TIMESTAMP WITH TIME ZONE",
}


def column_type(name: str, spec: dict[str, Any] | None, sample: Any = None) -> str:
    """SQL type of a row column, from its JSON Schema property (or, for a column the schema does not
    know yet, from a sample value)."""
    if name in MONEY_COLUMNS:
        return "NUMERIC(18,6)"
    if name in LIFECYCLE_COLUMNS:
        return LIFECYCLE_COLUMNS[name]
    types: set[str] = set()
    if spec:
        raw = spec.get("type")
        types = {raw} if isinstance(raw, str) else set(raw or [])
        if "enum" in spec:
            types |= {"string"} if any(isinstance(v, str) for v in spec["enum"]) else set()
        if "string" in types and spec.get("format") == "date-time":
            return "TIMESTAMP WITH TIME ZONE"
    elif sample is not None:
        types = {
            "boolean"
            if isinstance(sample, bool)
            else "integer"
            if isinstance(sample, int)
            else "number"
            if isinstance(sample, float)
            else "string"
        }
    types.discard("null")
    if types == {"boolean"}:
        return "BOOLEAN"
    if types == {"integer"}:
        return "BIGINT"
    if types <= {"integer", "number"} and types:
        return "NUMERIC(18,6)"
    return "TEXT"


def create_events(columns: dict[str, str]) -> str:
    body = ",\n  ".join(f'"{name}" {sqltype}' for name, sqltype in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {EVENTS} (\n  {body},\n  PRIMARY KEY (event_id)\n)"


def create_spend() -> str:
    body = ",\n  ".join(f'"{name}" {sqltype}' for name, sqltype in SPEND_COLUMNS.items())
    return f'CREATE TABLE IF NOT EXISTS {SPEND} (\n  {body},\n  PRIMARY KEY ("date", network, campaign)\n)'


INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {EVENTS}_event_time ON {EVENTS} (event_time)",
    f"CREATE INDEX IF NOT EXISTS {EVENTS}_install ON {EVENTS} (install_network, install_campaign)",
    f"CREATE INDEX IF NOT EXISTS {EVENTS}_anonymous_id ON {EVENTS} (anonymous_id)",
)

#: One row per device (Segment anonymousId), with the ids and the user kseg resolved and its first touch.
DEVICES_VIEW = f"""
CREATE VIEW {DEVICES} AS
SELECT
  anonymous_id,
  MAX(kochava_device_id) AS kochava_device_id,
  MAX(idfa) AS idfa,
  MAX(idfv) AS idfv,
  MAX(adid) AS adid,
  MAX(android_id) AS android_id,
  MAX(device_type) AS device_type,
  MAX(user_id) AS user_id,
  COUNT(DISTINCT user_id) AS user_id_count,
  MAX(email_sha256) AS email_sha256,
  MAX(country) AS country,
  MIN(install_time) AS install_time,
  MAX(install_network) AS install_network,
  MAX(install_campaign) AS install_campaign,
  MAX(acquisition_channel) AS acquisition_channel,
  MIN(event_time) AS first_seen,
  MAX(event_time) AS last_seen,
  COUNT(*) AS events,
  SUM(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS orders,
  SUM(CASE WHEN event_type = 'purchase' THEN revenue_reporting_or_same ELSE 0 END) AS revenue,
  MAX(lifetime_revenue) AS lifetime_revenue_original,
  MAX(CASE WHEN converted THEN 1 ELSE 0 END) = 1 AS converted,
  MIN(converted_at) AS converted_at
FROM (
  SELECT e.*, {{revenue_expr}} AS revenue_reporting_or_same FROM {EVENTS} e
) d
GROUP BY anonymous_id
"""


def revenue_expr(reporting_currency: str) -> str:
    """Revenue in the reporting currency: the row's converted figure, else the original when it is
    already in the reporting currency, else NULL (counted as unconverted)."""
    code = reporting_currency.replace("'", "")
    return (
        "COALESCE(e.revenue_reporting, CASE WHEN e.currency = '" + code + "' "
        "OR (e.currency IS NULL AND e.revenue IS NOT NULL) THEN e.revenue END)"
    )


def spend_expr(reporting_currency: str) -> str:
    code = reporting_currency.replace("'", "")
    return (
        "COALESCE(s.spend_reporting, CASE WHEN s.currency = COALESCE(s.reporting_currency, '"
        + code
        + "') THEN s.spend END)"
    )


#: The ROAS view: date x network x campaign, revenue credited to the install campaign (first touch),
#: or to the re-engagement campaign for events Kochava attributed to a re-engagement.
PERFORMANCE_VIEW = f"""
CREATE VIEW {PERFORMANCE} AS
WITH tagged AS (
  SELECT e.*,
    CASE WHEN e.is_reengagement AND (e.network IS NOT NULL OR e.campaign IS NOT NULL) THEN 1 ELSE 0 END
      AS reengaged
  FROM {EVENTS} e
),
credited AS (
  SELECT
    e.event_id,
    e.event_type,
    e.anonymous_id,
    e.event_time,
    e.install_time,
    CAST(e.event_time AT TIME ZONE 'UTC' AS DATE) AS activity_date,
    CASE WHEN e.reengaged = 1 THEN 'reengagement' ELSE 'install' END AS attribution_basis,
    CASE WHEN e.reengaged = 1 THEN COALESCE(e.network, '(none)')
      ELSE COALESCE(e.install_network, e.network, '(none)') END AS network,
    CASE WHEN e.reengaged = 1 THEN COALESCE(e.campaign, '(none)')
      ELSE COALESCE(e.install_campaign, CASE WHEN e.event_type = 'install' THEN e.campaign END, '(none)')
      END AS campaign,
    CASE WHEN e.reengaged = 1 THEN e.reengagement_channel ELSE e.acquisition_channel END AS channel,
    e.revenue,
    {{revenue_expr}} AS revenue_rep,
    COALESCE(e.reporting_currency, '{{currency}}') AS reporting_currency
  FROM tagged e
),
activity AS (
  SELECT
    activity_date AS "date", network, campaign,
    MAX(channel) AS channel,
    SUM(CASE WHEN event_type = 'install' THEN 1 ELSE 0 END) AS installs,
    SUM(CASE WHEN event_type = 'reinstall' THEN 1 ELSE 0 END) AS reinstalls,
    COUNT(DISTINCT CASE WHEN attribution_basis = 'reengagement' THEN anonymous_id END) AS reengagements,
    COUNT(DISTINCT anonymous_id) AS active_devices,
    COUNT(DISTINCT CASE WHEN event_type = 'purchase' THEN anonymous_id END) AS purchasers,
    SUM(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS orders,
    SUM(CASE WHEN event_type = 'purchase' THEN revenue_rep END) AS revenue,
    SUM(CASE WHEN event_type = 'purchase' AND revenue IS NOT NULL AND revenue_rep IS NULL THEN 1 ELSE 0 END)
      AS unconverted_orders,
    SUM(CASE WHEN event_type = 'purchase' AND attribution_basis = 'reengagement' THEN revenue_rep END)
      AS revenue_reengagement,
    MAX(reporting_currency) AS reporting_currency
  FROM credited
  GROUP BY activity_date, network, campaign
),
cohort AS (
  SELECT
    CAST(install_time AT TIME ZONE 'UTC' AS DATE) AS "date", network, campaign,
    SUM(CASE WHEN event_time < install_time + INTERVAL '1 day' THEN revenue_rep END) AS cohort_revenue_d0,
    SUM(CASE WHEN event_time < install_time + INTERVAL '7 days' THEN revenue_rep END) AS cohort_revenue_d7,
    SUM(CASE WHEN event_time < install_time + INTERVAL '30 days' THEN revenue_rep END) AS cohort_revenue_d30
  FROM credited
  WHERE attribution_basis = 'install' AND event_type = 'purchase' AND install_time IS NOT NULL
  GROUP BY CAST(install_time AT TIME ZONE 'UTC' AS DATE), network, campaign
),
spend AS (
  SELECT s."date", s.network, s.campaign,
    SUM({{spend_expr}}) AS spend,
    SUM(s.clicks) AS clicks,
    SUM(s.impressions) AS impressions,
    SUM(s.installs) AS network_installs,
    MAX(s.reporting_currency) AS reporting_currency
  FROM {SPEND} s
  GROUP BY s."date", s.network, s.campaign
),
keys AS (
  SELECT "date", network, campaign FROM activity
  UNION SELECT "date", network, campaign FROM cohort
  UNION SELECT "date", network, campaign FROM spend
)
SELECT
  k."date",
  k.network,
  k.campaign,
  a.channel,
  CASE WHEN a.revenue_reengagement IS NOT NULL AND a.revenue_reengagement = a.revenue THEN 'reengagement'
       WHEN a.revenue_reengagement IS NOT NULL THEN 'mixed'
       ELSE 'install' END AS attribution_basis,
  COALESCE(a.installs, 0) AS installs,
  COALESCE(a.reinstalls, 0) AS reinstalls,
  COALESCE(a.reengagements, 0) AS reengagements,
  COALESCE(a.active_devices, 0) AS active_devices,
  COALESCE(a.purchasers, 0) AS purchasers,
  COALESCE(a.orders, 0) AS orders,
  COALESCE(a.revenue, 0) AS revenue,
  COALESCE(a.revenue_reengagement, 0) AS revenue_reengagement,
  COALESCE(a.unconverted_orders, 0) AS unconverted_orders,
  COALESCE(a.reporting_currency, sp.reporting_currency, '{{currency}}') AS reporting_currency,
  COALESCE(a.revenue, 0) / NULLIF(a.active_devices, 0) AS arpu,
  COALESCE(c.cohort_revenue_d0, 0) / NULLIF(a.installs, 0) AS revenue_per_install_d0,
  COALESCE(c.cohort_revenue_d7, 0) / NULLIF(a.installs, 0) AS revenue_per_install_d7,
  COALESCE(c.cohort_revenue_d30, 0) / NULLIF(a.installs, 0) AS revenue_per_install_d30,
  COALESCE(c.cohort_revenue_d0, 0) AS cohort_revenue_d0,
  COALESCE(c.cohort_revenue_d7, 0) AS cohort_revenue_d7,
  COALESCE(c.cohort_revenue_d30, 0) AS cohort_revenue_d30,
  sp.spend,
  sp.clicks,
  sp.impressions,
  sp.network_installs,
  sp.spend / NULLIF(sp.network_installs, 0) AS cpi,  -- Kochava's installs: what the spend bought
  sp.spend / NULLIF(a.purchasers, 0) AS cpa,
  COALESCE(a.revenue, 0) / NULLIF(sp.spend, 0) AS roas,
  COALESCE(c.cohort_revenue_d7, 0) / NULLIF(sp.spend, 0) AS roas_d7
FROM keys k
LEFT JOIN activity a ON a."date" = k."date" AND a.network = k.network AND a.campaign = k.campaign
LEFT JOIN cohort c ON c."date" = k."date" AND c.network = k.network AND c.campaign = k.campaign
LEFT JOIN spend sp ON sp."date" = k."date" AND sp.network = k.network AND sp.campaign = k.campaign
"""


def views(reporting_currency: str) -> list[str]:
    """The CREATE VIEW statements with the reporting currency's fallback folded in."""
    code = reporting_currency.replace("'", "")
    fill = {"revenue_expr": revenue_expr(code), "spend_expr": spend_expr(code), "currency": code}
    return [DEVICES_VIEW.format(**fill), PERFORMANCE_VIEW.format(**fill)]
