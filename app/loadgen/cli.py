"""`kseg loadgen`: drive the receiver with realistic postbacks and print what happened.

The main CLI calls `build_parser(subparsers)` and dispatches `args.func(args)`. A loopback guard
refuses remote targets unless `--allow-remote` is given, so a load test cannot hit a shared or
production endpoint by a typo.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.loadgen.postbacks import PostbackGenerator
from app.loadgen.runner import run_load
from app.loadgen.spike import SpikeSpec, SpikeSpecError, parse_spike

DEFAULT_URL = "http://127.0.0.1:8080/v1/kochava/postbacks"
MAX_DURATION_S = 3600.0  # every run stops by itself; an hour is already far past any bench


class RemoteTargetError(ValueError):
    """The target URL is not on this machine and `--allow-remote` was not given."""


def is_loopback_host(host: str | None) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_target(url: str, *, allow_remote: bool = False) -> None:
    """Raise with a clear message unless `url` is an http(s) URL on a loopback host (or remote is allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteTargetError(f"--url must be an http(s) URL with a host, got {url!r}")
    if not allow_remote and not is_loopback_host(parts.hostname):
        raise RemoteTargetError(
            f"refusing to send load to {parts.hostname!r}: only loopback targets "
            "(127.0.0.0/8, localhost, ::1) are allowed; "
            "pass --allow-remote if you really mean to load a remote host"
        )


def _spike_arg(text: str) -> SpikeSpec:
    try:
        return parse_spike(text)
    except SpikeSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `loadgen` subcommand to the main CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "loadgen",
        help="send realistic Kochava postbacks to a receiver at a target rate",
        description="Open-loop load generator for the postback receiver (loopback targets only by default).",
    )
    add = parser.add_argument
    add("--url", default=DEFAULT_URL, help=f"receiver postback URL (default {DEFAULT_URL})")
    add("--token", default="dev", help="postback token, sent as ?token= (default dev)")
    add("--rate", type=_positive_float, default=200.0, help="requests per second (default 200)")
    add("--duration", type=_positive_float, default=10.0, help="seconds to send (default 10)")
    add("--concurrency", type=_positive_int, default=64, help="max in-flight requests (default 64)")
    add(
        "--spike",
        type=_spike_arg,
        default=None,
        help="rate spike, e.g. 10x@30s+30s = 10x the rate from t=30 s for 30 s",
    )
    add("--max-requests", type=_positive_int, default=None, help="stop after this many sent")
    add("--seed", type=int, default=0, help="generator seed (default 0)")
    add("--devices", type=_positive_int, default=5000, help="device population (default 5000)")
    add("--timeout", type=_positive_float, default=10.0, help="per-request timeout, s (default 10)")
    add("--progress", action="store_true", help="print a progress line every second on stderr")
    add("--json", action="store_true", help="print the report as JSON")
    add("--allow-remote", action="store_true", help="allow a non-loopback target host")
    parser.set_defaults(func=cmd_loadgen)
    return parser


def cmd_loadgen(args: argparse.Namespace) -> int:
    """Run one load test. Exit 0 when it ran, 1 when no request got any HTTP answer, 2 on bad input."""
    try:
        check_target(args.url, allow_remote=args.allow_remote)
        if args.duration > MAX_DURATION_S:
            raise ValueError(f"--duration is capped at {MAX_DURATION_S:g} s, got {args.duration:g}")
        if args.spike is not None and args.spike.start >= args.duration:
            raise SpikeSpecError(
                f"spike {args.spike} starts at {args.spike.start:g} s, after the {args.duration:g} s run ends"
            )
    except ValueError as exc:
        print(f"kseg loadgen: error: {exc}", file=sys.stderr)
        return 2
    # Event times start in the recent past (the generator advances ~20 events per second of event
    # time), so a long run does not produce timestamps in the future.
    generator = PostbackGenerator(args.seed, devices=args.devices, start_ts=int(time.time()) - 6 * 3600)
    report = asyncio.run(
        run_load(
            args.url,
            args.token,
            rate=args.rate,
            duration=args.duration,
            concurrency=args.concurrency,
            spike=args.spike,
            max_requests=args.max_requests,
            generator=generator,
            request_timeout=args.timeout,
            progress=args.progress,
        )
    )
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(report.format_table())
    answered = report.sent - report.error_count
    return 0 if answered > 0 else 1
