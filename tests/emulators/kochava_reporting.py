"""A strict local emulator of Kochava's Reporting API v1.4 (docs/reference.md#kochava-reporting-api),
for kseg's digest tests.

Why it exists: the digest client must be tested over real HTTP (a token flow that takes time, error
statuses, duplicate requests, 5xx, timeouts, a report that never finishes) without a Kochava account.

What it enforces, as the reference documents it:

- every call is a **POST with a JSON body** carrying `api_key` and `app_guid`; any other key/guid pair
  answers `{"status": "Error", "error": "App does not exist."}` (HTTP 200, as Kochava answers errors in
  the body);
- `time_start` / `time_end` are **epoch seconds as strings on a full hour**, start before end, at most
  100 days apart; `traffic`, `traffic_grouping`, `time_series`, `time_zone`, `delivery_method` and
  `delivery_format` must hold documented values;
- a report goes `queued` → `running` → `completed` (timed by `queue_seconds` / `run_seconds`), then
  `progress` holds the download URL in `report`, served by `GET /_reports/<token>`;
- re-sending a request identical to one still queued or running returns **no token**, only the existing
  request's status;
- `reportcolumns` answers the column names a summary report would have (after `rename`).

Undocumented shapes are kseg's assumptions (docs/reference.md#kochava-reporting-api): one JSON object
per day x grouping, every value a string, spend split into `click_spend`, `impression_spend`, `install_spend`.
`rename={"installs": "install_count"}` makes the emulator emit other names, to test the column map.

Fault modes: `fail_next(n, status=503)` (5xx), `slow_next(n, delay)` (the client times out),
`stick_next(n)` (the next report stays `running` forever), `error_next(n, message)` (the report ends in
`Error`). Data: `set_rows(rows)` replaces the rows of their days (a restatement).

Use in-process::

    async with KochavaReportingEmulator(api_key="k", app_guid="g") as emu:
        emu.set_rows([{"date": "2026-11-30", "network": "Meta", "campaign": "spring", "installs": "10", ...}])
        ...  # POST to f"{emu.url}/summary"

or as a process (prints ``listening on http://127.0.0.1:PORT/v1.4``)::

    python -m tests.emulators.kochava_reporting --api-key k --app-guid g --rows rows.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import orjson
from aiohttp import web

from tests.emulators.common import LoopbackServer, serve_until_stopped

PREFIX = "/v1.4"
APP_DOES_NOT_EXIST = "App does not exist."
MAX_SPAN_SECONDS = 100 * 86400
SUMMARY_TRAFFIC = frozenset(
    {"click", "impression", "install", "event", "reengagement", "trafficverif", "network_spend_restated"}
)
DETAIL_TRAFFIC = frozenset(
    {
        "click",
        "impression",
        "install",
        "event",
        "reengagement",
        "influencer_imp",
        "influencer_click",
        "fractional",
        "cost_restated",
    }
)
GROUPINGS = frozenset({"network", "campaign", "country", "tracker", "site", "segment", "creative"})
TIME_SERIES = frozenset({"1", "24", "168", "720"})
FORMATS = frozenset({"json", "csv"})
REPORT_KINDS = frozenset({"summary", "detail", "event", "install", "click", "impression"})

#: Columns each `traffic` value adds to a summary row (kseg's assumed names).
TRAFFIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "click": ("clicks", "click_spend"),
    "impression": ("impressions", "impression_spend"),
    "install": ("installs", "install_spend"),
    "event": ("events", "revenue_events", "revenue"),
    "reengagement": ("reengagements",),
}
DIMENSION_COLUMNS: dict[str, tuple[str, ...]] = {
    "network": ("network", "network_id"),
    "campaign": ("campaign", "campaign_id"),
}
METRICS = tuple(c for cols in TRAFFIC_COLUMNS.values() for c in cols)


@dataclass
class Report:
    token: str
    signature: bytes
    body: dict[str, Any]
    created: float
    stuck: bool = False
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def status(self, now: float, queue_seconds: float, run_seconds: float) -> str:
        if now - self.created < queue_seconds:
            return "queued"
        if self.stuck or now - self.created < queue_seconds + run_seconds:
            return "running"
        return "Error" if self.error else "completed"


@dataclass
class Fault:
    kind: str  # "status" | "slow" | "stick" | "error"
    remaining: int
    status: int = 503
    delay: float = 0.0
    retry_after: float | None = None
    message: str = ""


class _Refuse(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KochavaReportingEmulator(LoopbackServer):
    """In-process Reporting API; `url` is the v1.4 base (`…/v1.4`) the client is pointed at."""

    def __init__(
        self,
        api_key: str = "test-api-key",
        app_guid: str = "kotest-app-guid",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        queue_seconds: float = 0.05,
        run_seconds: float = 0.1,
        rename: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.clock = clock  # a test can pass its own to walk a report through its states without sleeping
        self.app_guid = app_guid
        self.host = host
        self.port = port
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.rename = dict(rename or {})
        self.faults: list[Fault] = []
        self._rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.reset()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PREFIX}"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(f"{PREFIX}/summary", self._handle_summary)
        app.router.add_post(f"{PREFIX}/detail", self._handle_detail)
        app.router.add_post(f"{PREFIX}/progress", self._handle_progress)
        app.router.add_post(f"{PREFIX}/reportcolumns", self._handle_columns)
        app.router.add_post(f"{PREFIX}/timezones", self._handle_timezones)
        app.router.add_post(f"{PREFIX}/getapps", self._handle_getapps)
        app.router.add_get("/_reports/{token}", self._handle_download)
        app.router.add_get("/_emulator/stats", self._handle_stats)
        app.router.add_route("*", f"{PREFIX}/{{tail:.*}}", self._handle_unknown)
        return app

    # ---- data and faults ---------------------------------------------------------------------
    def reset(self) -> None:
        """Forget reports and counters (rows and faults are kept)."""
        self.reports: dict[str, Report] = {}
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.downloads = 0

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        """Add or replace (date, network, campaign) rows: replacing one is a restatement."""
        for row in rows:
            key = (str(row["date"]), str(row["network"]), str(row["campaign"]))
            self._rows[key] = {k: (None if v is None else str(v)) for k, v in row.items()}

    def fail_next(self, n: int = 1, *, status: int = 503, retry_after: float | None = None) -> None:
        """The next `n` calls answer `status` (5xx, or 429 with an optional `Retry-After`)."""
        self.faults.append(Fault("status", n, status=status, retry_after=retry_after))

    def slow_next(self, n: int = 1, *, delay: float) -> None:
        self.faults.append(Fault("slow", n, delay=delay))

    def stick_next(self, n: int = 1) -> None:
        """The next `n` reports stay `running` forever."""
        self.faults.append(Fault("stick", n))

    def error_next(self, n: int = 1, *, message: str = "Report generation failed.") -> None:
        """The next `n` reports end in status `Error` with `message`."""
        self.faults.append(Fault("error", n, message=message))

    def _take(self, kinds: set[str]) -> Fault | None:
        for fault in self.faults:
            if fault.kind in kinds and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "errors": dict(self.errors),
            "reports": len(self.reports),
            "downloads": self.downloads,
        }

    # ---- request plumbing --------------------------------------------------------------------
    async def _body(self, request: web.Request, endpoint: str) -> dict[str, Any]:
        """Count the call, apply transport faults, parse and authenticate the JSON body."""
        self.calls[endpoint] += 1
        fault = self._take({"slow"})
        if fault is not None:
            await asyncio.sleep(fault.delay)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Refuse("The request body must be JSON.") from None
        if not isinstance(body, dict):
            raise _Refuse("The request body must be a JSON object.")
        if body.get("api_key") != self.api_key or body.get("app_guid") != self.app_guid:
            raise _Refuse(APP_DOES_NOT_EXIST)
        return body

    def _error(self, message: str) -> web.Response:
        self.errors[message] += 1
        return web.json_response({"status": "Error", "error": message})

    async def _guarded(self, request: web.Request, endpoint: str, handler: Any) -> web.StreamResponse:
        failure = self._take({"status"})
        if failure is not None:
            self.calls[endpoint] += 1
            headers = {} if failure.retry_after is None else {"Retry-After": f"{failure.retry_after:g}"}
            return web.json_response({"message": "emulated failure"}, status=failure.status, headers=headers)
        try:
            body = await self._body(request, endpoint)
            result: web.StreamResponse = handler(body)
            return result
        except _Refuse as refuse:
            return self._error(refuse.message)

    # ---- endpoints ---------------------------------------------------------------------------
    async def _handle_summary(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "summary", lambda body: self._request_report(body, "summary"))

    async def _handle_detail(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "detail", lambda body: self._request_report(body, "detail"))

    async def _handle_progress(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "progress", self._progress)

    async def _handle_columns(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "reportcolumns", self._columns)

    async def _handle_timezones(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(
            request, "timezones", lambda body: web.json_response(sorted(available_timezones()))
        )

    async def _handle_getapps(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(
            request,
            "getapps",
            lambda body: web.json_response([{"guid": self.app_guid, "app_name": "kseg emulated app"}]),
        )

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.json_response({"status": "Error", "error": "Every call is a POST."}, status=405)
        return web.json_response({"status": "Error", "error": "Unknown endpoint."}, status=404)

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        report = self.reports.get(request.match_info["token"])
        now = self.clock()
        if report is None or report.status(now, self.queue_seconds, self.run_seconds) != "completed":
            return web.Response(status=404, text="NoSuchKey")
        self.downloads += 1
        if report.body.get("delivery_format") == "csv":
            return web.Response(text=_csv(report.rows), content_type="text/csv")
        return web.Response(body=orjson.dumps(report.rows), content_type="application/json")

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    # ---- rules -------------------------------------------------------------------------------
    def _request_report(self, body: dict[str, Any], kind: str) -> web.Response:
        self._validate(body, kind)
        signature = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        now = self.clock()
        for existing in self.reports.values():
            status = existing.status(now, self.queue_seconds, self.run_seconds)
            if existing.signature == signature and status in ("queued", "running"):
                return web.json_response({"status": status, "progress": _progress_pct(status)})
        token = uuid.uuid4().hex
        report = Report(token, signature, body, now, rows=self._render(body) if kind == "summary" else [])
        special = self._take({"stick", "error"})
        if special is not None and special.kind == "stick":
            report.stuck = True
        elif special is not None:
            report.error = special.message
        self.reports[token] = report
        return web.json_response({"status": "queued", "report_token": token})

    def _progress(self, body: dict[str, Any]) -> web.Response:
        token = body.get("token")
        if not isinstance(token, str) or token not in self.reports:
            raise _Refuse("Invalid token.")
        report = self.reports[token]
        status = report.status(self.clock(), self.queue_seconds, self.run_seconds)
        answer: dict[str, Any] = {"status": status, "progress": _progress_pct(status), "report": ""}
        if status == "completed":
            answer["report"] = f"http://{self.host}:{self.port}/_reports/{token}"
        elif status == "Error":
            answer["error"] = report.error
        return web.json_response(answer)

    def _columns(self, body: dict[str, Any]) -> web.Response:
        report = body.get("report")
        if not isinstance(report, str) or report not in REPORT_KINDS:
            raise _Refuse(f"report must be one of {sorted(REPORT_KINDS)}.")
        names = ["date", "network", "network_id", "campaign", "campaign_id", *METRICS]
        return web.json_response([self.rename.get(n, n) for n in names])

    def _validate(self, body: dict[str, Any], kind: str) -> None:
        start, end = body.get("time_start"), body.get("time_end")
        for name, value in (("time_start", start), ("time_end", end)):
            if not isinstance(value, str) or not value.isdigit():
                raise _Refuse(f"{name} must be epoch seconds as a string.")
            if int(value) % 3600:
                raise _Refuse(f"{name} must be on a full hour.")
        assert isinstance(start, str) and isinstance(end, str)
        if int(end) <= int(start):
            raise _Refuse("time_end must be after time_start.")
        if int(end) - int(start) > MAX_SPAN_SECONDS:
            raise _Refuse("The report span may not exceed 100 days.")
        allowed = SUMMARY_TRAFFIC if kind == "summary" else DETAIL_TRAFFIC
        traffic = body.get("traffic")
        if not isinstance(traffic, list) or not traffic or not all(t in allowed for t in traffic):
            raise _Refuse(f"traffic must be a non-empty list of {sorted(allowed)}.")
        grouping = body.get("traffic_grouping", [])
        if not isinstance(grouping, list) or not all(g in GROUPINGS for g in grouping):
            raise _Refuse(f"traffic_grouping must be a list of {sorted(GROUPINGS)}.")
        if body.get("time_series", "24") not in TIME_SERIES:
            raise _Refuse(f"time_series must be one of {sorted(TIME_SERIES)} (a string).")
        zone = body.get("time_zone", "UTC")
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise _Refuse(f"Invalid time_zone {zone!r}; see the timezones endpoint.") from None
        if body.get("delivery_format", "json") not in FORMATS:
            raise _Refuse("delivery_format must be json or csv.")
        method = body.get("delivery_method", ["S3link"])
        if not isinstance(method, list) or not method or method[0] not in ("S3link", "S3bucket"):
            raise _Refuse('delivery_method must be ["S3link"] or ["S3bucket", region, bucket, key, secret].')

    def _render(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The report's rows: the stored rows of the days in the window, grouped and columned as asked."""
        zone = ZoneInfo(str(body.get("time_zone", "UTC")))
        start = datetime.fromtimestamp(int(body["time_start"]), UTC).astimezone(zone)
        end = datetime.fromtimestamp(int(body["time_end"]), UTC).astimezone(zone)
        days = set()
        day: date = start.date()
        while datetime.combine(day, datetime.min.time(), zone) < end:
            days.add(day.isoformat())
            day += timedelta(days=1)
        grouping = [g for g in body.get("traffic_grouping", []) if g in DIMENSION_COLUMNS]
        metrics = [c for t in body["traffic"] for c in TRAFFIC_COLUMNS.get(t, ())]
        groups: dict[tuple[str, ...], dict[str, Any]] = {}
        for (day_s, _network, _campaign), row in sorted(self._rows.items()):
            if day_s not in days:
                continue
            dims = ["date", *(c for g in grouping for c in DIMENSION_COLUMNS[g])]
            key = tuple(str(row.get(c)) for c in dims)
            out = groups.setdefault(key, {c: row.get(c) for c in dims} | dict.fromkeys(metrics, 0.0))
            for metric in metrics:
                out[metric] += float(row.get(metric) or 0)
        rendered = []
        for out in groups.values():
            for metric in metrics:
                value = out[metric]
                out[metric] = _number_text(value)
            rendered.append({self.rename.get(k, k): v for k, v in out.items()})
        return rendered


def _number_text(value: float) -> str:
    """Kochava sends numbers as strings: `10`, `12.5`, `0`."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _progress_pct(status: str) -> str:
    return {"queued": "0", "running": "50", "completed": "100"}.get(status, "0")


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


async def _serve(args: argparse.Namespace) -> None:
    emu = KochavaReportingEmulator(
        args.api_key,
        args.app_guid,
        host=args.host,
        port=args.port,
        queue_seconds=args.queue_seconds,
        run_seconds=args.run_seconds,
    )
    if args.rows:
        emu.set_rows(orjson.loads(Path(args.rows).read_bytes()))
    await serve_until_stopped(emu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.kochava_reporting",
        description="Strict local Kochava Reporting API v1.4 (summary, progress, reportcolumns, download).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--api-key", default="test-api-key")
    parser.add_argument("--app-guid", default="kotest-app-guid")
    parser.add_argument("--rows", help="JSON file: a list of summary rows (date, network, campaign, ...)")
    parser.add_argument("--queue-seconds", type=float, default=1.0)
    parser.add_argument("--run-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
