"""The console's aiohttp application: pages, their JSON endpoints, access control and security headers.

Every page is rendered here from the warehouse, the dead-letter topic and the loaded mapping profiles;
no page runs a script (CSP `script-src 'none'`), except the linked ROAS report, whose inline chart script
runs under a per-response nonce. Unauthenticated requests get 401: JSON for `/api/...`, the login page
for pages. POSTs made with the session cookie need the session's CSRF token; replaying dead letters
needs the operator role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from app.console import html as h
from app.console import letters as dl
from app.console import queries, studio
from app.console.auth import LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL, Auth, Principal
from app.console.metrics import ConsoleMetrics
from app.metrics import CONTENT_TYPE_LATEST, render
from app.records import DeadLetter
from app.sections import ConsoleSettings
from app.warehouse import db

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

#: Pages' policy: nothing from anywhere but this origin, no script at all, no framing, forms post here.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

Replay = Callable[[list[DeadLetter]], Awaitable[tuple[int, int]]]
Timeline = Callable[[Any, str], dict[str, Any]]
Versions = Callable[[], Awaitable[list[studio.Version]]]
Lag = Callable[[], Awaitable[list[dict[str, Any]]]]


@dataclass
class Console:
    """What the handlers share: settings, the access checker, and the parts given by the root."""

    settings: ConsoleSettings
    auth: Auth
    replay: Replay
    timeline: Timeline | None
    versions: Versions
    lag: Lag
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    read_letters: Callable[[], Awaitable[list[dl.Letter]]] | None = None

    def connect(self) -> Any:
        return db.connect(self.settings, autocommit=True)


CONSOLE = web.AppKey("console", Console)
WHO = web.RequestKey("who", Principal)
SESSION = web.RequestKey("session", str)


# ---- access ---------------------------------------------------------------------------------------------
def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status, content_type="application/json")


def _principal(request: web.Request) -> tuple[Principal | None, str | None]:
    """(who, session cookie value): from `Authorization: Bearer` on the JSON endpoints, else the cookie."""
    auth = request.app[CONSOLE].auth
    header = request.headers.get("Authorization", "")
    if _wants_json(request) and header.startswith("Bearer "):
        return auth.by_token(header[7:].strip()), None
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie:
        who = auth.by_session(cookie)
        if who is not None:
            return who, cookie
    return None, None


OPEN = {"/login", "/healthz", "/readyz", "/metrics", "/favicon.ico"}


@web.middleware
async def security(request: web.Request, handler: Any) -> web.StreamResponse:
    """Headers on every answer; the login gate; CSRF on every cookie-authenticated POST."""
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        response = exc
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _guarded(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path in OPEN or request.path.startswith("/static/"):
        return await handler(request)  # type: ignore[no-any-return]
    who, session = _principal(request)
    if who is None:
        if _wants_json(request):
            return _json({"error": "unauthorized", "reason": "a console token is needed (Bearer)"}, 401)
        return await login_page(request, status=401, next_path=request.path_qs)
    request[WHO] = who
    if session is not None:
        request[SESSION] = session
    if request.method == "POST" and session is not None:
        form = await request.post()
        if not request.app[CONSOLE].auth.check_csrf(session, str(form.get("csrf", ""))):
            return _refuse(request, 403, "csrf", "the form's CSRF token is missing or not this session's")
    return await handler(request)  # type: ignore[no-any-return]


def _refuse(request: web.Request, status: int, error: str, reason: str) -> web.Response:
    if _wants_json(request):
        return _json({"error": error, "reason": reason}, status)
    return _page(request, "Refused", f'<p class="error" id="refused">{h.esc(reason)}</p>', status=status)


def _page(
    request: web.Request, title: str, body: str, *, status: int = 200, active: str = ""
) -> web.Response:
    who = request.get(WHO)
    session = request.get(SESSION)
    csrf = request.app[CONSOLE].auth.csrf(session) if session else None
    text = h.layout(title, body, role=who.role if who else None, csrf=csrf, active=active)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _csrf_field(request: web.Request) -> str:
    session = request.get(SESSION)
    return h.hidden("csrf", request.app[CONSOLE].auth.csrf(session)) if session else ""


def _safe_next(path: str) -> str:
    """Only a path of this console (no `//host`, no scheme) is a place to go after logging in."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


