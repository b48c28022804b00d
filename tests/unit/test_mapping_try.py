"""`kseg mapping try`: input parsing, the preview (the processing core on a new device), the command body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.ids import anonymous_id_for
from app.mapping import ProfileRegistry, parse_try_input
from app.pipeline.preview import cmd_try, try_postback
from app.pipeline.steps import StepConfig
from app.records import AttributionProfile, RawPostback, device_key_of

REGISTRY = ProfileRegistry.load(None)


def preview(raw: RawPostback, namespace: str, profile: str | None = None) -> dict[str, Any]:
    """What `kseg mapping try` prints for `raw` (a new device, the worker's configuration)."""
    config = StepConfig(Settings(_env_file=None, kseg_namespace=namespace), REGISTRY)  # type: ignore[call-arg]
    raw = raw.model_copy(update={"profile": profile or raw.profile})
    key = device_key_of(raw.params) or ""
    return try_postback(raw, AttributionProfile(), key, config.profile_configs, raw.received_at)


@pytest.mark.parametrize(
    "text",
    [
        "event_name=Purchase&idfa=X&event_value=9.99",
        "?event_name=Purchase&idfa=X&event_value=9.99",
        "/kochava/postback?event_name=Purchase&idfa=X&event_value=9.99",
        "https://kseg.example.com/kochava/postback?event_name=Purchase&idfa=X&event_value=9.99#frag",
        "GET /kochava/postback?event_name=Purchase&idfa=X\n    &event_value=9.99",
        '  {"event_name": "Purchase", "idfa": "X", "event_value": "9.99"}  ',
    ],
)
def test_parse_try_input_forms(text: str) -> None:
    assert parse_try_input(text) == {"event_name": "Purchase", "idfa": "X", "event_value": "9.99"}


def test_parse_try_input_decodes_and_keeps_blanks() -> None:
    assert parse_try_input("event_name=Level%20Complete&campaign=A+B&empty=") == {
        "event_name": "Level Complete",
        "campaign": "A B",
        "empty": "",
    }


def test_parse_try_input_keeps_json_types() -> None:
    assert parse_try_input('{"event_name": "X", "n": 1, "items": [1]}') == {
        "event_name": "X",
        "n": 1,
        "items": [1],
    }


@pytest.mark.parametrize("text", ["", "   ", "[1, 2]", "{not json", "justaword", "/path/only"])
def test_parse_try_input_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_try_input(text)


def _raw(**params: str) -> RawPostback:
    return RawPostback(event_id="e1", received_at="2025-03-01T00:00:00.000Z", params=params)


def test_preview_maps_with_anonymous_identity() -> None:
    out = preview(
        _raw(event_name="_install", kochava_device_id="KI1", idfa="6D92078A-8246-4BA4-AE5B-76104861E7DC"),
        "ns",
    )
    assert set(out) == {"lifecycle", "segment", "warehouse"}
    assert out["lifecycle"]["acquisition_channel"] == "organic"  # no attributed network
    anon = anonymous_id_for("ns", "KI1")
    assert {c["anonymousId"] for c in out["segment"]} == {anon}
    assert out["warehouse"]["anonymous_id"] == anon and out["warehouse"]["event_type"] == "install"
    assert any(c["type"] == "identify" and "kochava_install_time" in c["traits"] for c in out["segment"])


def test_preview_dead_letters() -> None:
    assert preview(_raw(event_name="X"), "ns")["dead_letter"]["reason"] == "no_identifier"
    unknown = preview(_raw(event_name="X", idfa="A"), "ns", "nope")["dead_letter"]
    assert (unknown["reason"], unknown["profile"]) == ("unknown_profile", "nope")


def test_cmd_try_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cmd_try(
        "event_name=Purchase&kochava_device_id=KI1&event_value=9.99&currency=USD", None, Settings()
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [c.get("event") for c in out["segment"]] == [None, "Order Completed", "Lifecycle Stage Changed"]
    assert out["segment"][0]["traits"]["ad_suppressed"] is True
    assert out["warehouse"]["revenue"] == 9.99


def test_cmd_try_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cmd_try("event_name=Purchase", None, Settings()) == 1
    assert json.loads(capsys.readouterr().out)["dead_letter"]["reason"] == "no_identifier"
    assert cmd_try("", None, Settings()) == 2
    assert "error" in capsys.readouterr().err
    assert cmd_try("event_name=X&idfa=A", "missing-profile", Settings()) == 1
    capsys.readouterr()
    assert cmd_try("event_name=X&idfa=A", None, Settings(kseg_mapping_dir=tmp_path / "absent")) == 2
