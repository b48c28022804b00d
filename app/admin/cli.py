"""`kseg topics plan|apply|migrate`: topics as code against the cluster KAFKA_BOOTSTRAP_SERVERS names."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from app.config import Settings

PLAN_HELP = "show how the cluster differs from topics/topics.yaml (exit 1 when it differs)"
APPLY_HELP = "create missing topics and fix configs; refuses partition changes of keyed topics"
MIGRATE_HELP = "copy every topic, changelogs included, into a new generation with N partitions"

EPILOG = """\
Exit codes: 0 the cluster matches (plan) or everything was applied (apply); 1 differences remain or
something was refused (the reason is printed); 2 Kafka could not be reached.
Full procedure, including scale-out with `migrate`: docs/operations.md.
"""


def _say(text: str) -> None:
    print(text, flush=True)


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from app.admin.cluster import plan

    changes = asyncio.run(plan(settings))
    _say(f"kseg topics plan: {settings.bootstrap}, KSEG_APP_ID={settings.kseg_app_id}")
    for change in changes:
        _say(change.line())
    _say(f"{len(changes)} difference(s)" if changes else "the cluster matches topics.yaml")
    return 1 if changes else 0


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    from app.admin.cluster import apply, plan

    changes = asyncio.run(plan(settings))
    _say(f"kseg topics apply: {settings.bootstrap}, KSEG_APP_ID={settings.kseg_app_id}")
    for change in changes:
        _say(change.line())
    problems = asyncio.run(apply(settings, changes)) if changes else []
    refused = [c for c in changes if c.action == "refuse"]
    for problem in problems:
        _say(f"  failed: {problem}")
    done = len(changes) - len(refused) - len(problems)
    _say(f"applied {done} change(s), {len(refused)} refused (marked !), {len(problems)} failed")
    return 1 if problems or refused else 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app.admin.migrate import MigrationRefused, migrate

    _say(
        f"kseg topics migrate: {settings.kseg_app_id} -> {args.to_app_id or '(next generation)'}, "
        f"{args.partitions} partitions. The workers of {settings.kseg_app_id} must be stopped."
    )
    try:
        target, copies = asyncio.run(migrate(settings, args.partitions, args.to_app_id, say=_say))
    except MigrationRefused as exc:
        _say(f"kseg topics migrate: refused: {exc}")
        return 1
    total = sum(c.written for c in copies)
    _say(
        f"\ncopied {total} record(s) into {len(copies)} topic(s) of {target}. Next:\n"
        f"  1. start the workers with KSEG_APP_ID={target} KSEG_TOPIC_PARTITIONS={args.partitions}\n"
        f"  2. restart the receivers with the same two settings (if not done before the migration)\n"
        f"  3. check `KSEG_APP_ID={target} KSEG_TOPIC_PARTITIONS={args.partitions} kseg topics plan`\n"
        f"  4. after a retention period, delete the {settings.kseg_app_id} topics"
    )
    return 0


def add_parser(sub: Any, with_kafka: Callable[[Callable[..., int], argparse.Namespace], int]) -> None:
    topics = sub.add_parser(
        "topics",
        help="plan, apply or migrate kseg's Kafka topics (topics as code)",
        description="kseg's topics are declared in topics/topics.yaml (partitions, replication, configs, "
        "which topics are keyed and co-partitioned). These commands compare, apply and migrate them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = topics.add_subparsers(dest="topics_command", required=True, metavar="{plan,apply,migrate}")
    migrate_description = (
        MIGRATE_HELP + ". Keys are re-partitioned with the producers' murmur2 partitioner, so each device's "
        "profile, dedupe marks and links land where the new partitioning looks for them. Stop the workers "
        "first; start them afterwards with the printed KSEG_APP_ID."
    )
    commands = (
        ("plan", PLAN_HELP, PLAN_HELP, cmd_plan),
        ("apply", APPLY_HELP, APPLY_HELP, cmd_apply),
        ("migrate", MIGRATE_HELP, migrate_description, cmd_migrate),
    )
    for name, help_text, description, command in commands:
        p = tsub.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=lambda a, command=command: with_kafka(_guarded(command), a))
    p.add_argument("--partitions", type=int, required=True, help="partition count of the new generation")
    p.add_argument("--to-app-id", help="app id of the new generation (default: KSEG_APP_ID with -gN+1)")


def _guarded(command: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
    """Exit 2 with the reason when Kafka cannot be reached (or TLS/SASL settings are wrong)."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return command(args, settings)
        except RuntimeError as exc:
            print(f"kseg topics: {exc}", file=sys.stderr)
            return 2

    return run
