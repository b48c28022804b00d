"""Tests for `kseg loadgen`: the postback generator, spike specs, the runner and the loopback guard.

The runner tests send real HTTP to the bare baseline receiver on 127.0.0.1 (in-process or as a
subprocess), at small rates for at most ~1 s each.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qsl

import orjson
import pytest
from aiohttp import web

from app.loadgen import cli as loadgen_cli
from app.loadgen.postbacks import DEFAULT_MIX, ZERO_IDFA, Postback, PostbackGenerator, normalise_mix
from app.loadgen.report import LoadReport, percentile
from app.loadgen.runner import build_url_prefix, run_load
from app.loadgen.spike import Schedule, SpikeSpec, SpikeSpecError, parse_spike

REPO = Path(__file__).resolve().parents[2]
BARE_RECEIVER = REPO / "bench" / "baselines" / "bare_receiver.py"

UPPER_UUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
LOWER_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
N = 20_000


def _load_bare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_bare_receiver", BARE_RECEIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bare = _load_bare()


@pytest.fixture(scope="module")
def sample() -> list[Postback]:
    return PostbackGenerator(seed=7).take(N)


def _params(postback: Postback) -> dict[str, str]:
    return dict(parse_qsl(postback.query, keep_blank_values=True))


# ------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------


def test_mix_proportions_within_tolerance(sample: list[Postback]) -> None:
    originals = [p for p in sample if not p.is_retry]
    counts = Counter(p.kind for p in originals)
    for kind, share in DEFAULT_MIX.items():
        assert abs(counts[kind] / len(originals) - share) < 0.02, (kind, counts)


def test_custom_mix_and_invalid_mix() -> None:
    kinds = {p.kind for p in PostbackGenerator(1, mix={"install": 1, "purchase": 1}).take(500)}
    assert kinds == {"install", "purchase"}
    with pytest.raises(ValueError, match="unknown postback kind"):
        normalise_mix({"installs": 1.0})
    with pytest.raises(ValueError):
        normalise_mix({"install": 0.0})
    with pytest.raises(ValueError):
        normalise_mix({"install": -1.0, "event": 2.0})


def test_deterministic_per_seed() -> None:
    assert PostbackGenerator(42).take(2000) == PostbackGenerator(42).take(2000)
    assert PostbackGenerator(42).take(50) != PostbackGenerator(43).take(50)


def test_zero_idfa_share(sample: list[Postback]) -> None:
    # One install per device: the share of devices whose IDFA is zeroed under ATT.
    installs = [_params(p) for p in sample if p.kind == "install" and not p.is_retry]
    idfas = [params["idfa"] for params in installs if "idfa" in params]
    assert len(idfas) > 2000
    assert abs(sum(v == ZERO_IDFA for v in idfas) / len(idfas) - 0.25) < 0.03


def test_retry_share_and_retries_are_exact_replays(sample: list[Postback]) -> None:
    retries = [p for p in sample if p.is_retry]
    assert 0.006 < len(retries) / len(sample) < 0.014
    seen: dict[str, Postback] = {}
    for p in sample:
        if p.is_retry:
            original = seen[p.query]  # the very same query string was sent before
            assert (original.kind, original.device) == (p.kind, p.device)
        else:
            assert p.query not in seen, "two distinct postbacks must never look like a retry"
            seen[p.query] = p


def test_events_only_for_installed_devices(sample: list[Postback]) -> None:
    installed: set[str] = set()
    repeats = Counter(p.device for p in sample)
    for p in sample:
        if p.kind in ("install", "reinstall"):
            installed.add(p.device)
        else:
            assert p.device in installed, p
    assert sum(1 for c in repeats.values() if c > 1) > 1000  # devices repeat


def test_macro_shapes(sample: list[Postback]) -> None:
    for p in sample[:3000]:
        params = _params(p)
        assert params["kochava_device_id"] == p.device
        assert re.fullmatch(r"KI[0-9A-F]+", p.device)
        assert params["timestamp"].isdigit()
        assert params["attribution_type"] in ("install", "reengagement")
        for key in (
            "network_name",
            "campaign_name",
            "segment",
            "tracker",
            "site_id",
            "sub_site_id",
            "creative_id",
            "country",
            "device_ua",
        ):
            assert params[key], key
        if "idfa" in params:
            assert UPPER_UUID.match(params["idfa"]) and UPPER_UUID.match(params["idfv"])
        else:
            assert LOWER_UUID.match(params["adid"])
            assert re.fullmatch(r"[0-9a-f]{16}", params["android_id"])
        if p.kind in ("install", "reinstall"):
            assert params["event_name"] == "_install"
        if p.kind == "reinstall":
            assert LOWER_UUID.match(params["reprocess_for"]) and params["attribution_type"] == "reengagement"
        if p.kind == "purchase":
            assert params["event_name"] == "Purchase"
            assert float(params["event_value"]) > 0 and params["currency"] and params["order_id"]
        if p.kind == "reengagement":
            assert params["attribution_type"] == "reengagement" and params["click_id"]
    assert any("user_id" in _params(p) for p in sample if p.kind in ("event", "purchase"))


def test_bounded_population_limits_live_devices() -> None:
    gen = PostbackGenerator(3, devices=10)
    postbacks = gen.take(2000)
    assert len(gen._devices) == 10
    # Events keep landing on the live population; installs churn it.
    assert len({p.device for p in postbacks if p.kind == "event"}) > 10


# ------------------------------------------------------------------------------------------------
# Spike specs and the schedule
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10x@30s+30s", SpikeSpec(10.0, 30.0, 30.0)),
        ("2.5x@500ms+1m", SpikeSpec(2.5, 0.5, 60.0)),
        ("3x@5+5", SpikeSpec(3.0, 5.0, 5.0)),
        (" 4X @ 0s + 2s ", SpikeSpec(4.0, 0.0, 2.0)),
    ],
)
def test_parse_spike_valid(text: str, expected: SpikeSpec) -> None:
    assert parse_spike(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10",
        "10@30s+30s",
        "10x30s+30s",
        "x@1s+1s",
        "0x@1s+1s",
        "10x@30s+0s",
        "10x@-1s+1s",
        "10x@30h+1s",
        "abc",
    ],
)
def test_parse_spike_invalid(text: str) -> None:
    with pytest.raises(SpikeSpecError, match="spike spec"):
        parse_spike(text)


def test_schedule_with_spike() -> None:
    schedule = Schedule(100.0, parse_spike("10x@1s+1s"))
    assert schedule.rate_at(0.5) == 100 and schedule.rate_at(1.5) == 1000 and schedule.rate_at(2.0) == 100
    assert schedule.cumulative(3.0) == pytest.approx(100 + 1000 + 100)
    for k in (0, 1, 99, 100, 101, 1099, 1100, 1150):
        assert schedule.cumulative(schedule.time_of(k)) == pytest.approx(k)
    assert schedule.expected_requests(3.0) == 1200
    assert Schedule(3.0).expected_requests(1.0) == 3
    with pytest.raises(ValueError):
        Schedule(0.0)


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def test_report_counts_and_rendering() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0], 100) == 2.0
    report = LoadReport(target_rate=10, duration=1, concurrency=2, sent=4, send_seconds=1.0)
    report.record_response(200, 0.001)
    report.record_response(503, 0.002)
    report.record_response(429, 0.003)
    report.record_error("timeout")
    assert report.completed == report.sent == 4
    data = report.to_dict()
    assert data["other_statuses"] == {"429": 1} and data["errors"] == {"timeout": 1}
    assert data["latency_ms"]["max"] == pytest.approx(3.0)
    orjson.dumps(data)
    assert "accepted (200)" in report.format_table()
    assert "sent=4" in report.progress_line(1.0, 0)


# ------------------------------------------------------------------------------------------------
# Runner against the bare baseline receiver
# ------------------------------------------------------------------------------------------------


@pytest.fixture
async def bare_server() -> AsyncIterator[tuple[str, web.Application]]:
    app = bare.make_app(frozenset({"dev"}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}{bare.ROUTE}", app
    finally:
        await runner.cleanup()


def _check_invariant(report: LoadReport) -> None:
    assert report.sent == (
        report.accepted + report.rejected_503 + sum(report.other_statuses.values()) + report.error_count
    )


async def test_run_load_against_bare_receiver(bare_server: tuple[str, web.Application]) -> None:
    url, app = bare_server
    accepted: list[Postback] = []
    progress = io.StringIO()
    report = await run_load(
        url,
        "dev",
        rate=100,
        duration=1.0,
        concurrency=16,
        generator=PostbackGenerator(5),
        on_accepted=accepted.append,
        progress=True,
        progress_stream=progress,
    )
    _check_invariant(report)
    assert report.sent + report.client_saturated == 100
    assert report.accepted == report.sent == len(accepted) == app[bare.STATS]["records"]
    assert report.error_count == 0
    lat = report.latency_summary()
    assert all(lat[k] is not None for k in ("p50", "p95", "p99", "max"))
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]  # type: ignore[operator]
    assert 0.9 <= report.send_seconds <= 1.0 and report.elapsed_seconds < 3.0
    assert "[loadgen]" in progress.getvalue()
    assert accepted[0].kind == "install"


async def test_run_load_bad_token_spike_and_max_requests(bare_server: tuple[str, web.Application]) -> None:
    url, _ = bare_server
    report = await run_load(
        url, "wrong", rate=50, duration=0.5, concurrency=8, generator=PostbackGenerator(1)
    )
    _check_invariant(report)
    assert report.accepted == 0 and report.other_statuses[401] == report.sent > 0

    spike = parse_spike("4x@500ms+250ms")
    report = await run_load(
        url, "dev", rate=50, duration=1.0, concurrency=32, spike=spike, generator=PostbackGenerator(2)
    )
    _check_invariant(report)
    assert report.sent + report.client_saturated == Schedule(50, spike).expected_requests(1.0) == 88

    started = time.monotonic()
    report = await run_load(
        url, "dev", rate=200, duration=5.0, concurrency=8, max_requests=7, generator=PostbackGenerator(3)
    )
    assert report.sent == 7 and report.accepted == 7 and time.monotonic() - started < 2.0


async def test_run_load_counts_connection_errors() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = await run_load(
        f"http://127.0.0.1:{port}/v1/kochava/postbacks",
        "dev",
        rate=20,
        duration=0.3,
        concurrency=4,
        generator=PostbackGenerator(0),
        request_timeout=1.0,
    )
    _check_invariant(report)
    assert report.sent > 0 and report.errors["connection"] == report.sent
    assert report.latency_summary()["p50"] is None


async def test_run_load_rejects_bad_arguments() -> None:
    gen = PostbackGenerator(0)
    url = "http://127.0.0.1:9/x"
    with pytest.raises(SpikeSpecError, match="after the"):
        await run_load(
            url, "dev", rate=10, duration=5, concurrency=1, spike=parse_spike("2x@10s+1s"), generator=gen
        )
    with pytest.raises(ValueError):
        await run_load(url, "dev", rate=0, duration=1, concurrency=1, generator=gen)
    with pytest.raises(ValueError):
        await run_load(url, "dev", rate=10, duration=float("inf"), concurrency=1, generator=gen)


def test_url_prefix() -> None:
    assert build_url_prefix("http://h/p", "dev") == "http://h/p?token=dev&"
    assert build_url_prefix("http://h/p?a=1", "t k") == "http://h/p?a=1&token=t%20k&"
    assert build_url_prefix("http://h/p", None) == "http://h/p?"


# ------------------------------------------------------------------------------------------------
# CLI and loopback guard
# ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kseg")
    loadgen_cli.build_parser(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://127.5.6.7/x",
        "http://localhost:1/",
        "http://[::1]:8080/v1/kochava/postbacks",
        "https://LOCALHOST/x",
    ],
)
def test_loopback_guard_accepts(url: str) -> None:
    loadgen_cli.check_target(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "http://10.0.0.1:8080/",
        "http://0.0.0.0:8080/",
        "http://127.0.0.1.example.com/",
        "http://[::2]/",
    ],
)
def test_loopback_guard_refuses(url: str) -> None:
    with pytest.raises(loadgen_cli.RemoteTargetError, match="--allow-remote"):
        loadgen_cli.check_target(url)
    loadgen_cli.check_target(url, allow_remote=True)  # no network involved


def test_cli_refuses_remote_without_sending(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["loadgen", "--url", "http://example.com/v1/kochava/postbacks"])
    assert args.func is loadgen_cli.cmd_loadgen
    assert args.func(args) == 2
    assert "only loopback targets" in capsys.readouterr().err


def test_cli_defaults_and_validation(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["loadgen"])
    assert (args.url, args.token, args.rate, args.duration, args.concurrency) == (
        "http://127.0.0.1:8080/v1/kochava/postbacks",
        "dev",
        200.0,
        10.0,
        64,
    )
    assert args.spike is None and args.max_requests is None and not args.json
    assert _parser().parse_args(["loadgen", "--spike", "10x@30s+30s"]).spike == SpikeSpec(10, 30, 30)
    for bad in (["--spike", "10x"], ["--rate", "0"], ["--concurrency", "0"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(["loadgen", *bad])
    assert "invalid spike spec" in capsys.readouterr().err
    args = _parser().parse_args(["loadgen", "--duration", "5", "--spike", "2x@10s+1s"])
    assert loadgen_cli.cmd_loadgen(args) == 2


@pytest.fixture
def bare_subprocess() -> Iterator[str]:
    """The baseline run as a script, the way the bench uses it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(BARE_RECEIVER), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("bare receiver did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1/kochava/postbacks"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_cli_json_run_against_script_receiver(
    bare_subprocess: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(
        ["loadgen", "--url", bare_subprocess, "--rate", "40", "--duration", "0.5", "--seed", "9", "--json"]
    )
    assert args.func(args) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["sent"] == data["accepted"] == 20 - data["client_saturated"]
    assert data["latency_ms"]["p99"] is not None


def test_no_event_loop_leak() -> None:
    # run_load must leave no tasks behind. asyncio.run cancels leftovers silently, so they are looked
    # for inside the loop, once run_load has returned (before the server's own cleanup).
    async def tiny() -> tuple[LoadReport, list[asyncio.Task[object]]]:
        app = bare.make_app()
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            before = asyncio.all_tasks()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}{bare.ROUTE}"
            report = await run_load(
                url, "dev", rate=20, duration=0.2, concurrency=2, generator=PostbackGenerator()
            )
            await asyncio.sleep(0)  # let tasks that finished with run_load be marked done
            leftovers = [t for t in asyncio.all_tasks() - before if not t.done()]
            return report, leftovers
        finally:
            await runner.cleanup()

    report, leftovers = asyncio.run(tiny())
    assert not leftovers, leftovers
    _check_invariant(report)
