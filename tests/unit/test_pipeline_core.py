"""The processing core (`app.pipeline.core.process_postback`): pure, one identity step, and the same answer
for the worker's steps and `kseg mapping try`."""

from __future__ import annotations

from typing import Any

from app import topics
from app.mapping import ProfileRegistry
from app.pipeline.core import ProfileConfig, process_postback
from app.pipeline.preview import postback_of, try_postback
from app.pipeline.steps import StepConfig
from app.records import AttributionProfile, RawPostback
from tests.pipeline_tables import Tables, raw, settings

CONFIG = StepConfig(settings(kseg_ltv_tiers="low=0,vip=50"), ProfileRegistry.load(None))
DEFAULT: ProfileConfig = CONFIG.profile_configs.configs["kochava-default"]
NOW = "2024-05-01T10:00:02.000Z"

INSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KC",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "network_name": "Facebook",
    "campaign_name": "spring",
    "install_id": "inst-C",
    "user_id": "u-1",
    "email": "Someone@Example.com",
    "timestamp": "1714557600",
}


def _raw(params: dict[str, Any], **kw: Any) -> RawPostback:
    return RawPostback.model_validate(raw(params, **kw))


def test_the_core_is_pure_and_reports_everything_the_worker_sends() -> None:
    state = AttributionProfile()
    before = state.model_dump()
    out = process_postback(_raw(INSTALL), state, "KC", DEFAULT, NOW)
    assert state.model_dump() == before  # the input state is never changed
    assert out.dead_letter is None and out.event is not None and out.row is not None
    assert [c["type"] for c in out.calls] == ["identify", "track", "track"]
    assert {c["userId"] for c in out.calls} == {"u-1"}
    observed = [u for u in out.index_updates if u.kind == "observed"]
    assert observed and all(u.first_touch is not None and u.install_id == "inst-C" for u in observed)
    assert {u.kind for u in out.index_updates} == {"observed", "link"}
    assert [(f.member, f.at) for f in out.audience_facts] == [("user:u-1", NOW)]
    assert out.state.user_id == "u-1" and out.state.first_touch is not None
    assert out.awaiting_index_answers == 0

    # A later purchase (attribution, lifecycle, LTV, the told traits) leaves the state it was given as well.
    told = out.state.model_dump()
    buy = {
        **INSTALL,
        "event_name": "Purchase",
        "event_value": "9",
        "currency": "EUR",
        "timestamp": "1714557700",
    }
    again = process_postback(_raw(buy), out.state, "KC", DEFAULT, NOW)
    assert out.state.model_dump() == told
    assert again.state.purchase_count == 1 and again.state.lifecycle.sent["purchase_count"] == 1


def test_the_core_s_profile_config_is_built_once_from_the_settings() -> None:
    assert DEFAULT.lifecycle.tiers == (("low", 0.0), ("vip", 50.0))
    assert DEFAULT.identity.namespace == "test-ns" and DEFAULT.profile.name == "kochava-default"
    # Every postback of the process uses these objects: no per-event rebuild.
    assert CONFIG.profile_configs.for_postback(_raw(INSTALL)) is DEFAULT


def test_a_reinstall_waits_for_its_index_answers() -> None:
    reinstall = {**INSTALL, "install_id": "inst-D", "reprocess_for": "inst-C", "user_id": "u-1"}
    out = process_postback(_raw(reinstall), AttributionProfile(), "KD", DEFAULT, NOW)
    assert out.event is not None and out.event.kind == "reinstall"
    assert out.awaiting_index_answers == out.state.awaiting_index_answers > 0


def test_mapping_try_prints_what_the_worker_sends_for_a_new_device() -> None:
    query = {**INSTALL, "token": "secret", "event_value": "3"}
    preview = try_postback(
        postback_of(query, None, NOW), AttributionProfile(), "KC", CONFIG.profile_configs, NOW
    )
    t = Tables(config=CONFIG)
    t.run([("KC", raw({k: v for k, v in query.items() if k != "token"}))])
    sent = t.take(topics.OUTBOX)
    [row] = t.take(topics.WAREHOUSE)
    received = {"received_at": row["received_at"]}
    assert preview["segment"] == sent
    assert {**preview["warehouse"], **received} == row
