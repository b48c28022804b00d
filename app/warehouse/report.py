"""`kseg report roas`: revenue, spend, CPI, CPA and ROAS by network, campaign or channel over a date range.

Reads the `campaign_performance` view (so it works while `kseg run` is loading) and renders a text table
with totals, JSON, CSV, or a self-contained HTML page (`app.warehouse.html`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.warehouse.sql import PERFORMANCE

DIMENSIONS: dict[str, tuple[str, ...]] = {
    "network": ("network",),
    "campaign": ("network", "campaign"),
    "channel": ("channel",),
}
SUMS = (
    "installs",
    "reinstalls",
    "reengagements",
    "purchasers",
    "orders",
    "revenue",
    "revenue_reengagement",
    "unconverted_orders",
    "spend",
)
COLUMNS = (*SUMS, "cpi", "cpa", "roas")
CENT = Decimal("0.01")
MONEY = frozenset({"revenue", "revenue_reengagement", "spend", "cpi", "cpa"})


@dataclass
class Report:
    start: date
    end: date
    by: str
    currency: str
    rows: list[dict[str, Any]]
    totals: dict[str, Any]

    @property
    def period(self) -> str:
        if self.start == date.min and self.end == date.max:
            return "all days"
        first = "the first day" if self.start == date.min else self.start.isoformat()
        last = "the last day" if self.end == date.max else self.end.isoformat()
        return f"{first} to {last}"

    @property
    def keys(self) -> tuple[str, ...]:
        return DIMENSIONS[self.by]

    def as_json(self) -> dict[str, Any]:
        return {
            "from": None if self.start == date.min else self.start.isoformat(),
            "to": None if self.end == date.max else self.end.isoformat(),
            "by": self.by,
            "reporting_currency": self.currency,
            "attribution": "revenue credited to the install campaign (first touch), or to the re-engagement "
            "campaign for events Kochava attributed to a re-engagement",
            "rows": [_jsonable(r) for r in self.rows],
            "totals": _jsonable(self.totals),
        }


def _ratios(row: dict[str, Any]) -> dict[str, Any]:
    spend, revenue = row.get("spend"), row.get("revenue") or Decimal(0)
    row["cpi"] = spend / row["installs"] if spend is not None and row["installs"] else None
    row["cpa"] = spend / row["purchasers"] if spend is not None and row["purchasers"] else None
    row["roas"] = revenue / spend if spend else None
    return row


def query(conn: Any, start: date, end: date, by: str) -> Report:
    """Aggregate the view over [start, end] (inclusive) by `by`, with a totals row."""
    keys = DIMENSIONS[by]
    select_keys = ", ".join(f"COALESCE({k}, '(none)') AS {k}" for k in keys)
    group = ", ".join(f"COALESCE({k}, '(none)')" for k in keys)
    sums = ", ".join(f"SUM({c}) AS {c}" for c in SUMS)
    stmt = (
        f"SELECT {select_keys}, {sums}, MAX(reporting_currency) AS reporting_currency FROM {PERFORMANCE} "
        f'WHERE "date" >= %s AND "date" <= %s GROUP BY {group} ORDER BY SUM(revenue) DESC, {group}'
    )
    with conn.cursor() as cur:
        cur.execute(stmt, (start, end))
        names = [d.name for d in cur.description]
        raw = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
    currencies = {r.pop("reporting_currency") for r in raw} - {None}
    rows = [_ratios(r) for r in raw]
    totals: dict[str, Any] = {k: "TOTAL" if i == 0 else "" for i, k in enumerate(keys)}
    for column in SUMS:
        values = [r[column] for r in rows if r[column] is not None]
        totals[column] = sum(values, Decimal(0)) if values else (None if column == "spend" else 0)
    return Report(start, end, by, ", ".join(sorted(currencies)) or "USD", rows, _ratios(totals))


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Money rounded to the cent, ROAS to 4 places, counts as integers."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Decimal):
            if k == "roas":
                v = float(v.quantize(Decimal("0.0001"), ROUND_HALF_UP))
            elif k in MONEY:
                v = float(v.quantize(CENT, ROUND_HALF_UP))
            else:
                v = int(v)
        out[k] = v
    return out


def fmt(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "roas":
        return f"{Decimal(value).quantize(CENT, ROUND_HALF_UP)}x"
    if column in MONEY:
        return f"{Decimal(value).quantize(CENT, ROUND_HALF_UP):,}"
    if isinstance(value, Decimal):
        return f"{int(value):,}"
    return str(value)


HEADERS = {
    "installs": "installs",
    "reinstalls": "reinst.",
    "reengagements": "re-eng.",
    "purchasers": "payers",
    "orders": "orders",
    "revenue": "revenue",
    "revenue_reengagement": "re-eng. rev.",
    "unconverted_orders": "unconv.",
    "spend": "spend",
    "cpi": "CPI",
    "cpa": "CPA",
    "roas": "ROAS",
}


def render_table(report: Report) -> str:
    """A readable, aligned table with a totals line and the attribution rule under it."""
    cols = (*report.keys, *COLUMNS)
    header = [k for k in report.keys] + [HEADERS[c] for c in COLUMNS]
    lines = [[fmt(c, r.get(c)) for c in cols] for r in [*report.rows, report.totals]]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    nkeys = len(report.keys)

    def join(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < nkeys else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    body = [join(line) for line in lines[:-1]] or ["(no events or spend in this range)"]
    return "\n".join(
        [
            f"ROAS by {report.by}, {report.period}, money in {report.currency}",
            join(header),
            rule,
            *body,
            rule,
            join(lines[-1]),
            "",
            "Revenue is credited to the install campaign (first touch), or to the re-engagement campaign for",
            "events Kochava attributed to one (re-eng. rev.).",
            "ROAS = revenue / spend; '-' where there is no spend.",
            *(
                [
                    f"{report.totals['unconverted_orders']} order(s) had no rate into {report.currency}, "
                    "so they are not in revenue."
                ]
                if report.totals.get("unconverted_orders")
                else []
            ),
        ]
    )


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    cols = (*report.keys, *COLUMNS)
    writer.writerow(cols)
    for row in [*report.rows, report.totals]:
        data = _jsonable(row)
        writer.writerow(["" if data.get(c) is None else data.get(c) for c in cols])
    return out.getvalue()
