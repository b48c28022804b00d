"""The self-contained HTML ROAS report: data inline, an SVG chart drawn by inline JavaScript, the table.

No network access is needed to open it (no fonts, scripts or styles from elsewhere). The chart draws
revenue and spend bars per row and ROAS as points on a second axis; the page marks `data-rendered` on
the chart once drawn, and records script errors in `data-error`, so a browser test can check both.
"""

from __future__ import annotations

import html

import orjson

from app.warehouse.report import COLUMNS, HEADERS, Report, fmt

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
 body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }}
 h1 {{ font-size: 20px; margin: 0 0 4px; }}
 p.note {{ color: #5b6475; margin: 4px 0 16px; }}
 #chart {{ width: 100%; max-width: 1100px; }}
 table {{ border-collapse: collapse; margin-top: 16px; }}
 th, td {{ padding: 4px 10px; border-bottom: 1px solid #e3e6ec; text-align: right; }}
 th.k, td.k {{ text-align: left; }}
 tr.total td {{ font-weight: 600; border-top: 2px solid #1d2330; }}
 .legend span {{ display: inline-block; margin-right: 16px; }}
 .sw {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="note">Money in {currency}. Revenue is credited to the install campaign (first touch), or to the
re-engagement campaign for events Kochava attributed to one. ROAS = revenue / spend (none without spend).</p>
<div class="legend"><span><i class="sw" style="background:#2f6fde"></i>revenue</span>
<span><i class="sw" style="background:#f0a030"></i>spend</span>
<span><i class="sw" style="background:#1a9e5a;border-radius:6px"></i>ROAS (right axis)</span></div>
<svg id="chart" role="img" aria-label="revenue, spend and ROAS by {by}" viewBox="0 0 1100 420"
     xmlns="http://www.w3.org/2000/svg"></svg>
{table}
<script type="application/json" id="report-data">{data}</script>
<script>
(function () {{
  "use strict";
  var svg = document.getElementById("chart");
  window.addEventListener("error", function (e) {{ svg.setAttribute("data-error", String(e.message)); }});
  var report = JSON.parse(document.getElementById("report-data").textContent);
  var keys = report.keys, rows = report.rows;
  var NS = "http://www.w3.org/2000/svg";
  var W = 1100, H = 420, L = 70, R = 60, T = 20, B = 90;
  function el(name, attrs, text) {{
    var node = document.createElementNS(NS, name);
    for (var a in attrs) {{ node.setAttribute(a, attrs[a]); }}
    if (text !== undefined) {{ node.textContent = text; }}
    svg.appendChild(node);
    return node;
  }}
  function label(row) {{ return keys.map(function (k) {{ return row[k]; }}).join(" / "); }}
  var maxMoney = 0, maxRoas = 0;
  rows.forEach(function (r) {{
    maxMoney = Math.max(maxMoney, r.revenue || 0, r.spend || 0);
    if (r.roas !== null) {{ maxRoas = Math.max(maxRoas, r.roas); }}
  }});
  maxMoney = maxMoney || 1; maxRoas = maxRoas || 1;
  var plotW = W - L - R, plotH = H - T - B;
  el("line", {{x1: L, y1: T + plotH, x2: L + plotW, y2: T + plotH, stroke: "#1d2330"}});
  el("line", {{x1: L, y1: T, x2: L, y2: T + plotH, stroke: "#1d2330"}});
  for (var i = 0; i <= 4; i++) {{
    var y = T + plotH - plotH * i / 4;
    el("line", {{x1: L, y1: y, x2: L + plotW, y2: y, stroke: "#e3e6ec"}});
    el("text", {{x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11}}, (maxMoney * i / 4).toFixed(2));
    el("text", {{x: L + plotW + 6, y: y + 4, "font-size": 11, fill: "#1a9e5a"}},
       (maxRoas * i / 4).toFixed(2) + "x");
  }}
  var n = Math.max(rows.length, 1), slot = plotW / n, bar = Math.min(40, slot / 3);
  var points = [];
  rows.forEach(function (r, idx) {{
    var x0 = L + slot * idx + slot / 2 - bar;
    var hRev = plotH * (r.revenue || 0) / maxMoney, hSp = plotH * (r.spend || 0) / maxMoney;
    el("rect", {{x: x0, y: T + plotH - hRev, width: bar, height: hRev, fill: "#2f6fde",
                "class": "bar revenue"}})
      .appendChild(document.createElementNS(NS, "title")).textContent = label(r) + " revenue " + r.revenue;
    el("rect", {{x: x0 + bar, y: T + plotH - hSp, width: bar, height: hSp, fill: "#f0a030",
                "class": "bar spend"}});
    var tx = L + slot * idx + slot / 2, ty = T + plotH + 14;
    el("text", {{x: tx, y: ty, "font-size": 11, "text-anchor": "end",
                transform: "rotate(-30 " + tx + " " + ty + ")"}}, label(r));
    if (r.roas !== null) {{
      var py = T + plotH - plotH * r.roas / maxRoas;
      points.push(tx + "," + py);
      el("circle", {{cx: tx, cy: py, r: 5, fill: "#1a9e5a", "class": "roas"}});
    }}
  }});
  if (points.length > 1) {{
    el("polyline", {{points: points.join(" "), fill: "none", stroke: "#1a9e5a", "stroke-width": 2}});
  }}
  if (!rows.length) {{
    el("text", {{x: W / 2, y: H / 2, "text-anchor": "middle"}}, "no events or spend in this range");
  }}
  svg.setAttribute("data-rendered", String(rows.length));
}})();
</script>
</body>
</html>
"""


def render_html(report: Report) -> str:
    """The whole page as one string."""
    cols = (*report.keys, *COLUMNS)
    head = "".join(f'<th class="k">{html.escape(k)}</th>' for k in report.keys) + "".join(
        f"<th>{html.escape(HEADERS[c])}</th>" for c in COLUMNS
    )
    body = []
    for row, css in [*((r, "") for r in report.rows), (report.totals, "total")]:
        cells = "".join(
            f'<td class="{"k" if c in report.keys else ""}">{html.escape(fmt(c, row.get(c)))}</td>'
            for c in cols
        )
        body.append(f'<tr class="{css}">{cells}</tr>')
    table = f'<table id="report-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    data = report.as_json()
    data["keys"] = list(report.keys)
    # JSON inside <script>: "</" must not close the element.
    text = orjson.dumps(data).decode().replace("</", "<\\/")
    title = f"ROAS by {report.by}, {report.period}"
    return PAGE.format(
        title=html.escape(title),
        currency=html.escape(report.currency),
        by=html.escape(report.by),
        table=table,
        data=text,
    )