async def login_page(
    request: web.Request, *, status: int = 200, next_path: str = "/", message: str = ""
) -> web.Response:
    console = request.app[CONSOLE]
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    note = (
        '<p class="error" id="login-error">' + h.esc(message) + "</p>"
        if message
        else '<p class="note">Give a console token (KSEG_CONSOLE_TOKENS; <code>kseg run</code> prints a '
        "development operator token).</p>"
    )
    if not console.auth.enabled:
        note = '<p class="error">KSEG_CONSOLE_TOKENS is not set: nobody can log in.</p>'
    body = (
        f'{note}<form method="post" action="/login" class="bar" id="login">'
        f"{h.hidden('login_csrf', console.auth.login_csrf(nonce))}{h.hidden('next', _safe_next(next_path))}"
        '<label>Token <input type="password" name="token" id="token" autocomplete="current-password" '
        'required></label><button type="submit" id="login-button">Log in</button></form>'
    )
    response = _page(request, "Log in", body, status=status)
    if LOGIN_COOKIE not in request.cookies:  # keep the nonce a form already on screen was made with
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="Strict", path="/")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return await login_page(request, next_path=request.query.get("next", "/"))
    console = request.app[CONSOLE]
    form = await request.post()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    next_path = _safe_next(str(form.get("next", "/")))
    if not console.auth.check_login_csrf(nonce, str(form.get("login_csrf", ""))):
        return await login_page(
            request, status=403, next_path=next_path, message="The login form expired: try again."
        )
    who = console.auth.by_token(str(form.get("token", "")))
    if who is None:
        return await login_page(request, status=401, next_path=next_path, message="Unknown token.")
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(
        SESSION_COOKIE,
        console.auth.session(who),
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=SESSION_TTL,
        secure=request.secure,
    )
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# ---- pages ----------------------------------------------------------------------------------------------
async def _db(request: web.Request, work: Callable[[Any], Any]) -> Any:
    """`work(conn)` on a fresh warehouse connection in a thread; an `HTTPServiceUnavailable` naming the
    cause when the warehouse cannot be reached."""
    console = request.app[CONSOLE]

    def call() -> Any:
        with console.connect() as conn:
            return work(conn)

    try:
        return await asyncio.to_thread(call)
    except (db.WarehouseUnavailable, OSError) as exc:
        raise _unavailable(request, f"the warehouse cannot be reached: {exc}") from exc
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            raise _unavailable(request, f"the warehouse cannot be reached: {str(exc).strip()}") from exc
        raise


def _unavailable(request: web.Request, reason: str) -> web.HTTPException:
    if _wants_json(request):
        return web.HTTPServiceUnavailable(
            body=orjson.dumps({"error": "warehouse_unavailable", "reason": reason}),
            content_type="application/json",
        )
    return web.HTTPServiceUnavailable(text=f"kseg console: {reason}", content_type="text/plain")


def _count_table(rows: list[dict[str, Any]] | None, keys: tuple[str, ...], id_: str) -> str:
    if rows is None:
        return '<p class="note">not available: the warehouse has no such table yet</p>'
    return (
        f'<div id="{h.esc(id_)}">'
        + h.table([*keys, "count"], [[r[k] for k in keys] + [r["n"]] for r in rows])
        + "</div>"
    )


async def overview_data(request: web.Request) -> dict[str, Any]:
    windows = await _db(request, lambda conn: {w: queries.overview(conn, w) for w in queries.WINDOWS})
    lag = await request.app[CONSOLE].lag()
    return {"windows": windows, "consumer_lag": lag}


