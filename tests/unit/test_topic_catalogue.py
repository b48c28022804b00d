"""topics/topics.yaml is read strictly: a key kseg does not know fails with a message naming it."""

from __future__ import annotations

import importlib

import pytest
from pydantic import BaseModel

from app.topics import CatalogueError, catalogue, catalogue_text, parse_catalogue

TOPIC = """
topics:
  postbacks.raw:
    description: raw
    key: device
    retention_hours: 168
    value: topics/schemas/postback-raw.schema.json
    keyed: true
changelogs:
  profiles:
    description: profiles
    key: device
    partitioned_by: key
"""


def test_a_misspelt_key_fails_and_names_its_place() -> None:
    misspelt = TOPIC.replace("retention_hours: 168", "retention_hours: 168\n    co_partition: device")
    with pytest.raises(CatalogueError) as failed:
        catalogue(misspelt)
    assert str(failed.value) == "topics.yaml: topics.postbacks.raw.co_partition: unknown key"


def test_every_wrong_key_is_named_at_once() -> None:
    text = (
        TOPIC.replace("keyed: true", "keyd: true")
        .replace("partitioned_by: key", "partitioned_by: value")
        .replace("topics:\n", "defaults:\n  config: {}\ntopics:\n", 1)
    )
    with pytest.raises(CatalogueError) as failed:
        parse_catalogue(text)
    message = str(failed.value)
    assert "defaults.config: unknown key" in message
    assert "topics.postbacks.raw.keyd: unknown key" in message
    assert "changelogs.profiles.partitioned_by: Input should be 'key' or 'source'" in message


def test_a_changelog_cannot_carry_a_topics_fields_and_a_topic_needs_its_schema() -> None:
    with pytest.raises(CatalogueError, match=r"changelogs\.profiles\.value: unknown key"):
        parse_catalogue(TOPIC.replace("partitioned_by: key", "partitioned_by: key\n    value: x.json"))
    with pytest.raises(CatalogueError, match=r"topics\.postbacks\.raw\.value: Field required"):
        parse_catalogue(TOPIC.replace("    value: topics/schemas/postback-raw.schema.json\n", ""))


def test_the_shipped_catalogue_parses_and_its_records_exist() -> None:
    parsed = parse_catalogue(catalogue_text())
    assert [s.name for s in catalogue()] == [*parsed.topics, *parsed.changelogs]
    for name, topic in parsed.topics.items():
        if topic.record is None:
            continue
        module, _, cls = topic.record.rpartition(".")
        record = getattr(importlib.import_module(module), cls, None)
        assert isinstance(record, type) and issubclass(record, BaseModel), f"{name}: {topic.record}"
