"""`kseg privacy request|status|list`: privacy requests from the command line, straight on Kafka.

A request goes to the compacted `privacy.requests` topic exactly as the receiver's API writes it (channel
`cli`); the worker's privacy agent fans it out. `status` and `list` read the topic (docs/privacy.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from app import topics
from app.kafka import producer_config
from app.privacy.records import PrivacyRequest
from app.privacy.rules import DEVICE_FIELDS, BodyError, new_request, parse_body
from app.privacy.store import all_requests, get_request
from app.sections import KafkaSettings


async def _publish(settings: KafkaSettings, request: PrivacyRequest) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(topics.PRIVACY_REQUESTS), value=request.encode(), key=request.request_id.encode()
        )
    finally:
        await producer.stop()


async def submit(settings: KafkaSettings, request: PrivacyRequest) -> tuple[str, bool]:
    from app.topics import ensure_topics

    await ensure_topics(settings)
    if await get_request(settings, request.request_id) is not None:
        return request.request_id, True
    await _publish(settings, request)
    return request.request_id, False


def cmd_request(args: argparse.Namespace, settings: KafkaSettings) -> int:
    body: dict[str, Any] = {"type": args.type}
    if args.user_id is not None:
        body["user_id"] = args.user_id
    devices = {name: getattr(args, name) for name in DEVICE_FIELDS if getattr(args, name) is not None}
    if devices:
        body["devices"] = devices
    if args.email is not None:
        body["email"] = args.email
    if args.reference is not None:
        body["reference"] = args.reference
    try:
        kind, subject, reference = parse_body(body)
    except BodyError as err:
        print(f"kseg privacy request: {err.message}", file=sys.stderr)
        return 2
    request_id, duplicate = asyncio.run(submit(settings, new_request(kind, subject, reference, "cli")))
    print(orjson.dumps({"request_id": request_id, "duplicate": duplicate}).decode())
    return 0


def _line(request: PrivacyRequest) -> str:
    targets = " ".join(f"{name}={t.status}" for name, t in request.targets.items())
    return f"{request.request_id}  {request.type:<10} {request.status:<11} {request.received_at}  {targets}"


def cmd_status(args: argparse.Namespace, settings: KafkaSettings) -> int:
    request = asyncio.run(get_request(settings, args.request_id))
    if request is None:
        print(f"kseg privacy status: no request {args.request_id}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(request.summary()).decode())
        return 0
    print(_line(request))
    print(f"  channel {request.channel}, reference {request.reference or '-'}, revision {request.revision}")
    covered = request.covered
    print(
        f"  covered: {len(covered.user_ids)} user ids, {len(covered.device_keys)} device keys, "
        f"{len(covered.typed_ids)} device ids, {len(covered.members)} audience members"
    )
    for name, target in request.targets.items():
        print(f"  {name:<12} {target.status:<15} {target.reason or ''}")
    if request.kafka_gone_by:
        print(f"  raw records in Kafka gone by {request.kafka_gone_by}")
    return 0


def cmd_list(args: argparse.Namespace, settings: KafkaSettings) -> int:
    requests = sorted(asyncio.run(all_requests(settings)).values(), key=lambda r: r.received_at)
    if args.json:
        print(orjson.dumps([r.summary() for r in requests]).decode())
        return 0
    for request in requests:
        print(_line(request))
    if not requests:
        print("no privacy requests")
    return 0


def add_parser(subparsers: Any, runner: Any) -> None:
    """Add `privacy request|status|list`; `runner(command, args)` supplies the settings (and checks Kafka)."""
    parser = subparsers.add_parser(
        "privacy",
        help="delete or suppress a person everywhere kseg sends data; see the record",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="privacy_command", required=True, metavar="{request,status,list}")
    text = "file a delete, suppress or unsuppress request for a user id and/or device ids"
    p = sub.add_parser("request", help=text, description=text)
    p.add_argument("type", choices=["delete", "suppress", "unsuppress"])
    p.add_argument("--user-id")
    for name in DEVICE_FIELDS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name)
    p.add_argument("--email")
    p.add_argument("--reference", help="your ticket or case id (a new reference makes a new request)")
    p.set_defaults(func=lambda args: runner(cmd_request, args))
    text = "one request's status per target, and what it covered"
    p = sub.add_parser("status", help=text, description=text)
    p.add_argument("request_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="the whole record as one JSON line")
    p.set_defaults(func=lambda args: runner(cmd_status, args))
    text = "every request with its status"
    p = sub.add_parser("list", help=text, description=text)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda args: runner(cmd_list, args))