async def overview(request: web.Request) -> web.Response:
    data = await overview_data(request)
    if _wants_json(request):
        return _json(data)
    parts = []
    for name, w in data["windows"].items():
        lat = w["latency"]
        latency = (
            "not available"
            if lat is None
            else f"p50 {h.esc(lat['p50_ms'])} ms · p95 {h.esc(lat['p95_ms'])} ms"
            f" over {h.esc(lat['events'])} event(s)"
        )
        rows = h.esc(w["warehouse_rows"])
        left = (
            f"<h2>Postbacks received</h2>{_count_table(w['postbacks'], ('kind',), f'postbacks-{name}')}"
            f"<h2>What became of them</h2>{_count_table(w['processing'], ('outcome',), f'processing-{name}')}"
            f"<h2>Dead-lettered</h2>{_count_table(w['dead_letters'], ('stage', 'reason'), f'dead-{name}')}"
        )
        calls = ("call_type", "outcome")
        right = (
            f"<h2>Segment calls</h2>{_count_table(w['segment'], calls, f'segment-{name}')}"
            f"<h2>Kochava sends</h2>{_count_table(w['kochava'], calls, f'kochava-{name}')}"
        )
        parts.append(
            f'<section id="window-{h.esc(name)}"><h2>Last {h.esc(name)}</h2><div class="cards">'
            f'<div class="card">warehouse rows<b id="rows-{name}">{rows}</b></div>'
            f'<div class="card">received → Segment 2xx<b id="latency-{name}">{latency}</b></div></div>'
            f'<div class="cols"><div>{left}</div><div>{right}</div></div></section>'
        )
    lag = h.table(
        ["group", "topic", "lag"], [[r["group"], r["topic"], r["lag"]] for r in data["consumer_lag"]]
    )
    body = "".join(parts) + f'<h2>Consumer lag</h2><div id="lag">{lag}</div>'
    return _page(request, "Overview", body, active="/")


async def trace(request: web.Request) -> web.Response:
    query = request.query.get("q", "").strip()
    console = request.app[CONSOLE]
    result: dict[str, Any] | None = None
    if query and console.timeline is not None:
        timeline = console.timeline
        result = await _db(request, lambda conn: timeline(conn, query))
    if _wants_json(request):
        if not query:
            return _json(
                {"error": "missing_query", "reason": "give ?q= a device id, userId, event id or messageId"},
                400,
            )
        if console.timeline is None:
            return _json({"error": "unavailable", "reason": "this build has no trace timeline"}, 503)
        return _json(result)
    form = (
        '<form method="get" action="/trace" class="bar" id="trace-form">'
        "<label>Any id (Kochava device id, IDFA, IDFV, GAID, Android id, userId, event id, messageId)"
        '<input type="text" name="q" id="q" size="48" '
        f'value="{h.esc(query)}"></label><button type="submit" id="search">Search</button></form>'
    )
    if console.timeline is None:
        return _page(
            request,
            "Trace",
            form + '<p class="error">The trace timeline is not part of this build.</p>',
            active="/trace",
        )
    return _page(
        request, "Trace", form + (render_timeline(result) if result is not None else ""), active="/trace"
    )


CALL_HEADERS = ["type", "event", "outcome", "HTTP", "attempts", "messageId", "final"]


