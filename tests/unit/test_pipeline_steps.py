"""The processing agent's real step functions (`app/pipeline/steps.py`) with dict tables: outputs, the
commit order, dedupe, dead letters, reinstall parking and its bound."""

from __future__ import annotations

from typing import Any

import orjson

from app import topics
from app.mapping import ProfileRegistry
from app.pipeline import steps
from app.pipeline.steps import StepConfig
from app.records import DeadLetter, ProcessingReceipt
from tests.pipeline_tables import Tables, raw, settings

INSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KA",
    "idfv": "IDFV-1",
    "network_name": "Facebook",
    "campaign_name": "spring",
    "install_id": "inst-A",
    "timestamp": "1714557600",
}


def purchase(key: str, n: int, **kw: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "kochava_device_id": key,
        "event_value": "4.99",
        "currency": "USD",
        "order_id": f"o{n}",
        "timestamp": str(1714557700 + n),
        **kw,
    }


def test_install_produces_calls_row_and_index_updates_then_writes_state() -> None:
    t = Tables()
    batch = t.run([("KA", raw(INSTALL))])
    names = [name for name, _, _ in batch.sends]
    assert names.count(topics.WAREHOUSE) == 1 and topics.DEVICE_INDEX in names
    calls = t.take(topics.OUTBOX)
    assert {c["type"] for c in calls} == {"identify", "track"}
    assert t.profile("KA").first_touch is not None
    assert t.profile("KA").first_touch.campaign == "spring"  # type: ignore[union-attr]
    assert raw(INSTALL)["event_id"] in t.profile("KA").recent_events


def test_one_outbox_record_per_event_and_one_profile_write_per_device_per_batch() -> None:
    t = Tables()
    batch = t.run([("KA", raw(INSTALL)), ("KB", raw(purchase("KB", 0))), ("KA", raw(purchase("KA", 1)))])
    assert t.records[topics.OUTBOX] == 3 and t.records[topics.WAREHOUSE] == 3
    # Each event's identify + track + Lifecycle Stage Changed travel in one record.
    assert len(t.take(topics.OUTBOX)) == 9
    writes = batch.profile_writes()
    assert [(event, key) for event, key, _ in writes] == [(2, "KA"), (1, "KB")]  # each device's last event
    assert writes[0][2]["purchase_count"] == 1 and len(writes[0][2]["recent_events"]) == 2


def test_dedupe_marks_expire_after_the_ttl_and_are_capped_per_device() -> None:
    now = [1_000_000.0]
    t = Tables(
        config=StepConfig(settings(kseg_dedupe_max_per_device=3), ProfileRegistry.load(None), lambda: now[0])
    )
    t.run([("KA", raw(INSTALL))])
    now[0] += 24 * 3600 + 1  # past the 24 h window: the repeat is processed again
    t.run([("KA", raw(INSTALL))])
    assert len(t.take(topics.WAREHOUSE)) == 2
    t.run([("KA", raw(purchase("KA", n))) for n in range(5)])
    recent = t.profile("KA").recent_events
    assert len(recent) == 3 and all(now[0] == at for at in recent.values())


def test_exact_repeats_are_dropped_within_a_batch_and_across_batches_but_replays_are_not() -> None:
    t = Tables()
    t.run([("KA", raw(INSTALL)), ("KA", raw(INSTALL))])
    assert len(t.take(topics.WAREHOUSE)) == 1
    t.run([("KA", raw(INSTALL))])
    assert t.take(topics.WAREHOUSE) == []
    t.run([("KA", raw(INSTALL, source="replay"))])
    assert len(t.take(topics.WAREHOUSE)) == 1


def test_bad_records_become_typed_dead_letters() -> None:
    t = Tables()
    batch = steps.Batch(stored_profile=t.profiles.get, config=t.config)
    steps.handle_record(batch, 0, b"KA", b"{not json", t.config)
    steps.handle_record(batch, 1, b"KA", b'{"kind": "postback"}', t.config)
    steps.handle_record(batch, 2, b"KA", b'{"kind": "device_linked"}', t.config)
    unknown = raw(INSTALL, profile="no-such-profile")
    steps.handle_record(batch, 3, b"KA", __import__("orjson").dumps(unknown), t.config)
    letters = [DeadLetter.model_validate_json(v) for name, _, v in batch.sends if name == topics.DEADLETTER]
    assert [(x.stage, x.reason) for x in letters] == [
        ("mapping", "undecodable_record"),
        ("mapping", "invalid_raw_record"),
        ("identity", "invalid_link_notice"),
        ("mapping", "unknown_profile"),
    ]
    [(_, key, state)] = batch.profile_writes()  # only a mapping decision marks the postback seen
    assert key == "KA" and list(state["recent_events"]) == [unknown["event_id"]]


