"""Identity agent handlers with in-memory senders and table, and the whole identity loop through them and
the processing agent's steps."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from app import topics
from app.config import Settings
from app.identity.agents import handle_index_update, handle_link
from app.identity.records import DeviceRecord, LinkRequest, to_bytes
from app.ids import anonymous_id_for
from app.mapping import ProfileRegistry
from app.metrics import DeadLetterMetrics, sample
from app.pipeline.steps import StepConfig
from app.records import DeviceIds, DeviceLinked
from tests.pipeline_tables import Tables, raw

S = Settings(_env_file=None)  # type: ignore[call-arg]
#: The dead-letter count the handlers increment (the worker passes its registry's).
DEAD = DeadLetterMetrics.on(CollectorRegistry())


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
    assert await handle_link(link_bytes(), index, dlq, dead_letters=DEAD.total) == 2
    assert [k for k, _ in index.sent] == [b"idfa:A", b"idfv:V"]
    assert all(v["kind"] == "link" and v["user_id"] == "u1" for _, v in index.sent)
    assert dlq.sent == []


async def test_invalid_links_go_to_the_dead_letter_topic() -> None:
    index, dlq = Sink(), Sink()
    assert await handle_link(b"{not json", index, dlq, dead_letters=DEAD.total) == 0
    assert await handle_link(orjson.dumps({"kind": "link_request"}), index, dlq, dead_letters=DEAD.total) == 0
    assert await handle_link(link_bytes(user_id=None), index, dlq, dead_letters=DEAD.total) == 0
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
    assert await handle_index_update(b"idfa:A", observed, table, events, dlq, S, dead_letters=DEAD.total) == 0
    assert DeviceRecord.model_validate(orjson.loads(table[b"idfa:A"])).device_keys == ["K1"]
    assert await handle_index_update(b"idfa:A", link, table, events, dlq, S, dead_letters=DEAD.total) == 1
    key, notice = events.sent[0]
    assert key == b"K1"
    assert DeviceLinked.model_validate(notice).user_id == "u1"
    assert notice["kind"] == "device_linked"
    assert await handle_index_update(b"idfa:A", b"[]", table, events, dlq, S, dead_letters=DEAD.total) == 0
    assert dlq.sent[0][1]["reason"] == "invalid_index_update"


async def test_identity_loop_shared_ipad_never_merges_users() -> None:
    """Three people log in on one iPad via the links API; no device key ever resolves to two users. The
    agents' handlers and the processing agent's real steps, with dict tables."""
    t = Tables(
        config=StepConfig(
            Settings(_env_file=None, kseg_shared_device_threshold=2), ProfileRegistry.load(None)
        )
    )  # type: ignore[call-arg]
    s = t.config.settings
    table: dict[bytes, Any] = {}
    events, dlq = Sink(), Sink()

    def opened(n: int) -> dict[str, Any]:
        return raw(
            {
                "event_name": "open",
                "kochava_device_id": "K1",
                "idfv": "SHARED-IPAD",
                "timestamp": str(1714557600 + n),
            }
        )

    async def index(updates: list[tuple[bytes, Any]]) -> None:
        for key, value in updates:
            await handle_index_update(
                key, orjson.dumps(value), table, events, dlq, s, dead_letters=DEAD.total
            )

    t.run([("K1", opened(1))])
    await index(t.sent.pop(topics.DEVICE_INDEX, []))
    t.take(topics.WAREHOUSE)
    users_seen: list[str | None] = []
    for n, user in enumerate(["u1", "u2", "u3"], start=2):
        link_index = Sink()
        req = LinkRequest(
            link_id=f"L{n}",
            source="api",
            user_id=user,
            devices=DeviceIds(idfv="SHARED-IPAD"),
            requested_at=f"2024-05-0{n}T00:00:00.000Z",
        )
        await handle_link(to_bytes(req), link_index, dlq, dead_letters=DEAD.total)
        await index(link_index.sent)
        t.run([(key.decode(), value) for key, value in events.sent])
        events.sent.clear()
        t.run([("K1", opened(10 + n))])
        [row] = t.take(topics.WAREHOUSE)
        users_seen.append(row["user_id"])

    assert users_seen == ["u1", "u2", None]  # u2 replaced u1; u3 made it shared: anonymous from then on
    messages = t.take(topics.OUTBOX)
    aliases = [m for m in messages if m["type"] == "alias"]
    # The device's own anonymousId (u1's history) is aliased to u1 only; u2 got an anonymousId of their own.
    device_anonymous_id = anonymous_id_for(s.kseg_namespace, "K1")
    assert [(a["previousId"], a["userId"]) for a in aliases] == [(device_anonymous_id, "u1")]
    assert t.profile("K1").anonymous_id != device_anonymous_id
    assert {m.get("userId") for m in messages if m["type"] != "track"} >= {"u1", "u2"}
    assert "u3" not in {m.get("userId") for m in messages}
    assert t.profile("K1").device_shared and dlq.sent == []


async def test_identity_dead_letters_are_counted_for_the_dead_letter_alert() -> None:
    """`kseg_dead_letters_total{stage="identity"}` counts the identity agents' dead letters too."""
    index, dlq = Sink(), Sink()
    before = {
        r: sample("kseg_dead_letters_total", DEAD.registry, stage="identity", reason=r)
        for r in ("invalid_link", "no_person_id", "invalid_index_update")
    }
    assert await handle_link(b"{not json", index, dlq, dead_letters=DEAD.total) == 0
    assert await handle_link(link_bytes(user_id=None), index, dlq, dead_letters=DEAD.total) == 0
    assert await handle_index_update(None, b"[]", {}, Sink(), dlq, S, dead_letters=DEAD.total) == 0
    after = {r: sample("kseg_dead_letters_total", DEAD.registry, stage="identity", reason=r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {
        "invalid_link": 1,
        "no_person_id": 1,
        "invalid_index_update": 1,
    }
    assert len(dlq.sent) == 3