def render_timeline(t: dict[str, Any]) -> str:
    events = t.get("events") or []
    devices = [str(d.get("device_key") if isinstance(d, dict) else d) for d in t.get("devices") or []]
    head = (
        f'<p id="matched">Matched <b>{h.esc(t.get("query"))}</b> as {h.esc(t.get("matched_as"))}: '
        f"{len(events)} event(s), device(s) {h.esc(', '.join(devices) or None)}, "
        f"user(s) {h.esc(', '.join(map(str, t.get('user_ids') or [])) or None)}</p>"
    )
    out = [head]
    for i, e in enumerate(events):
        # The newest event starts open; the older ones are a click away (a device may have hundreds).
        expanded = " open" if i == len(events) - 1 else ""
        calls = e.get("segment_calls") or []
        call_rows = [
            [
                c.get("type"),
                c.get("event"),
                c.get("outcome"),
                c.get("http_status"),
                c.get("attempts"),
                c.get("message_id"),
                c.get("final_at"),
            ]
            for c in calls
        ]
        css = [str(c.get("outcome") or "") for c in calls]
        row = e.get("warehouse_row")
        row_html = f'<pre class="row">{h.pretty(row)}</pre>' if row else '<p class="note">none</p>'
        out.append(
            f'<details class="event" data-event-id="{h.esc(e.get("event_id"))}"{expanded}>'
            f"<summary>{h.esc(e.get('received_at'))} · {h.esc(e.get('kind'))} · "
            f"{h.esc(e.get('event_name'))} · "
            f"{h.esc(e.get('outcome'))} ({h.esc(e.get('profile'))} v{h.esc(e.get('profile_version'))})"
            f"{' · ' + h.esc(e.get('reason')) if e.get('reason') else ''}</summary>"
            f'<h2>Postback as received</h2><pre class="params">{h.pretty(e.get("params"))}</pre>'
            f'<h2>Segment calls</h2><div class="calls">{h.table(CALL_HEADERS, call_rows, row_css=css)}</div>'
            f"<h2>Warehouse row</h2>{row_html}"
            + (
                f"<h2>Kochava sends</h2><pre>{h.pretty(e.get('kochava_sends'))}</pre>"
                if e.get("kochava_sends")
                else ""
            )
            + (
                f"<h2>Dead letters</h2><pre>{h.pretty(e.get('dead_letters'))}</pre>"
                if e.get("dead_letters")
                else ""
            )
            + "</details>"
        )
    if t.get("identity"):
        out.append('<h2>Identity</h2><pre id="identity">' + h.pretty(t["identity"]) + "</pre>")
    return "".join(out)


