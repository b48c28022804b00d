"""Agent handlers with in-memory senders and table, plus the whole identity loop wired by hand."""

from __future__ import annotations

from typing import Any

import orjson

from app.config import Settings
from app.identity.agents import handle_index_update, handle_link
from app.identity.late_auth import apply_link
from app.identity.records import DeviceLinked, DeviceRecord, LinkRequest, to_bytes
from app.identity.resolver import observations, resolve
from app.records import AttributionProfile, CanonicalEvent, DeviceIds


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, dict[str, Any]]] = []

    async def __call__(self, key: bytes | None, value: bytes) -> None:
        self.sent.append((key, orjson.loads(value)))


def link_bytes(**kw: Any) -> bytes:
    base: dict[str, Any] = {
        "link_id": "L1",
        "source": "api",
        "user_id": "u1",
        "devices": DeviceIds(idfa="A", idfv="V"),
    }
    return to_bytes(LinkRequest(**{**base, **kw}))


async def test_handle_link_fans_out_keyed_by_typed_id() -> None:
    index, dlq = Sink(), Sink()
    assert await handle_link(link_bytes(), index, dlq) == 2
    assert [k for k, _ in index.sent] == [b"idfa:A", b"idfv:V"]
    assert all(v["kind"] == "link" and v["user_id"] == "u1" for _, v in index.sent)
    assert dlq.sent == []


async def test_invalid_links_go_to_the_dead_letter_topic() -> None:
    index, dlq = Sink(), Sink()
    assert await handle_link(b"{not json", index, dlq) == 0
    assert await handle_link(orjson.dumps({"kind": "link_request"}), index, dlq) == 0
    assert await handle_link(link_bytes(user_id=None), index, dlq) == 0
    assert index.sent == []
    assert [(v["stage"], v["reason"]) for _, v in dlq.sent] == [
        ("identity", "invalid_link"),
        ("identity", "invalid_link"),
        ("identity", "no_person_id"),
    ]
    assert dlq.sent[0][1]["payload"] == {"raw": "{not json"}


async def test_index_update_writes_table_and_sends_notices() -> None:
    table: dict[bytes, Any] = {}
    events, dlq = Sink(), Sink()
    observed = orjson.dumps({"kind": "observed", "device": "idfa:A", "device_key": "K1"})
    link = orjson.dumps({"kind": "link", "device": "idfa:A", "user_id": "u1"})
    assert await handle_index_update(b"idfa:A", observed, table, events, dlq) == 0
    assert DeviceRecord.model_validate(orjson.loads(table[b"idfa:A"])).device_keys == ["K1"]
    assert await handle_index_update(b"idfa:A", link, table, events, dlq) == 1
    key, notice = events.sent[0]
    assert key == b"K1"
    assert DeviceLinked.model_validate(notice).user_id == "u1"
    assert notice["kind"] == "device_linked"
    assert await handle_index_update(b"idfa:A", b"[]", table, events, dlq) == 0
    assert dlq.sent[0][1]["reason"] == "invalid_index_update"


def _event(n: int, user_id: str | None = None) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=f"e{n}",
        message_id=f"m{n}",
        kind="event",
        kochava_event_name="open",
        segment_event_name="Application Opened",
        timestamp="2024-05-01T10:00:00.000Z",
        received_at=f"2024-05-01T10:00:{n:02d}.000Z",
        devices=DeviceIds(kochava_device_id="K1", idfv="SHARED-IPAD"),
        user_id=user_id,
        profile="p",
        profile_version="1",
    )


async def test_identity_loop_shared_ipad_never_merges_users() -> None:
    """Three people log in on one iPad via the links API; no device key ever resolves to two users."""
    s = Settings(_env_file=None, kseg_shared_device_threshold=2)  # type: ignore[call-arg]
    table: dict[bytes, Any] = {}
    profile = AttributionProfile()
    ident, profile = resolve(_event(1), profile, "K1", s)
    profile, updates = observations(_event(1), profile, "K1", s)
    events, dlq = Sink(), Sink()
    for u in updates:
        await handle_index_update(u.device.encode(), to_bytes(u), table, events, dlq)

    messages: list[dict[str, Any]] = []
    users_seen: list[str | None] = []
    for n, user in enumerate(["u1", "u2", "u3"], start=2):
        index = Sink()
        req = LinkRequest(
            link_id=f"L{n}",
            source="api",
            user_id=user,
            devices=DeviceIds(idfv="SHARED-IPAD"),
            requested_at=f"2024-05-0{n}T00:00:00.000Z",
        )
        await handle_link(to_bytes(req), index, dlq)
        for key, value in index.sent:
            await handle_index_update(key, orjson.dumps(value), table, events, dlq)
        for _, value in events.sent:
            profile, out = apply_link(profile, DeviceLinked.model_validate(value), "K1", s)
            messages += out
        events.sent.clear()
        ident, profile = resolve(_event(10 + n), profile, "K1", s)
        users_seen.append(ident.user_id)

    assert users_seen == ["u1", "u2", None]  # u2 replaced u1; u3 made it shared: anonymous from then on
    aliases = [m for m in messages if m["type"] == "alias"]
    assert [(a["previousId"], a["userId"]) for a in aliases] == [(ident.anonymous_id, "u1")]
    assert {m["userId"] for m in messages} == {"u1", "u2"}
    assert profile.device_shared and dlq.sent == []
