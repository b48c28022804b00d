"""The console's HTML: one layout and small builders, every value escaped where it is put in a page.

Pages are plain strings built here (no template engine is installed); `esc` is the only way a value
reaches markup, so a postback parameter such as `</td><script>` shows as text. No script runs on any
page: expanding a postback is a `<details>` element, and every action is a form.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

NAV = (
    ("/", "Overview"),
    ("/trace", "Trace"),
    ("/dead-letters", "Dead letters"),
    ("/studio", "Mapping studio"),
    ("/reconciliation", "Reconciliation"),
    ("/privacy", "Privacy requests"),
    ("/roas", "ROAS report"),
)


def esc(value: Any) -> str:
    """Text for an HTML element or a quoted attribute; None shows as a dash."""
    return "-" if value is None else html.escape(str(value), quote=True)


def pretty(value: Any) -> str:
    """A JSON value, indented, escaped for a `<pre>`."""
    return esc(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode())


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], css: str = "", row_css: Sequence[str] = ()
) -> str:
    """A table of escaped cells; `row_css[i]` is row i's class."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = row_css[i] if i < len(row_css) and row_css[i] else ""
        cells = "".join(f"<td>{esc(c)}</td>" for c in row)
        body.append(f'<tr class="{esc(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="empty">nothing yet</td></tr>')
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


def layout(title: str, body: str, *, role: str | None, csrf: str | None, active: str = "") -> str:
    """The whole page: navigation, who is logged in (with a log-out form), the body."""
    on = ' class="on"'
    links = "".join(f'<a href="{href}"{on if href == active else ""}>{esc(text)}</a>' for href, text in NAV)
    who = ""
    if role is not None:
        logout = (
            f'<form method="post" action="/logout" class="inline">{hidden("csrf", csrf)}'
            '<button type="submit">Log out</button></form>'
            if csrf
            else ""
        )
        who = f'<span class="who" id="role">{esc(role)}</span>{logout}'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · kseg console</title>
<link rel="stylesheet" href="/static/console.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<header><strong>kseg</strong><nav>{links if role is not None else ""}</nav>{who}</header>
<main>
<h1>{esc(title)}</h1>
{body}
</main>
</body>
</html>
"""