# ---- dead letters ---------------------------------------------------------------------------------------
def _since(text: str) -> datetime | None:
    """`30m` / `2h` / `7d` or ISO-8601; None when empty or unreadable (the page says so)."""
    text = text.strip()
    if not text:
        return None
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: float(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(text=f"since: {text!r} is neither ISO-8601 nor like 30m, 2h, 7d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _letters(request: web.Request) -> list[dl.Letter]:
    console = request.app[CONSOLE]
    reader = console.read_letters or (lambda: dl.read_letters(console.settings))
    return await reader()


async def dead_letters(request: web.Request) -> web.Response:
    q = request.query
    stage, reason = q.get("stage", "").strip(), q.get("reason", "").strip()
    try:
        since = _since(q.get("since", ""))
    except web.HTTPBadRequest as exc:
        if _wants_json(request):
            return _json({"error": "bad_since", "reason": exc.text}, 400)
        raise
    everything = await _letters(request)
    chosen = dl.select(everything, stage, reason, since)
    if _wants_json(request):
        return _json({"dead_letters": [dl.summary(x) for x in chosen], "total": len(everything)})
    return _page(
        request,
        "Dead letters",
        _letters_body(request, everything, chosen, stage, reason, q.get("since", "")),
        active="/dead-letters",
    )


def _options(values: Sequence[str], chosen: str) -> str:
    return '<option value="">any</option>' + "".join(
        f'<option value="{h.esc(v)}"{" selected" if v == chosen else ""}>{h.esc(v)}</option>' for v in values
    )


def _letters_body(
    request: web.Request,
    everything: list[dl.Letter],
    chosen: list[dl.Letter],
    stage: str,
    reason: str,
    since: str,
    outcome: str = "",
) -> str:
    who: Principal = request[WHO]
    stages = sorted({x.letter.stage for x in everything})
    reasons = sorted({x.letter.reason for x in everything})
    filters = (
        '<form method="get" action="/dead-letters" class="bar" id="dl-filter">'
        f'<label>Stage<select name="stage" id="stage">{_options(stages, stage)}</select></label>'
        f'<label>Reason<select name="reason" id="reason">{_options(reasons, reason)}</select></label>'
        "<label>Since (30m, 2h, 7d or ISO)"
        f'<input type="text" name="since" id="since" value="{h.esc(since)}"></label>'
        '<button type="submit">Filter</button></form>'
    )
    rows = []
    for x in reversed(chosen):
        s = dl.summary(x)
        box = f'<input type="checkbox" name="id" value="{h.esc(x.id)}" class="pick">' if who.operator else ""
        rows.append(
            f'<tr><td>{box}</td><td><a href="/dead-letters/{h.esc(x.id)}">{h.esc(x.id)}</a></td>'
            f"<td>{h.esc(s['last_seen'])}</td><td>{h.esc(s['stage'])}</td><td>{h.esc(s['reason'])}</td>"
            f"<td>{h.esc(s['http_status'])}</td><td>{h.esc(s['event_id'])}</td><td>{h.esc(str(s['error'])[:120])}</td></tr>"
        )
    table = (
        '<table id="letters"><thead><tr><th></th><th>id</th><th>last seen</th><th>stage</th><th>reason</th>'
        "<th>HTTP</th><th>event id</th><th>error</th></tr></thead><tbody>"
        + ("".join(rows) or '<tr><td colspan="8" class="empty">no dead letters match</td></tr>')
        + "</tbody></table>"
    )
    note = f'<p class="note">{len(chosen)} of {len(everything)} dead letter(s).</p>'
    done = f'<p class="ok" id="replay-outcome">{h.esc(outcome)}</p>' if outcome else ""
    if who.operator:
        return (
            filters
            + done
            + note
            + f'<form method="post" action="/dead-letters/replay" id="replay-form">{_csrf_field(request)}'
            + table
            + '<button type="submit" id="replay">Replay selected</button></form>'
        )
    return filters + done + note + table + '<p class="note">Replaying needs the operator role.</p>'


async def dead_letter(request: web.Request) -> web.Response:
    wanted = request.match_info["id"]
    found = [x for x in await _letters(request) if x.id == wanted]
    if not found:
        return _refuse(request, 404, "not_found", f"no dead letter {wanted} in the topic")
    letter = found[0].letter
    if _wants_json(request):
        return _json({"id": wanted, **letter.model_dump(mode="json")})
    body = (
        f'<pre id="letter">{h.pretty(letter.model_dump(mode="json"))}</pre>'
        '<p><a href="/dead-letters">back</a></p>'
    )
    return _page(request, f"Dead letter {wanted}", body, active="/dead-letters")


async def replay(request: web.Request) -> web.Response:
    who: Principal = request[WHO]
    if not who.operator:
        return _refuse(request, 403, "forbidden", "replaying dead letters needs the operator role")
    if _wants_json(request):
        try:
            body = orjson.loads(await request.read())
            ids = [str(i) for i in body["ids"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"error": "bad_request", "reason": 'send {"ids": ["PARTITION-OFFSET", ...]}'}, 400)
    else:
        ids = [str(i) for i in (await request.post()).getall("id", [])]
    if not ids:
        return _refuse(request, 400, "nothing_selected", "select at least one dead letter to replay")
    everything = await _letters(request)
    by_id = {x.id: x for x in everything}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        return _refuse(request, 404, "not_found", f"no dead letter {', '.join(unknown)} in the topic")
    replayed, skipped = await request.app[CONSOLE].replay([by_id[i].letter for i in ids])
    log.warning("console: %s replayed %d dead letter(s) (%d not replayable)", who.token_id, replayed, skipped)
    outcome = f"replayed {replayed} of {len(ids)} dead letter(s); {skipped} had no replayable payload"
    if _wants_json(request):
        return _json({"replayed": replayed, "skipped": skipped, "ids": ids})
    return _page(
        request,
        "Dead letters",
        _letters_body(request, everything, everything, "", "", "", outcome),
        active="/dead-letters",
    )


# ---- mapping studio -------------------------------------------------------------------------------------
async def studio_page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    versions = await console.versions()
    by_key = {v.key: v for v in versions}
    form: dict[str, str] = {}
    if request.method == "POST":
        if _wants_json(request):
            try:
                raw = orjson.loads(await request.read())
                form = {k: str(v) for k, v in raw.items()}
            except (orjson.JSONDecodeError, AttributeError):
                return _json({"error": "bad_request", "reason": "send a JSON object"}, 400)
        else:
            form = {k: str(v) for k, v in (await request.post()).items()}
    try:
        recent = await _db(request, queries.recent_postbacks)
    except web.HTTPServiceUnavailable:
        recent = []
    text = form.get("input", "")
    if form.get("recent"):
        picked = [r for r in recent if r["event_id"] == form["recent"]]
        if picked:
            text = orjson.dumps(picked[0]["params"]).decode()
    left_key = form.get("left") or (versions[0].key if versions else "")
    right_key = form.get("right", "candidate")
    candidate = form.get("candidate") or (by_key[left_key].text if left_key in by_key else "")
    result = await asyncio.to_thread(
        _studio_run, console.settings, text, by_key, left_key, right_key, candidate
    )
    if _wants_json(request):
        return _json(result, 400 if result.get("error") else 200)
    return _page(
        request,
        "Mapping studio",
        _studio_body(request, versions, recent, text, left_key, right_key, candidate, result),
        active="/studio",
    )


def _studio_run(
    settings: ConsoleSettings,
    text: str,
    by_key: dict[str, studio.Version],
    left: str,
    right: str,
    candidate: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if right == "candidate":
        profile, problems = studio.check_candidate(candidate)
        out["problems"] = [{"line": p.line, "message": p.message, "text": str(p)} for p in problems]
        right_profile = profile
    else:
        right_profile = by_key[right].profile if right in by_key else None
    if not text.strip():
        return out
    try:
        params = studio.parse_input(text)
    except ValueError as exc:
        return {**out, "error": f"input: {exc}"}
    if left not in by_key:
        return {**out, "error": f"unknown version {left!r}"}
    out["left"] = studio.run(settings, params, by_key[left].profile)
    if right_profile is not None:
        out["right"] = studio.run(settings, params, right_profile)
        out["difference"] = [
            {"path": p, "left": a, "right": b} for p, a, b in studio.difference(out["left"], out["right"])
        ]
    return out


def _studio_body(
    request: web.Request,
    versions: list[studio.Version],
    recent: list[dict[str, Any]],
    text: str,
    left: str,
    right: str,
    candidate: str,
    result: dict[str, Any],
) -> str:
    left_opts = "".join(
        f'<option value="{h.esc(v.key)}"{" selected" if v.key == left else ""}>{h.esc(v.title)}</option>'
        for v in versions
    )
    right_opts = (
        f'<option value="candidate"{" selected" if right == "candidate" else ""}>'
        "candidate (edited below)</option>"
        + "".join(
            f'<option value="{h.esc(v.key)}"{" selected" if v.key == right else ""}>{h.esc(v.title)}</option>'
            for v in versions
        )
    )
    recent_opts = '<option value="">paste one instead</option>' + "".join(
        f'<option value="{h.esc(r["event_id"])}">{h.esc(r["received_at"])} · {h.esc(r["kind"])} · '
        f"{h.esc((r.get('params') or {}).get('event_name'))}</option>"
        for r in recent
    )
    form = (
        f'<form method="post" action="/studio" id="studio-form">{_csrf_field(request)}'
        '<label>Postback (query string, URL or JSON)<textarea name="input" id="input" rows="3">'
        f"{h.esc(text)}</textarea></label>"
        '<div class="bar"><label>or a recent postback'
        f'<select name="recent" id="recent">{recent_opts}</select></label>'
        f'<label>Left<select name="left" id="left">{left_opts}</select></label>'
        f'<label>Right<select name="right" id="right">{right_opts}</select></label>'
        '<button type="submit" id="try">Try</button></div>'
        '<label>Candidate profile (YAML)<textarea name="candidate" id="candidate" rows="14">'
        f"{h.esc(candidate)}</textarea></label></form>"
    )
    out = [form]
    if result.get("problems"):
        items = "".join(
            f"<li>line {h.esc(p['line'])}: {h.esc(p['message'])}</li>" for p in result["problems"]
        )
        out.append(f'<h2>check</h2><ul class="problems" id="problems">{items}</ul>')
    elif right == "candidate" and "problems" in result:
        out.append('<p class="ok" id="problems-none">check: the candidate is a valid profile</p>')
    if result.get("error"):
        out.append(f'<p class="error" id="studio-error">{h.esc(result["error"])}</p>')
    if "left" in result:
        diff = result.get("difference")
        if diff is not None:
            rows = [[d["path"], _short(d["left"]), _short(d["right"])] for d in diff]
            out.append(
                f"<h2>Difference ({len(rows)})</h2>"
                f'<div id="difference">{h.table(["path", "left", "right"], rows)}</div>'
            )
        out.append(
            f'<div class="cols"><div><h2>Left: {h.esc(left)}</h2>'
            f'<pre id="left-out">{h.pretty(result["left"])}</pre></div>'
            f"<div><h2>Right: {h.esc(right)}</h2>"
            f'<pre id="right-out">{h.pretty(result.get("right"))}</pre></div></div>'
        )
    return "".join(out)


def _short(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


# ---- reconciliation -------------------------------------------------------------------------------------
async def reconcile_rows(console: Console) -> list[dict[str, Any]] | None:
    since = date.today() - timedelta(
        days=console.settings.kochava_digest_days if hasattr(console.settings, "kochava_digest_days") else 7
    )

    def work() -> list[dict[str, Any]] | None:
        with console.connect() as conn:
            rows = queries.reconciliation(conn, since)
        return None if rows is None else queries.gaps(rows, console.settings.kseg_reconcile_gap_pct)

    rows = await asyncio.to_thread(work)
    ConsoleMetrics.on(console.registry).reconciled(rows or [], console.settings.kseg_reconcile_gap_pct)
    return rows


async def reconciliation(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    try:
        rows = await reconcile_rows(console)
    except (db.WarehouseUnavailable, OSError) as exc:
        raise _unavailable(request, str(exc)) from exc
    threshold = console.settings.kseg_reconcile_gap_pct
    if _wants_json(request):
        return _json({"threshold_pct": threshold, "rows": rows})
    if rows is None:
        return _page(
            request,
            "Reconciliation",
            '<p class="note">The warehouse has no tables yet.</p>',
            active="/reconciliation",
        )
    table = h.table(
        ["date", "network", "campaign", "Kochava installs", "received", "delivered", "gap", "gap %"],
        [
            [
                r["date"],
                r["network"],
                r["campaign"],
                r["kochava_installs"],
                r["received"],
                r["delivered"],
                r["gap"],
                r["gap_pct"],
            ]
            for r in rows
        ],
        css="reconcile",
        row_css=["flag" if r["flagged"] else "" for r in rows],
    )
    body = (
        "<p class=\"note\">Kochava's installs (the digest's report rows) next to the installs kseg "
        f"received and Segment accepted. Rows whose gap exceeds {h.esc(threshold)} % "
        "(KSEG_RECONCILE_GAP_PCT) are highlighted: "
        "usually a postback missing or misconfigured in Kochava.</p>"
        f'<div id="reconciliation">{table}</div>'
    )
    return _page(request, "Reconciliation", body, active="/reconciliation")


# ---- privacy requests -----------------------------------------------------------------------------------
async def privacy(request: web.Request) -> web.Response:
    """Each privacy request's record: what it covered (counts) and where each target stands."""
    rows = await _db(request, queries.privacy_requests)
    if _wants_json(request):
        return _json({"requests": rows or []})
    if rows is None:
        body = '<p class="note">No privacy request has reached the warehouse yet.</p>'
        return _page(request, "Privacy requests", body, active="/privacy")

    def targets(row: dict[str, Any]) -> str:
        return ", ".join(f"{name}: {t.get('status')}" for name, t in sorted((row["targets"] or {}).items()))

    table = h.table(
        ["received", "request", "type", "channel", "reference", "status", "user ids", "devices", "targets",
         "completed"],
        [
            [
                r["received_at"], r["request_id"], r["type"], r["channel"], r["reference"], r["status"],
                r["user_ids"], r["devices"], targets(r), r["completed_at"],
            ]
            for r in rows
        ],
        css="privacy",
        row_css=["flag" if r["status"] == "failed" else "" for r in rows],
    )  # fmt: skip
    body = (
        '<p class="note">Deletions and suppressions, from the privacy API, <code>kseg privacy request</code> '
        "or Segment's delete webhook; each record is kept 24 months. A failed request is highlighted: "
        "<code>kseg privacy status ID</code> says why.</p>"
        f'<div id="privacy">{table}</div>'
    )
    return _page(request, "Privacy requests", body, active="/privacy")


# ---- ROAS report, metrics, health -----------------------------------------------------------------------
async def roas(request: web.Request) -> web.Response:
    from app.warehouse.html import render_html
    from app.warehouse.report import query

    by = request.query.get("by", "campaign")
    if by not in ("network", "campaign", "channel"):
        return _refuse(request, 400, "bad_by", "by: network, campaign or channel")
    report = await _db(request, lambda conn: query(conn, date.min, date.max, by))
    nonce = secrets.token_urlsafe(16)
    text = render_html(report).replace("<script>", f'<script nonce="{nonce}">')
    response = web.Response(text=text, content_type="text/html", charset="utf-8")
    # The report's own inline script and styles: its script runs by nonce only, nothing loads from elsewhere.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return response


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=render(request.app[CONSOLE].registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "favicon.svg")
    if name not in ("console.css", "favicon.svg"):
        raise web.HTTPNotFound()
    response = web.FileResponse(STATIC / name)
    response.headers["Cache-Control"] = "max-age=300"
    return response


async def _refresh_metrics(app: web.Application) -> AsyncIterator[None]:
    """Recompute the reconciliation gauges every few minutes (also on every page view)."""
    console = app[CONSOLE]

    async def loop() -> None:
        while True:
            with contextlib.suppress(Exception):
                await reconcile_rows(console)
            await asyncio.sleep(300)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(console: Console, *, refresh: bool = True) -> web.Application:
    """The console application; `refresh` starts the periodic reconciliation metrics."""
    app = web.Application(middlewares=[security], client_max_size=1024 * 1024)
    app[CONSOLE] = console
    ConsoleMetrics.on(console.registry)
    app.router.add_route("*", "/login", login)
    app.router.add_post("/logout", logout)
    for prefix in ("", "/api"):
        app.router.add_get(f"{prefix}/" if not prefix else f"{prefix}/overview", overview)
        app.router.add_get(f"{prefix}/trace", trace)
        app.router.add_get(f"{prefix}/dead-letters", dead_letters)
        app.router.add_get(f"{prefix}/dead-letters/{{id}}", dead_letter)
        app.router.add_post(f"{prefix}/dead-letters/replay", replay)
        app.router.add_route("*", f"{prefix}/studio", studio_page)
        app.router.add_get(f"{prefix}/reconciliation", reconciliation)
        app.router.add_get(f"{prefix}/privacy", privacy)
    app.router.add_get("/roas", roas)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", health)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", static)
    if refresh:
        app.cleanup_ctx.append(_refresh_metrics)
    return app


def serve(console: Console) -> None:
    """Run the console on KSEG_CONSOLE_HOST:KSEG_CONSOLE_PORT until SIGTERM/SIGINT."""
    s = console.settings
    log.info(
        "console on http://%s:%d (%d token(s))",
        s.kseg_console_host,
        s.kseg_console_port,
        len(s.console_tokens),
    )
    web.run_app(
        create_app(console), host=s.kseg_console_host, port=s.kseg_console_port, print=None, access_log=None
    )
