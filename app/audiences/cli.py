"""`kseg audiences list` and `kseg audiences export`: read the membership table's changelog from Kafka.

The `audience-members` table is changelog-backed, so its Kafka changelog topic holds every member's
latest state: the CLI reads it to the end (no worker needed) and keeps the last value per member.

Export formats (docs/audiences.md says where each one goes):
- `mobile-ids`: one advertising id (IDFA or GAID) per line, no header: the "mobile advertiser id" list
  the ad platforms' customer-list audiences accept (Google Ads, Meta, TikTok). Devices without an ad id
  are left out (counted in the summary).
- `kochava`: CSV `device_id_type,device_id`, every known id of every device (kochava_device_id, idfa,
  idfv, adid, android_id), for an upload segment in Kochava's audience manager.
- `csv`: one row per device with every id and the member's entry time, for people and warehouses.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
from collections.abc import Iterable
from typing import Any

from app.audiences.agents import TABLE
from app.audiences.records import Membership, MemberState
from app.config import Settings
from app.kafka import read_to_end
from app.records import loads

FORMATS = ("kochava", "mobile-ids", "csv")
ID_TYPES = ("kochava_device_id", "idfa", "idfv", "adid", "android_id")


def changelog_topic(settings: Settings) -> str:
    return f"{settings.kseg_app_id}-{TABLE}-changelog"


async def read_members(settings: Settings) -> list[MemberState]:
    """The latest state of every member (the changelog from the beginning to its end at start)."""
    latest: dict[bytes, bytes | None] = {}
    for record in await read_to_end(settings, changelog_topic(settings)):
        latest[record.key or b""] = record.value
    return [decode_state(v) for v in latest.values() if v is not None]


def decode_state(value: bytes) -> MemberState:
    data = loads(value)
    if isinstance(data, str | bytes):  # a serializer that wrapped the bytes once more
        data = loads(data if isinstance(data, bytes) else data.encode())
    return MemberState.model_validate(data)


def _memberships(members: Iterable[MemberState]) -> dict[str, list[tuple[MemberState, Membership]]]:
    by_key: dict[str, list[tuple[MemberState, Membership]]] = {}
    for member in members:
        for membership in member.audiences.values():
            by_key.setdefault(membership.audience_key, []).append((member, membership))
    return by_key


def summary_rows(members: list[MemberState]) -> list[dict[str, Any]]:
    """Per audience: source, id, members in, their devices, last change."""
    rows = []
    for key, items in sorted(_memberships(members).items()):
        inside = [(m, ms) for m, ms in items if ms.entered]
        rows.append(
            {
                "audience_key": key,
                "source": items[0][1].source,
                "audience_id": items[0][1].audience_id,
                "members": len(inside),
                "devices": sum(len(m.devices) for m, _ in inside),
                "last_change": max(ms.changed_at for _, ms in items),
            }
        )
    return rows


def export_lines(members: list[MemberState], key: str, fmt: str) -> tuple[str, int, int]:
    """(file text, devices written, devices left out) for the members currently in audience `key`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    written = left_out = 0
    seen: set[str] = set()
    if fmt == "kochava":
        writer.writerow(["device_id_type", "device_id"])
    elif fmt == "csv":
        writer.writerow(["audience_key", "member", "device_key", *ID_TYPES[1:], "entered_at"])
    for member, membership in _memberships(members).get(key, []):
        if not membership.entered:
            continue
        for device_key, device in sorted(member.devices.items()):
            ids: dict[str, str] = dict(device.device_ids)
            if ":" not in device_key:  # a typed key (`idfa:...`) is no Kochava device id
                ids["kochava_device_id"] = device_key
            if fmt == "mobile-ids":
                ad_ids = [ids[t] for t in ("idfa", "adid") if t in ids]
                if not ad_ids:
                    left_out += 1
                for ad_id in ad_ids:
                    if ad_id not in seen:
                        seen.add(ad_id)
                        out.write(ad_id + "\n")
                written += bool(ad_ids)
            elif fmt == "kochava":
                for id_type in ID_TYPES:
                    value = ids.get(id_type)
                    if value and f"{id_type}:{value}" not in seen:
                        seen.add(f"{id_type}:{value}")
                        writer.writerow([id_type, value])
                written += 1
            else:
                row = [ids.get(t) or "" for t in ID_TYPES[1:]]
                writer.writerow([key, member.member, device_key, *row, membership.changed_at])
                written += 1
    return out.getvalue(), written, left_out


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = summary_rows(asyncio.run(read_members(settings)))
    if not rows:
        print(f"no audience memberships yet (changelog {changelog_topic(settings)} is empty or missing)")
        return 0
    print(f"{'audience':32} {'source':7} {'audience id':24} {'members':>8} {'devices':>8}  last change")
    for r in rows:
        counts = f"{r['members']:>8} {r['devices']:>8}"
        print(f"{r['audience_key']:32} {r['source']:7} {r['audience_id']:24} {counts}  {r['last_change']}")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    members = asyncio.run(read_members(settings))
    known = {r["audience_key"] for r in summary_rows(members)}
    if args.key not in known:
        choices = ", ".join(sorted(known)) or "none yet"
        print(f"kseg audiences export: no audience {args.key!r}; known: {choices}", file=sys.stderr)
        return 2
    text, written, left_out = export_lines(members, args.key, args.format)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    note = f", {left_out} without an advertising id left out" if left_out else ""
    target = args.output if args.output and args.output != "-" else "stdout"
    print(f"exported {written} device(s) of {args.key!r} as {args.format} to {target}{note}", file=sys.stderr)
    return 0


def add_parser(subparsers: Any, runner: Any) -> None:
    """Add `audiences list|export`; `runner(command, args)` supplies the settings (and checks Kafka)."""
    parser = subparsers.add_parser(
        "audiences",
        help="list audiences or export an audience's device ids",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="audiences_command", required=True, metavar="{list,export}")
    text = "audiences with their members, devices and last change"
    p = sub.add_parser("list", help=text, description=text)
    p.set_defaults(func=lambda args: runner(cmd_list, args))
    text = "write the device ids of the members now in audience KEY, for an upload"
    p = sub.add_parser("export", help=text, description=text)
    p.add_argument("key", metavar="KEY", help="the audience key, as `kseg audiences list` shows it")
    p.add_argument("--format", choices=FORMATS, default="csv", help="kochava | mobile-ids | csv (default)")
    p.add_argument("--output", "-o", help="file to write (default: stdout)")
    p.set_defaults(func=lambda args: runner(cmd_export, args))
