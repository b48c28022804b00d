"""Profiles: loading, the registry, and `check_profile_file` problems with their line numbers."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from app.mapping import (
    ProfileError,
    ProfileRegistry,
    UnknownProfile,
    check_profile_file,
    load_profile_file,
)
from app.mapping.cli import cmd_check
from app.mapping.profile import BUILTIN_PROFILE_DIR

GOOD = dedent("""\
    name: acme
    version: 2
    purchase_events: [Purchase, IAP]
    event_names:
      IAP: Order Completed
    fields:
      event_name: [evt]
      kochava_device_id: kdid
      revenue: [amount]
    """)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text), encoding="utf-8")
    return path


def test_builtin_profile_is_clean() -> None:
    assert check_profile_file(BUILTIN_PROFILE_DIR / "kochava-default.yaml") == []


def test_default_profile_covers_the_brief_aliases() -> None:
    f = ProfileRegistry.load(None).get("kochava-default").fields
    assert f.adid == ["adid", "gaid"]
    assert f.revenue == ["event_value", "revenue", "sum", "price"]
    assert f.ad_group == ["segment", "ad_group"]
    assert f.ip[:3] == ["ip", "device_ip", "origination_ip"]
    assert f.timestamp == ["timestamp", "event_time", "event_datetime"]


def test_registry_loads_builtin_and_extra(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "acme.yaml")
    registry = ProfileRegistry.load(tmp_path)
    assert registry.names() == ["acme", "kochava-default"]
    acme = registry.get("acme")
    assert acme.version == "2"  # YAML int read as a label
    assert acme.fields.kochava_device_id == ["kdid"]
    assert acme.is_purchase("iap") and acme.segment_name("iap") == "Order Completed"


def test_registry_unknown_profile_is_typed() -> None:
    registry = ProfileRegistry.load(None)
    with pytest.raises(UnknownProfile) as info:
        registry.get("nope")
    assert info.value.name == "nope" and "kochava-default" in str(info.value)


def test_registry_rejects_duplicate_names_in_one_directory(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(ProfileError, match="also defined"):
        ProfileRegistry.load(tmp_path)


def test_registry_fails_loudly_on_a_bad_extra_profile(tmp_path: Path) -> None:
    write(tmp_path, "name: x\n", "x.yaml")
    with pytest.raises(ProfileError) as info:
        ProfileRegistry.load(tmp_path)
    assert info.value.problems[0].line == 1


def test_extra_dir_may_override_a_builtin_by_name(tmp_path: Path) -> None:
    write(tmp_path, "name: kochava-default\nversion: pinned-7\nfields:\n  idfa: [idfa]\n", "k.yaml")
    assert ProfileRegistry.load(tmp_path).get("kochava-default").version == "pinned-7"


def test_missing_extra_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError):
        ProfileRegistry.load(tmp_path / "missing")


def lines(path: Path) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in check_profile_file(path)]


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nversion: '1'\nfields:\n  idfa: [idfa\n  adid: x\n")
    found = lines(path)
    assert len(found) == 1
    assert found[0][0] in (4, 5) and "YAML syntax error" in found[0][1]


def test_unknown_field_and_wrong_type_have_their_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: a
        version: "1"
        fields:
          idfa: [idfa]
          idfaa: [x]
        purchase_events: 7
        """,
    )
    found = lines(path)
    assert (5, "fields.idfaa: Extra inputs are not permitted") in found
    assert any(line == 6 and msg.startswith("purchase_events") for line, msg in found)


def test_missing_required_key_points_at_top(tmp_path: Path) -> None:
    path = write(tmp_path, "version: '1'\n")
    assert lines(path) == [(1, "name: Field required")]


def test_alias_used_for_two_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: a
        version: "1"
        fields:
          idfa: [idfa]
          adid:
            - adid
            - IDFA
        """,
    )
    assert lines(path) == [(7, "fields.adid.1: key 'IDFA' is already used for field 'idfa'")]


def test_event_both_purchase_and_conversion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: a
        version: "1"
        purchase_events: [Purchase]
        conversion_events:
          - Subscribe
          - purchase
        """,
    )
    assert lines(path) == [(6, "conversion_events.1: 'purchase' is both a purchase and a conversion event")]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nversion: '1'\nfields:\n  idfa: [idfa]\n  idfa: [x]\n")
    assert (5, "duplicate key 'idfa'") in lines(path)


def test_bad_name_and_key_shape(tmp_path: Path) -> None:
    path = write(tmp_path, "name: Bad Name\nversion: '1'\nfields:\n  idfa: ['{idfa}']\n")
    found = lines(path)
    assert [line for line, _ in found] == [1, 4]


def test_not_a_mapping(tmp_path: Path) -> None:
    assert lines(write(tmp_path, "- a\n- b\n")) == [(1, "a profile must be a YAML mapping")]


def test_unreadable_file(tmp_path: Path) -> None:
    assert "cannot read" in check_profile_file(tmp_path / "nope.yaml")[0].message


def test_load_profile_file_raises_with_problems(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile_file(write(tmp_path, "name: a\n"))
    assert "version" in str(info.value)


def test_cmd_check_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, GOOD, "good.yaml")
    assert cmd_check(good) == 0
    assert capsys.readouterr().out.strip() == "OK profile acme v2"
    bad = write(tmp_path, "name: a\nversion: '1'\nfields:\n  nope: [x]\n", "bad.yaml")
    assert cmd_check(bad) == 1
    assert capsys.readouterr().out.strip() == f"{bad}:4: fields.nope: Extra inputs are not permitted"


def test_docs_full_example_is_a_valid_profile(tmp_path: Path) -> None:
    """docs/mapping.md's full example must stay loadable as the format evolves."""
    import re

    docs = Path(__file__).resolve().parents[2] / "docs" / "mapping.md"
    match = re.search(r"```yaml\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
    assert match is not None
    path = write(tmp_path, match.group(1), "acme.yaml")
    assert check_profile_file(path) == []
    profile = load_profile_file(path)
    assert profile.is_purchase("IAP") and profile.product_keys.quantity == ["qty"]