def _reinstall(t: Tables) -> None:
    """Install on KA, then a reinstall on KB with the same IDFV: KB waits for the index's answers."""
    t.run([("KA", raw(INSTALL))])
    t.apply_index()
    t.take(topics.OUTBOX)
    reinstall = {
        **INSTALL,
        "kochava_device_id": "KB",
        "network_name": "Retargeter",
        "campaign_name": "winback",
        "install_id": "inst-B",
        "reprocess_for": "inst-A",
        "timestamp": "1714560000",
    }
    t.run([("KB", raw(reinstall))])
    assert t.profile("KB").awaiting_index_answers > 0


def test_reinstall_parks_postbacks_until_the_index_answers_then_carries_the_install_campaign() -> None:
    t = Tables()
    _reinstall(t)
    t.take(topics.OUTBOX)
    t.run([("KB", raw(purchase("KB", 1)))])
    assert t.take(topics.OUTBOX) == [] and len(t.profile("KB").parked) == 1
    notices = t.apply_index()
    t.run([("KB", n.model_dump(mode="json")) for n in notices])
    orders = [c for c in t.take(topics.OUTBOX) if c.get("event") == "Order Completed"]
    assert [o["properties"]["install_campaign"] for o in orders] == ["spring"]
    assert t.profile("KB").parked == [] and t.profile("KB").awaiting_index_answers == 0


def test_parking_is_bounded_the_overflowing_postback_releases_everything_in_order() -> None:
    t = Tables()
    _reinstall(t)
    t.take(topics.OUTBOX)
    t.run([("KB", raw(purchase("KB", n))) for n in range(steps.MAX_PARKED)])
    assert len(t.profile("KB").parked) == steps.MAX_PARKED and t.take(topics.OUTBOX) == []
    t.run([("KB", raw(purchase("KB", steps.MAX_PARKED)))])
    orders = [c for c in t.take(topics.OUTBOX) if c.get("event") == "Order Completed"]
    assert [o["properties"]["order_id"] for o in orders] == [f"o{n}" for n in range(steps.MAX_PARKED + 1)]
    state = t.profile("KB")
    assert state.parked == [] and state.awaiting_index_answers == 0


