"""The readable form of a timeline (`kseg trace ID` without `--json`)."""

from __future__ import annotations

from typing import Any


def _status(call: dict[str, Any]) -> str:
    status = call.get("http_status")
    attempts = call.get("attempts")
    bits = [str(call.get("outcome"))]
    if status is not None:
        bits.append(f"HTTP {status}")
    if attempts:
        bits.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
    if call.get("reason") and call.get("outcome") != "delivered":
        bits.append(str(call["reason"]))
    return ", ".join(bits)


def render_text(found: dict[str, Any]) -> str:
    """The timeline as text: one block per postback, oldest first."""
    if found["matched_as"] is None:
        return (
            f"no postback, call, warehouse row or dead letter known for {found['query']!r} "
            "(trace rows are kept KSEG_TRACE_RETENTION_DAYS days)"
        )
    lines = [f"{found['query']} (matched as {found['matched_as']})"]
    for device in found["devices"]:
        ids = ", ".join(f"{k}={v}" for k, v in device.items() if v and k != "device_key")
        lines.append(f"  device {device['device_key']}: {ids}")
    identity = found.get("identity") or {}
    if identity:
        user, anonymous = identity.get("user_id") or "-", identity.get("anonymous_id") or "-"
        via = identity.get("resolved_via") or "-"
        lines.append(f"  identity: userId={user} anonymousId={anonymous} (via {via})")
    for event in found["events"]:
        lines.append("")
        name = event.get("event_name") or "?"
        lines.append(f"{event['received_at'] or '?'}  {name}  event {event['event_id']}")
        if event.get("source"):
            lines.append(
                f"  received via {event['source']}, token {event.get('token_name') or '-'}, "
                f"kafka {event['kafka']['partition']}@{event['kafka']['offset']}"
                if event.get("kafka")
                else f"  received via {event['source']}"
            )
        outcome = event.get("outcome") or "not processed yet"
        profile = (
            f"profile {event['profile']} v{event['profile_version']}" if event.get("profile_version") else ""
        )
        reason = f" ({event['reason']})" if event.get("reason") else ""
        lines.append(f"  processing: {outcome}{reason} {profile}".rstrip())
        for call in event["segment_calls"]:
            label = f"{call['type']} {call['event']}" if call.get("event") else str(call["type"])
            lines.append(f"  segment {label} [{call['message_id']}]: {_status(call)} at {call['final_at']}")
        row = event.get("warehouse_row")
        if row:
            lines.append(
                f"  warehouse row: {row.get('event_type')} {row.get('segment_event') or ''} "
                f"user_id={row.get('user_id') or '-'} anonymous_id={row.get('anonymous_id')}".rstrip()
            )
        for send in event["kochava_sends"]:
            lines.append(f"  kochava {send['endpoint']} {send.get('event') or ''}: {_status(send)}")
        for letter in event["dead_letters"]:
            replayed = " (replayed)" if letter.get("replayed") else ""
            lines.append(
                f"  dead letter {letter['stage']}/{letter['reason']}{replayed}: {letter['error'][:200]}"
            )
    return "\n".join(lines)
