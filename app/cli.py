"""The `kseg` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic import ValidationError

DESCRIPTION = """\
kseg moves Kochava attribution postbacks into Segment in real time.

Kochava postbacks arrive over HTTP at the receiver, which makes each one durable in Kafka
before answering 200. The worker maps them to Segment's spec with a versioned mapping
profile, resolves identity, and delivers identify/track/alias calls to Segment's batch API,
plus one flat row per event to the warehouse topic.

Start here:  kseg run      (everything on one machine: embedded broker and PostgreSQL, receiver,
                          worker, sinks, warehouse loader and console; Ctrl-C stops all)
Settings come from environment variables or a .env file; see README.md.
"""

EPILOG = """\
examples:
  kseg run
  kseg mapping try 'event_name=Purchase&kochava_device_id=KI1&event_value=9.99&currency=USD'
  kseg mapping check my-profile.yaml
  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 kseg dlq list --reason invalid_revenue --since 2h
  kseg loadgen --rate 500 --duration 30 --spike 10x@10s+10s
  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 kseg topics plan
  kseg digest run --date 2026-11-30
"""


def _settings() -> Any:
    from app.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"kseg: invalid settings: {problems}") from exc


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from app.supervisor import run

    settings = _settings()
    # The terminal shows kseg run's own screen; the children's logs (at LOG_LEVEL) go to files.
    _logging("warning" if settings.log_level == "info" else settings.log_level)
    return run(settings)


def cmd_receiver(args: argparse.Namespace) -> int:
    from app.receiver.server import serve

    settings = _settings()
    _logging(settings.log_level)
    serve(settings)
    return 0


def _kafka_process_settings(command: str) -> Any:
    """Settings of a process that needs a Kafka cluster (`kseg worker`, `kseg sinks`), logging set up."""
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        raise SystemExit(
            f"kseg {command}: KAFKA_BOOTSTRAP_SERVERS is not set. Point it at your Kafka cluster, "
            "or use `kseg run`, which starts an embedded broker."
        )
    _logging(settings.log_level)
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    from app.worker.main import run_worker

    run_worker(_kafka_process_settings("worker"))
    return 0


def cmd_sinks(args: argparse.Namespace) -> int:
    from app.worker.main import run_sinks

    run_sinks(_kafka_process_settings("sinks"))
    return 0


def cmd_mapping_check(args: argparse.Namespace) -> int:
    from app.mapping.cli import cmd_check

    return cmd_check(args.file)


def cmd_mapping_try(args: argparse.Namespace) -> int:
    from app.pipeline.preview import cmd_try

    text = args.input if args.input != "-" else sys.stdin.read()
    return cmd_try(
        text, args.profile, _settings(), state_file=args.state, device_key=args.device_key, as_json=args.json
    )


def _with_kafka_settings(command: Any, args: argparse.Namespace) -> int:
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        raise SystemExit(
            f"kseg {args.command}: KAFKA_BOOTSTRAP_SERVERS is not set. Use the address `kseg run` printed "
            "(the embedded broker, with KSEG_EMBEDDED_BROKER=true) or your cluster's."
        )
    result: int = command(args, settings)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kseg",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run everything here: receiver, worker, sinks, loader, console",
        description="Run the embedded broker (when KAFKA_BOOTSTRAP_SERVERS is unset), the embedded warehouse "
        "(when KSEG_WAREHOUSE_URL is unset), one receiver, one worker, the warehouse loader and the console. "
        "Children that exit are restarted; Ctrl-C stops all of them.",
    )
    p.set_defaults(func=cmd_run)
    p = sub.add_parser(
        "receiver",
        help="run only the HTTP receiver (needs KSEG_POSTBACK_TOKENS)",
        description="Serve Kochava postbacks, identity links and the Segment webhook on KSEG_HTTP_PORT; "
        "answer 200 only after Kafka acknowledged each record.",
    )
    p.set_defaults(func=cmd_receiver)
    p = sub.add_parser(
        "worker",
        help="run only the faust worker (needs KAFKA_BOOTSTRAP_SERVERS)",
        description="Map, dedupe, resolve identity and deliver to Segment and the warehouse topic. Run up "
        "to KSEG_TOPIC_PARTITIONS workers, each with its own KSEG_WORKER_ID.",
    )
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser(
        "sinks",
        help="run only the Segment and Kochava sinks (needs KAFKA_BOOTSTRAP_SERVERS)",
        description="Deliver the outboxes to Segment and Kochava in a process of their own, next to workers "
        "started with KSEG_WORKER_SINKS=false (kseg run does so). Pages on KSEG_SINKS_WEB_PORT. Processes "
        "that run a sink share its consumer group, so its outbox partitions.",
    )
    p.set_defaults(func=cmd_sinks)

    mapping = sub.add_parser(
        "mapping",
        help="check, try, publish and roll back mapping profiles",
        description="Mapping profiles turn Kochava postback keys into Segment calls; see docs/mapping.md.",
    )
    msub = mapping.add_subparsers(
        dest="mapping_command",
        required=True,
        metavar="{check,try} | {publish,history,rollback,diff,shadow,shadow-report,promote,drift}",
    )
    text = "validate a profile file and report every problem with its line"
    p = msub.add_parser("check", help=text, description=text)
    p.add_argument("file", help="a mapping profile (YAML)")
    p.set_defaults(func=cmd_mapping_check)
    text = (
        "show the lifecycle signals (acquisition channel, stage), Segment calls and warehouse row a postback "
        "would produce for a first-seen device (or the one --state describes), as the worker builds them, or "
        "its dead-letter reason"
    )
    p = msub.add_parser("try", help=text, description=text)
    p.add_argument("input", help="a query string (event_name=...&...) or a JSON object; - reads stdin")
    p.add_argument("--profile", help="profile name (default: KSEG_DEFAULT_PROFILE)")
    p.add_argument("--state", metavar="FILE", help="the device's profile as JSON (default: a new device)")
    p.add_argument("--device-key", help="the device key (default: the one the receiver would derive)")
    p.add_argument("--json", action="store_true", help="one compact JSON line, as the worker serialises it")
    p.set_defaults(func=cmd_mapping_try)
    from app.pipeline.registry import add_parsers as add_registry

    add_registry(msub, _with_kafka_settings)

    from app.dlq.cli import add_parser as add_dlq

    add_dlq(sub, _with_kafka_settings)

    from app.admin.cli import add_parser as add_topics

    add_topics(sub, _with_kafka_settings)

    from app.digest.cli import add_parser as add_digest

    add_digest(sub, _with_kafka_settings, _settings)

    from app.audiences.cli import add_parser as add_audiences

    add_audiences(sub, _with_kafka_settings)

    from app.privacy.cli import add_parser as add_privacy

    add_privacy(sub, _with_kafka_settings)

    from app.loadgen.cli import build_parser as add_loadgen

    add_loadgen(sub)

    from app.warehouse.cli import add_parsers as add_warehouse

    add_warehouse(sub, _settings)

    from app.trace.cli import add_parsers as add_trace

    add_trace(sub, _settings)

    from app.console.cli import add_parser as add_console

    add_console(sub, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from app.lifecycle.currency import RatesError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except RatesError as exc:  # KSEG_CURRENCY_RATES_FILE / KSEG_REPORTING_CURRENCY: say what to fix
        print(f"kseg: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