def _identifies(calls: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    return [
        c for c in calls if c["type"] == "identify" and c["context"]["kseg"]["kochava_device_id"] == device
    ]


def test_ltv_revenue_and_purchase_count_follow_every_purchase() -> None:
    """After a 10 EUR and a 5 USD purchase Segment must say 15.8 and 2, not the first purchase's values."""
    t = Tables()
    t.run([("KA", raw(INSTALL))])
    t.run([("KA", raw(purchase("KA", 1, event_value="10", currency="EUR")))])
    t.run([("KA", raw(purchase("KA", 2, event_value="5", currency="USD")))])
    traits: dict[str, Any] = {}
    for identify in _identifies(t.take(topics.OUTBOX), "KA"):
        traits.update(identify["traits"])
    assert (traits["ltv_revenue"], traits["purchase_count"]) == (15.8, 2)
    assert t.profile("KA").lifecycle.sent["purchase_count"] == 2


def test_a_device_s_revenue_identifies_coalesce_to_one_per_micro_batch() -> None:
    t = Tables()
    t.run([("KA", raw(INSTALL)), ("KA", raw(purchase("KA", 0)))])
    t.take(topics.OUTBOX)
    one_each = [("KA" if n % 2 else "KB", n) for n in range(1, 9)]
    t.run(
        [
            (key, raw(purchase(key, n, event_value="1" if key == "KA" or n > 2 else "4.99")))
            for key, n in one_each
        ]
    )
    calls = t.take(topics.OUTBOX)
    [identify] = _identifies(calls, "KA")  # four in-tier purchases of KA: one identify, the latest values
    assert identify["traits"] == {"ltv_revenue": 8.99, "purchase_count": 5}
    orders = [c for c in calls if c.get("event") == "Order Completed"]
    assert len(orders) == 8 and len({c["messageId"] for c in calls}) == len(calls)
    # It travels with the device's last purchase of the batch, just before that purchase's track.
    last = next(i for i, c in enumerate(calls) if c.get("properties", {}).get("order_id") == "o7")
    assert calls[last - 1]["messageId"] == identify["messageId"]
    first, revenue = _identifies(calls, "KB")  # KB's first purchase (its signals), then its folded revenue
    assert "ltv_tier" in first["traits"] and revenue["traits"] == {"ltv_revenue": 7.99, "purchase_count": 4}
    assert t.profile("KA").lifecycle.sent["purchase_count"] == 5

    # Revenue identifies before a signal's identify (a tier crossing) fold into it.
    t.run([("KA", raw(purchase("KA", n, event_value=v))) for n, v in ((10, "1"), (11, "1"), (12, "20"))])
    [identify] = _identifies(t.take(topics.OUTBOX), "KA")
    assert identify["traits"] == {"ltv_revenue": 30.99, "purchase_count": 8, "ltv_tier": "medium"}


def test_a_replay_cut_differently_never_reuses_a_folded_identify_s_id() -> None:
    """A folded identify's messageId depends on what it folded, so a replay cut at another place sends new
    ids (Segment would drop a reused id carrying older values)."""
    ids = []
    for cut in ([[1, 2, 3]], [[1, 2], [3]]):
        t = Tables()
        t.run([("KA", raw(INSTALL)), ("KA", raw(purchase("KA", 0)))])
        t.take(topics.OUTBOX)
        for batch in cut:
            t.run([("KA", raw(purchase("KA", n))) for n in batch])
        ids.append([c["messageId"] for c in _identifies(t.take(topics.OUTBOX), "KA")])
    assert len(ids[0]) == 1 and len(ids[1]) == 2 and not set(ids[0]) & set(ids[1])


def test_the_processing_receipt_says_what_became_of_each_postback() -> None:
    """One receipt per micro-batch: mapped (profile and version), repeat, dead-lettered (reason), parked."""
    t = Tables()
    unknown = raw(INSTALL, profile="no-such-profile", kochava_device_id="KC")
    batch = t.run([("KA", raw(INSTALL)), ("KA", raw(INSTALL)), ("KC", unknown)])
    [(name, _, value)] = steps.processing_receipts(batch)
    receipt = ProcessingReceipt.decode(value)
    assert name == topics.PROCESSING_RECEIPTS
    assert [(e.event_id, e.outcome) for e in receipt.events] == [
        (raw(INSTALL)["event_id"], "mapped"),
        (raw(INSTALL)["event_id"], "repeat"),
        (unknown["event_id"], "dead_lettered"),
    ]
    mapped = receipt.events[0]
    [row] = t.take(topics.WAREHOUSE)  # the version the event was mapped with
    assert (mapped.profile, mapped.profile_version, mapped.device_key) == (
        "kochava-default",
        row["profile_version"],
        "KA",
    )
    assert receipt.events[2].reason == "unknown_profile"

    t2 = Tables()
    _reinstall(t2)
    parked = t2.run([("KB", raw(purchase("KB", 1)))])
    [(_, _, value)] = steps.processing_receipts(parked)
    assert [(e.outcome, e.reason) for e in ProcessingReceipt.decode(value).events] == [
        ("parked", "awaiting_index_answers")
    ]
    # The index's answers release the parked purchase: it is mapped then, in that batch's receipt.
    notices = t2.apply_index()
    released = steps.processing_receipts(t2.run([("KB", n.model_dump(mode="json")) for n in notices]))
    [(_, _, value)] = released
    assert [(e.event_id, e.outcome) for e in ProcessingReceipt.decode(value).events] == [
        (raw(purchase("KB", 1))["event_id"], "mapped")
    ]
    # A batch without postbacks (a notice the device had no use for) has no receipt.
    empty = steps.Batch(stored_profile=t2.profiles.get, config=t2.config)
    steps.handle_record(empty, 0, b"KB", b'{"kind": "device_linked"}', t2.config)
    assert steps.processing_receipts(empty) == []


def test_a_batch_reads_and_validates_each_stored_profile_once() -> None:
    """Dedupe, parking and processing all ask for the device's profile: the table is read once per device
    per batch (the worker's table decodes JSON on every read), and later reads see the batch's state."""
    t = Tables()
    t.run([("KA", raw(INSTALL))])
    reads: list[str] = []

    def stored(key: str) -> dict[str, Any] | None:
        reads.append(key)
        return t.profiles.get(key)

    batch = steps.Batch(stored_profile=stored, config=t.config)
    for n, params in enumerate([purchase("KA", 1), purchase("KA", 2), purchase("KB", 3)]):
        key = params["kochava_device_id"]
        steps.handle_record(batch, n, key.encode(), orjson.dumps(raw(params)), t.config)
    # (The privacy check reads its own suppression-mark keys from the same table.)
    assert sorted(key for key in reads if key in ("KA", "KB")) == ["KA", "KB"]
    assert batch.states["KA"].purchase_count == 2
