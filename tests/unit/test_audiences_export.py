"""Export formats and the audience summary, from member states as the changelog holds them."""

from __future__ import annotations

from app.audiences.cli import export_lines, summary_rows
from app.audiences.records import DeviceEntry, Membership, MemberState
from app.config import Settings
from app.dlq.cli import replay_target
from app.records import DeadLetter

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
ADID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def member(name: str, entered: bool, devices: dict[str, dict[str, str]]) -> MemberState:
    membership = Membership(
        source="segment", audience_id="aud_1", audience_key="vip", entered=entered, at="t1", changed_at="t1"
    )
    return MemberState(
        member=name,
        audiences={"segment:aud_1": membership},
        devices={k: DeviceEntry(device_ids=v, linked_at="t0") for k, v in devices.items()},
    )


MEMBERS = [
    member("user:a", True, {"KI1": {"idfa": IDFA}, "KI2": {"idfv": "AB92078A-8246-4BA4-AE5B-76104861E7DD"}}),
    member("user:b", True, {"KI3": {"adid": ADID, "android_id": "9774d56d682e549c"}}),
    member("user:c", False, {"KI4": {"idfa": "1B92078A-8246-4BA4-AE5B-76104861E7D9"}}),
]


def test_mobile_ids_one_ad_id_per_line_only_members_inside() -> None:
    text, written, left_out = export_lines(MEMBERS, "vip", "mobile-ids")
    assert text.splitlines() == [IDFA, ADID]
    assert (written, left_out) == (2, 1)


def test_kochava_format_every_known_id() -> None:
    text, written, _ = export_lines(MEMBERS, "vip", "kochava")
    lines = text.splitlines()
    assert lines[0] == "device_id_type,device_id"
    assert (
        "kochava_device_id,KI3" in lines
        and f"adid,{ADID}" in lines
        and "android_id,9774d56d682e549c" in lines
    )
    assert not any("KI4" in line for line in lines)
    assert written == 3


def test_csv_and_summary() -> None:
    text, _, _ = export_lines(MEMBERS, "vip", "csv")
    assert text.splitlines()[0] == "audience_key,member,device_key,idfa,idfv,adid,android_id,entered_at"
    assert len(text.splitlines()) == 4
    [row] = summary_rows(MEMBERS)
    assert (row["audience_key"], row["members"], row["devices"]) == ("vip", 2, 3)


def test_kochava_dead_letter_replays_to_the_kochava_outbox() -> None:
    letter = DeadLetter(
        stage="kochava",
        reason="kochava_rejected_400",
        error="x",
        payload={
            "kind": "kochava_request",
            "endpoint": "track",
            "request_id": "r1",
            "device_key": "KI1",
            "body": {},
        },
    )
    target = replay_target(letter, Settings(kseg_app_id="k"))
    assert target is not None and target[:2] == ("k.kochava.outbox", "KI1")
