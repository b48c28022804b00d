"""`kseg console`: the console's root: builds the settings and hands the console the parts it runs
(`kseg dlq replay`'s replay, the trace timeline, the profile versions, consumer lag)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from typing import Any

from app.config import Settings

log = logging.getLogger(__name__)

HELP = """\
The web console: overview, trace, dead letters (replay: operator), mapping studio, reconciliation,
privacy requests and the ROAS report, on KSEG_CONSOLE_HOST:KSEG_CONSOLE_PORT (127.0.0.1:6070). Log in
with a token of KSEG_CONSOLE_TOKENS (`viewer=T1,operator=T2`); the JSON endpoints under /api take it as a
Bearer token.
"""


def build(settings: Settings) -> Any:
    """The `Console` of these settings."""
    from app.console import studio
    from app.console.auth import Auth
    from app.console.server import Console
    from app.dlq.cli import replay
    from app.kafka import group_lag
    from app.mapping.registry import local_profiles
    from app.pipeline.registry import read_registry
    from app.records import DeadLetter
    from app.sections import reveal
    from app.topics import KOCHAVA_OUTBOX, OUTBOX, RAW, WAREHOUSE
    from app.trace.timeline import timeline

    secret = reveal(settings.kseg_console_secret).encode() or secrets.token_bytes(32)

    async def do_replay(letters: list[DeadLetter]) -> tuple[int, int]:
        return await replay(settings, letters)

    async def versions() -> list[studio.Version]:
        try:
            state = await asyncio.wait_for(read_registry(settings), 10)
        except Exception as exc:  # the broker down: the studio still runs the local profile files
            log.warning("mapping registry unreadable (%s); the studio offers the local profiles only", exc)
            return studio.local_versions(settings)
        return studio.versions_of(state, local_profiles(settings.kseg_mapping_dir))

    async def lag() -> list[dict[str, Any]]:
        wanted = [
            (settings.kseg_app_id, RAW),
            # The sinks' own groups, wherever they run (a worker or `kseg sinks`).
            (settings.sink_group("segment"), OUTBOX),
            (settings.sink_group("kochava"), KOCHAVA_OUTBOX),
            (settings.warehouse_group, WAREHOUSE),
        ]

        async def one(group: str, topic: str) -> dict[str, Any]:
            try:
                value: int | None = await asyncio.wait_for(group_lag(settings, group, topic), 10)
            except Exception:  # the broker down: the page says unknown rather than failing
                value = None
            return {"group": group, "topic": topic, "lag": value}

        return list(await asyncio.gather(*(one(g, settings.topic(t)) for g, t in wanted)))

    return Console(
        settings=settings,
        auth=Auth(settings.console_tokens, secret),
        replay=do_replay,
        timeline=timeline,
        versions=versions,
        lag=lag,
    )


def cmd_console(args: argparse.Namespace, settings: Any) -> int:
    s: Settings = settings()
    logging.basicConfig(
        level=getattr(logging, s.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not s.kafka_bootstrap_servers:
        raise SystemExit(
            "kseg console: KAFKA_BOOTSTRAP_SERVERS is not set (dead letters and lag read Kafka). "
            "Use `kseg run`, which starts the console, or point it at your cluster."
        )
    if not s.console_tokens:
        print("kseg console: KSEG_CONSOLE_TOKENS is not set: nobody can log in", file=sys.stderr)
    from app.console.server import serve

    serve(build(s))
    return 0


def add_parser(subparsers: Any, settings: Any) -> None:
    """Add `console`; `settings()` supplies validated Settings."""
    p = subparsers.add_parser(
        "console",
        help="run the web console (trace, dead letters, mapping studio, reconciliation, privacy requests)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda a: cmd_console(a, settings))
